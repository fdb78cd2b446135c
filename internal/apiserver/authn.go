package apiserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/serviceaccount"
	"github.com/moorage/moorage/internal/user"
)

// Authentication, as upstream's authenticators, returns who made a request:
//
//   - a client certificate the cluster CA (Config.ClientCAs) issued for
//     client auth: the user is its common name, its groups its
//     organizations (a node's certificate: system:node:NAME in
//     system:nodes);
//   - the admin token (Config.Authenticate): AdminUser;
//   - a bootstrap token whose Secret in kube-system is usable for
//     authentication: system:bootstrap:TOKEN-ID in system:bootstrappers
//     and the Secret's auth-extra-groups;
//   - a service account token this server issued (signature, issuer,
//     audience, times) whose account, and bound pod, secret or node, still
//     exist with the UIDs of its claims: system:serviceaccount:NS:NAME.
//
// Every authenticated user is also in system:authenticated. Anonymous
// requests may read kube-public/cluster-info and nothing else.
//
// There is no authorization: whoever authenticates is served like the
// admin. The user is in the request's context (user.From) for what records
// its requester (CertificateSigningRequests).

// AdminUser is who the admin token authenticates as: kubeadm's admin.conf
// user.
var AdminUser = user.Info{Name: "kubernetes-admin", Groups: []string{"kubeadm:cluster-admins", user.AllAuthenticated}}

// anonymousUser is who makes a request without credentials.
var anonymousUser = user.Info{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}

// authenticate returns who r is; ok is false if r carries no credential
// the server accepts.
func (s *Server) authenticate(r *http.Request) (user.Info, bool) {
	if u, ok := s.certificateUser(r); ok {
		return u, true
	}
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return user.Info{}, false
	}
	if s.cfg.Authenticate(token) {
		return AdminUser, true
	}
	ctx := r.Context()
	if t, err := bootstraptoken.Parse(token); err == nil {
		return s.bootstrapTokenUser(ctx, t)
	}
	if s.cfg.ServiceAccountTokens != nil && serviceaccount.LooksLikeJWT(token) {
		return s.serviceAccountTokenUser(ctx, token)
	}
	return user.Info{}, false
}

// certificateUser is upstream's x509 authenticator: the first client
// certificate, verified for client auth against Config.ClientCAs.
func (s *Server) certificateUser(r *http.Request) (user.Info, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || s.cfg.ClientCAs == nil {
		return user.Info{}, false
	}
	return CertificateUser(r.TLS.PeerCertificates, s.cfg.ClientCAs, time.Now())
}

// CertificateUser returns the user of a client certificate chain (leaf
// first) that roots verifies for client auth at now: the leaf's common
// name, its organizations as groups, and system:authenticated.
func CertificateUser(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) (user.Info, bool) {
	leaf := chain[0]
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil || leaf.Subject.CommonName == "" {
		return user.Info{}, false
	}
	sum := sha256.Sum256(leaf.Raw)
	return user.Info{
		Name:   leaf.Subject.CommonName,
		Groups: authenticated(leaf.Subject.Organization),
		Extra:  map[string][]string{user.CredentialIDKey: {"X509SHA256=" + hex.EncodeToString(sum[:])}},
	}, true
}

// authenticated adds system:authenticated to groups, as upstream's
// authenticator chain does to every user.
func authenticated(groups []string) []string {
	out := slices.Clone(groups)
	if !slices.Contains(out, user.AllAuthenticated) {
		out = append(out, user.AllAuthenticated)
	}
	return out
}

// anonymousAllowed: upstream's RBAC lets anyone read the cluster-info
// ConfigMap (kubeadm's bootstrap discovery). A request with credentials
// that fail is refused, as upstream.
func anonymousAllowed(r *http.Request, path string) bool {
	return r.Header.Get("Authorization") == "" && r.Method == http.MethodGet &&
		path == "/api/v1/namespaces/"+metav1.NamespacePublic+"/configmaps/"+bootstraptoken.ConfigMapClusterInfo &&
		r.URL.Query().Get("watch") == ""
}

