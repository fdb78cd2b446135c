package apiserver_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/apiserver"
	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/pki"
	"github.com/moorage/moorage/internal/testserver"
)

func TestCertificateUser(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pki.NewCA()
	now := time.Now()
	issue := func(signer pki.CA, cn string, orgs []string, usage x509.ExtKeyUsage, notAfter time.Time) *x509.Certificate {
		key, _ := pki.NewKey()
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: ca.Cert.SerialNumber, Subject: pkix.Name{CommonName: cn, Organization: orgs},
			NotBefore: now.Add(-time.Hour), NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}, signer.Cert, &key.PublicKey, signer.Key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert
	}
	tests := []struct {
		name       string
		cert       *x509.Certificate
		wantName   string
		wantGroups []string
	}{
		{"a node", issue(ca, "system:node:n1", []string{"system:nodes"}, x509.ExtKeyUsageClientAuth, now.Add(time.Hour)),
			"system:node:n1", []string{"system:nodes", "system:authenticated"}},
		{"the servers' client of agents", issue(ca, "kube-apiserver-kubelet-client", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, now.Add(time.Hour)),
			"kube-apiserver-kubelet-client", []string{"system:masters", "system:authenticated"}},
		{"no organization", issue(ca, "alice", nil, x509.ExtKeyUsageClientAuth, now.Add(time.Hour)), "alice", []string{"system:authenticated"}},
		{"another CA's", issue(other, "alice", nil, x509.ExtKeyUsageClientAuth, now.Add(time.Hour)), "", nil},
		{"not for client auth", issue(ca, "alice", nil, x509.ExtKeyUsageServerAuth, now.Add(time.Hour)), "", nil},
		{"expired", issue(ca, "alice", nil, x509.ExtKeyUsageClientAuth, now.Add(-time.Minute)), "", nil},
		{"no common name", issue(ca, "", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, now.Add(time.Hour)), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, ok := apiserver.CertificateUser([]*x509.Certificate{tt.cert}, ca.Pool(), now)
			if ok != (tt.wantName != "") || u.Name != tt.wantName || !slices.Equal(u.Groups, tt.wantGroups) {
				t.Fatalf("got %+v %v, want %q %v", u, ok, tt.wantName, tt.wantGroups)
			}
			if ok && !strings.HasPrefix(u.Extra["authentication.kubernetes.io/credential-id"][0], "X509SHA256=") {
				t.Fatalf("credential id: %v", u.Extra)
			}
		})
	}
}

// A service account token's user is upstream's: the account's name, UID
// and groups, the bound pod and the token's ID as extra values.
func TestServiceAccountUser(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	var sa *corev1.ServiceAccount
	eventually(t, "the default service account", func() bool {
		got, err := c.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		sa = got
		return err == nil
	})
	tr, err := c.CoreV1().ServiceAccounts("default").CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(srv.Loopback)
	cfg.BearerToken = tr.Status.Token
	csr, _ := csrFor(t, "by-sa", "alice", nil, "example.com/mine", certificatesv1.UsageClientAuth)
	got, err := kubernetes.NewForConfigOrDie(cfg).CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Username != "system:serviceaccount:default:default" || got.Spec.UID != string(sa.UID) ||
		!slices.Equal(got.Spec.Groups, []string{"system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"}) ||
		!strings.HasPrefix(got.Spec.Extra["authentication.kubernetes.io/credential-id"][0], "JTI=") {
		t.Fatalf("requester: %q %q %v %v", got.Spec.Username, got.Spec.UID, got.Spec.Groups, got.Spec.Extra)
	}
}

// As upstream, a bootstrap token whose auth-extra-groups names a group
// outside system:bootstrappers: does not authenticate.
func TestBootstrapTokenWithABadGroup(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	tok, _ := bootstraptoken.Generate()
	secret := bootstraptoken.NewSecret(tok, time.Hour, time.Now(), "")
	secret.StringData[bootstraptoken.KeyAuthExtraGroups] = "system:masters"
	if _, err := testserver.Client(t, srv).CoreV1().Secrets("kube-system").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(srv.Loopback)
	cfg.BearerToken = tok.String()
	_, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Fatalf("got %v, want Unauthorized", err)
	}
}
