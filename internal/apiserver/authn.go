package apiserver

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/serviceaccount"
)

// Authentication, as upstream's token authenticators: a bearer token is
// the admin token (Config.Authenticate), a bootstrap token whose Secret in
// kube-system is usable for authentication, or a service account token
// this server issued (signature, issuer, audience, times) whose account,
// and bound pod, secret or node, still exist with the UIDs of its claims.
// Anonymous requests may read kube-public/cluster-info and nothing else.
//
// There is no authorization: whoever authenticates is served like the
// admin.

// authenticated tells whether r carries a credential the server accepts.
func (s *Server) authenticated(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return false
	}
	if s.cfg.Authenticate(token) {
		return true
	}
	ctx := r.Context()
	if t, err := bootstraptoken.Parse(token); err == nil {
		return s.bootstrapTokenValid(ctx, t)
	}
	if s.cfg.ServiceAccountTokens != nil && serviceaccount.LooksLikeJWT(token) {
		return s.serviceAccountTokenValid(ctx, token)
	}
	return false
}

// anonymousAllowed: upstream's RBAC lets anyone read the cluster-info
// ConfigMap (kubeadm's bootstrap discovery). A request with credentials
// that fail is refused, as upstream.
func anonymousAllowed(r *http.Request, path string) bool {
	return r.Header.Get("Authorization") == "" && r.Method == http.MethodGet &&
		path == "/api/v1/namespaces/"+metav1.NamespacePublic+"/configmaps/"+bootstraptoken.ConfigMapClusterInfo &&
		r.URL.Query().Get("watch") == ""
}

// bootstrapTokenValid is upstream's bootstrap token authenticator.
func (s *Server) bootstrapTokenValid(ctx context.Context, t bootstraptoken.Token) bool {
	obj, _, err := s.objects.get(ctx, s.resourceByPlural("secrets"), metav1.NamespaceSystem, bootstraptoken.SecretName(t.ID))
	if err != nil {
		return false
	}
	stored, ok := bootstraptoken.Usable(obj.(*corev1.Secret), bootstraptoken.KeyUsageAuthn, time.Now())
	return ok && subtle.ConstantTimeCompare([]byte(stored.Secret), []byte(t.Secret)) == 1
}

// serviceAccountTokenValid checks a JWT and, as upstream's validator, that
// what it names still exists: the account, and the bound pod, secret or
// node, each with the claimed UID and not deleted more than the leeway ago.
func (s *Server) serviceAccountTokenValid(ctx context.Context, token string) bool {
	now := time.Now()
	c, err := s.cfg.ServiceAccountTokens.Verify(token, now)
	if err != nil {
		return false
	}
	k := c.Kubernetes
	if c.Subject != serviceaccount.UserName(k.Namespace, k.ServiceAccount.Name) {
		return false
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
		return false
	}
	switch {
	case k.Pod != nil:
		return alive("pods", k.Namespace, k.Pod)
	case k.Secret != nil:
		return alive("secrets", k.Namespace, k.Secret)
	case k.Node != nil:
		return alive("nodes", "", k.Node)
	}
	return true
}