// bootstrapGroupRE is what upstream allows in auth-extra-groups.
var bootstrapGroupRE = regexp.MustCompile(`\A` + user.BootstrapGroup + `:[a-z0-9:-]{0,255}[a-z0-9]\z`)

// bootstrapTokenUser is upstream's bootstrap token authenticator.
func (s *Server) bootstrapTokenUser(ctx context.Context, t bootstraptoken.Token) (user.Info, bool) {
	obj, _, err := s.objects.get(ctx, s.resourceByPlural("secrets"), metav1.NamespaceSystem, bootstraptoken.SecretName(t.ID))
	if err != nil {
		return user.Info{}, false
	}
	secret := obj.(*corev1.Secret)
	stored, ok := bootstraptoken.Usable(secret, bootstraptoken.KeyUsageAuthn, time.Now())
	if !ok || subtle.ConstantTimeCompare([]byte(stored.Secret), []byte(t.Secret)) != 1 {
		return user.Info{}, false
	}
	groups := []string{user.BootstrapGroup}
	if extra := string(secret.Data[bootstraptoken.KeyAuthExtraGroups]); extra != "" {
		groups = append(groups, strings.Split(extra, ",")...)
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	for _, g := range groups {
		if g != user.BootstrapGroup && !bootstrapGroupRE.MatchString(g) {
			return user.Info{}, false // upstream refuses a token with a bad group
		}
	}
	return user.Info{Name: user.BootstrapUserPrefix + t.ID, Groups: authenticated(groups)}, true
}

// Upstream's extra keys of a service account token's user.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraNodeUID  = "authentication.kubernetes.io/node-uid"
)

// serviceAccountTokenUser checks a JWT and, as upstream's validator, that
// what it names still exists: the account, and the bound pod, secret or
// node, each with the claimed UID and not deleted more than the leeway ago.
func (s *Server) serviceAccountTokenUser(ctx context.Context, token string) (user.Info, bool) {
	now := time.Now()
	c, err := s.cfg.ServiceAccountTokens.Verify(token, now)
	if err != nil {
		return user.Info{}, false
	}
	k := c.Kubernetes
	if c.Subject != serviceaccount.UserName(k.Namespace, k.ServiceAccount.Name) {
		return user.Info{}, false
	}
	deletedBefore := now.Add(-serviceaccount.Leeway)
	alive := func(plural, ns string, ref *serviceaccount.Ref) bool {
		obj, _, err := s.objects.get(ctx, s.resourceByPlural(plural), ns, ref.Name)
		if err != nil {
			return false
		}
		om := m(obj)
		if dt := om.GetDeletionTimestamp(); dt != nil && dt.Time.Before(deletedBefore) {
			return false
		}
		return string(om.GetUID()) == ref.UID
	}
	if !alive("serviceaccounts", k.Namespace, &k.ServiceAccount) {
		return user.Info{}, false
	}
	switch {
	case k.Pod != nil:
		if !alive("pods", k.Namespace, k.Pod) {
			return user.Info{}, false
		}
	case k.Secret != nil:
		if !alive("secrets", k.Namespace, k.Secret) {
			return user.Info{}, false
		}
	case k.Node != nil:
		if !alive("nodes", "", k.Node) {
			return user.Info{}, false
		}
	}
	u := user.Info{
		Name:   c.Subject,
		UID:    k.ServiceAccount.UID,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + k.Namespace, user.AllAuthenticated},
	}
	extra := map[string][]string{}
	if k.Pod != nil && k.Pod.Name != "" && k.Pod.UID != "" {
		extra[extraPodName], extra[extraPodUID] = []string{k.Pod.Name}, []string{k.Pod.UID}
	}
	if k.Node != nil && k.Node.Name != "" {
		extra[extraNodeName] = []string{k.Node.Name}
		if k.Node.UID != "" {
			extra[extraNodeUID] = []string{k.Node.UID}
		}
	}
	if c.ID != "" {
		extra[user.CredentialIDKey] = []string{"JTI=" + c.ID}
	}
	if len(extra) > 0 {
		u.Extra = extra
	}
	return u, true
}
