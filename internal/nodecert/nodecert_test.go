package nodecert_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/nodecert"
	"github.com/moorage/moorage/internal/pki"
	"github.com/moorage/moorage/internal/testserver"
)

// A bootstrap token gets node n1 its certificate: approved, signed for a
// year, for the key requested.
func TestRequestWithBootstrapToken(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	tok, _ := bootstraptoken.Generate()
	if _, err := c.CoreV1().Secrets("kube-system").Create(t.Context(), bootstraptoken.NewSecret(tok, time.Hour, time.Now(), ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(srv.Loopback)
	cfg.BearerToken = tok.String()
	pair, err := nodecert.Request(t.Context(), kubernetes.NewForConfigOrDie(cfg), "n1", nodecert.RequestOptions{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "system:node:n1" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:nodes" ||
		cert.NotAfter.Sub(cert.NotBefore) != 365*24*time.Hour || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("certificate: %v %v, %v to %v, %v", cert.Subject.CommonName, cert.Subject.Organization, cert.NotBefore, cert.NotAfter, cert.ExtKeyUsage)
	}
	list, _ := c.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{})
	if len(list.Items) != 1 || !strings.HasPrefix(list.Items[0].Name, "node-csr-") {
		t.Fatalf("requests: %+v", list.Items)
	}
}

// A request nobody approves times out, and a denied one fails, each saying
// which request and what to do.
func TestRequestNotApproved(t *testing.T) {
	srv := testserver.Start(t)
	admin := testserver.Client(t, srv) // not a bootstrap token: no automatic approval
	_, err := nodecert.Request(t.Context(), admin, "n1", nodecert.RequestOptions{Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "was not approved and issued within 1s: approve it on a server (kubectl certificate approve node-csr-") {
		t.Fatalf("timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { // deny whatever comes next
		for ctx.Err() == nil {
			list, _ := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
			for _, csr := range list.Items {
				if len(csr.Status.Conditions) == 0 && strings.HasPrefix(csr.Name, "deny-") {
					csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "NotYou", Message: "go away"}}
					_, _ = admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, &csr, metav1.UpdateOptions{})
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	_, err = nodecert.Request(t.Context(), admin, "n1", nodecert.RequestOptions{Timeout: 30 * time.Second, GenerateName: "deny-"})
	if err == nil || !strings.Contains(err.Error(), "is denied, reason: NotYou, message: go away") {
		t.Fatalf("denied: %v", err)
	}
}

// A node whose certificate is at 80% of its life renews it with that
// certificate: its own request, approved as a renewal.
func TestRenew(t *testing.T) {
	dir := t.TempDir()
	srv := testserver.StartIn(t, dir)
	ca, ok, err := pki.LoadCA(pki.Files{Dir: filepath.Join(dir, "tls")})
	if err != nil || !ok {
		t.Fatalf("CA: %v %v", ok, err)
	}
	key, _ := pki.NewKey()
	req, _ := pki.NewCSR(key, "system:node:n1", "system:nodes")
	parsed, err := x509.ParseCertificateRequest(pemBytes(t, req))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	certPEM, err := ca.SignRequest(parsed, pki.Issued{KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: now.Add(-9 * time.Minute), NotAfter: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	old := nodecert.Pair{CertPEM: certPEM, KeyPEM: pki.EncodeKey(key)}
	cfg := rest.AnonymousClientConfig(srv.Loopback)
	cfg.CertData, cfg.KeyData = old.CertPEM, old.KeyPEM
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	renewed := make(chan nodecert.Pair, 1)
	go nodecert.Renew(ctx, kubernetes.NewForConfigOrDie(cfg), "n1", old, func(p nodecert.Pair) error {
		renewed <- p
		cancel()
		return nil
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	select {
	case p := <-renewed:
		cert, err := p.Certificate()
		if err != nil || cert.Subject.CommonName != "system:node:n1" || !cert.NotAfter.After(now.Add(24*time.Hour)) {
			t.Fatalf("renewed: %v %+v", err, cert)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("not renewed")
	}
	list, _ := testserver.Client(t, srv).CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{})
	if len(list.Items) != 1 || list.Items[0].Spec.Username != "system:node:n1" || !strings.HasPrefix(list.Items[0].Name, "csr-") ||
		list.Items[0].Status.Conditions[0].Message != "Auto approving self kubelet client certificate after SubjectAccessReview." {
		t.Fatalf("renewal request: %+v", list.Items)
	}
}

func TestRenewAfter(t *testing.T) {
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := nodecert.RenewAfter(from, from.Add(100*time.Hour)); !got.Equal(from.Add(80 * time.Hour)) {
		t.Fatalf("RenewAfter: %v", got)
	}
}

func pemBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("not PEM")
	}
	return block.Bytes
}
