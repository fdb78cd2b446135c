package apiserver_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/pki"
	"github.com/moorage/moorage/internal/testserver"
)

// csrFor is a CertificateSigningRequest for a fresh key's request of cn in
// orgs, for signer.
func csrFor(t *testing.T, name, cn string, orgs []string, signer string, usages ...certificatesv1.KeyUsage) (*certificatesv1.CertificateSigningRequest, *pki.CA) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	req, err := pki.NewCSR(key, cn, orgs...)
	if err != nil {
		t.Fatal(err)
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       certificatesv1.CertificateSigningRequestSpec{Request: req, SignerName: signer, Usages: usages},
	}, &pki.CA{Key: key}
}

// The API server records who asks, keeps the spec, lets /approval change
// only the conditions and /status only the rest of the status, and
// prints upstream's columns.
func TestCertificateSigningRequestLifecycle(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	csrs := c.CertificatesV1().CertificateSigningRequests()

	csr, _ := csrFor(t, "mine", "alice", []string{"devs"}, "example.com/mine", certificatesv1.UsageClientAuth)
	csr.Spec.Username, csr.Spec.Groups = "someone-else", []string{"system:masters"}
	csr.Status.Certificate = []byte("forged")
	got, err := csrs.Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Username != "kubernetes-admin" || !slices.Equal(got.Spec.Groups, []string{"kubeadm:cluster-admins", "system:authenticated"}) || len(got.Status.Certificate) > 0 {
		t.Fatalf("created: requester %q %v, certificate %q", got.Spec.Username, got.Spec.Groups, got.Status.Certificate)
	}

	// The spec never changes; a main-resource update may not approve.
	got.Spec.SignerName = "example.com/other"
	got.Labels = map[string]string{"a": "b"}
	updated, err := csrs.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil || updated.Spec.SignerName != "example.com/mine" || updated.Labels["a"] != "b" {
		t.Fatalf("update: %v, signer %q", err, updated.Spec.SignerName)
	}
	approved := updated.DeepCopy()
	approved.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "KubectlApprove"}}
	if _, err := csrs.Update(ctx, approved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err) // the status is the stored one: nothing changed
	}
	if _, err := csrs.UpdateStatus(ctx, approved, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), `status.conditions: Forbidden: updates may not add a condition of type "Approved"`) {
		t.Fatalf("approval through /status: %v", err)
	}

	// /approval: the conditions, stamped; the certificate stays.
	approved.Status.Certificate = []byte("not through approval")
	after, err := csrs.UpdateApproval(ctx, "mine", approved, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := after.Status.Conditions
	if len(cond) != 1 || cond[0].Type != certificatesv1.CertificateApproved || cond[0].LastUpdateTime.IsZero() || cond[0].LastTransitionTime.IsZero() || len(after.Status.Certificate) > 0 {
		t.Fatalf("after approval: %+v", after.Status)
	}
	denied := after.DeepCopy()
	denied.Status.Conditions = append(denied.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue})
	if _, err := csrs.UpdateApproval(ctx, "mine", denied, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "Approved and Denied conditions are mutually exclusive") {
		t.Fatalf("approved and denied: %v", err)
	}

	// /status: the certificate, once, and only a certificate.
	issued := after.DeepCopy()
	issued.Status.Certificate = []byte("junk")
	if _, err := csrs.UpdateStatus(ctx, issued, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "status.certificate") {
		t.Fatalf("junk certificate: %v", err)
	}
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	issued.Status.Certificate = ca.CertPEM
	if issued, err = csrs.UpdateStatus(ctx, issued, metav1.UpdateOptions{}); err != nil || len(issued.Status.Certificate) == 0 || len(issued.Status.Conditions) != 1 {
		t.Fatalf("issuing: %v", err)
	}
	other, _ := pki.NewCA()
	issued.Status.Certificate = other.CertPEM
	if _, err := csrs.UpdateStatus(ctx, issued, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "updates may not modify existing certificate content") {
		t.Fatalf("re-issuing: %v", err)
	}

	// The field selector and the table.
	list, err := csrs.List(ctx, metav1.ListOptions{FieldSelector: "spec.signerName=example.com/mine"})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("spec.signerName selector: %v %d", err, len(list.Items))
	}
	code, body := rawAccept(t, srv, "/apis/certificates.k8s.io/v1/certificatesigningrequests", "application/json;as=Table;v=v1;g=meta.k8s.io")
	for _, want := range []string{`"name":"SignerName"`, `"name":"Requestor"`, `"name":"RequestedDuration"`, `"name":"Condition"`,
		`"cells":["mine","0s","example.com/mine","kubernetes-admin","\u003cnone\u003e","Approved,Issued"]`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("table (%d) lacks %s:\n%s", code, want, body)
		}
	}
}

func TestCertificateSigningRequestValidation(t *testing.T) {
	srv := testserver.Start(t)
	csrs := testserver.Client(t, srv).CertificatesV1().CertificateSigningRequests()
	ctx := context.Background()
	short := int32(599)
	tests := []struct {
		name   string
		change func(*certificatesv1.CertificateSigningRequest)
		want   string
	}{
		{"no signer", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.SignerName = "" }, "spec.signerName: Required value"},
		{"bad signer", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.SignerName = "mine" },
			"spec.signerName: Invalid value: \"mine\": must be a fully qualified domain and path of the form 'example.com/signer-name'"},
		{"legacy signer", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.SignerName = "kubernetes.io/legacy-unknown" },
			"the legacy signerName is not allowed via this API version"},
		{"no usages", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Usages = nil }, "spec.usages: Required value"},
		{"unknown usage", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Usages = []certificatesv1.KeyUsage{"flying"} },
			`spec.usages[0]: Unsupported value: "flying"`},
		{"duplicate usage", func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Usages = []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth, certificatesv1.UsageClientAuth}
		}, `spec.usages[1]: Duplicate value: "client auth"`},
		{"too short", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.ExpirationSeconds = &short },
			"spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"},
		{"not a request", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Request = []byte("hello") },
			"PEM block type must be CERTIFICATE REQUEST"},
		{"a certificate, not a request", func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})
		}, "spec.request: Invalid value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, _ := csrFor(t, "bad", "alice", nil, "example.com/mine", certificatesv1.UsageClientAuth)
			tt.change(csr)
			_, err := csrs.Create(ctx, csr, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want Invalid with %q", err, tt.want)
			}
		})
	}
}

// A bootstrap token's request of a node certificate is approved and
// signed; the certificate authenticates as the node, whose own renewal is
// approved too; another node's is not.
func TestNodeCertificateFromBootstrapToken(t *testing.T) {
	dir := t.TempDir()
	srv := testserver.StartIn(t, dir)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	tok, _ := bootstraptoken.Generate()
	secret := bootstraptoken.NewSecret(tok, time.Hour, time.Now(), "")
	secret.StringData[bootstraptoken.KeyAuthExtraGroups] = "system:bootstrappers:kubeadm:default-node-token"
	if _, err := c.CoreV1().Secrets("kube-system").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bootstrap := rest.AnonymousClientConfig(srv.Loopback)
	bootstrap.BearerToken = tok.String()
	asToken := kubernetes.NewForConfigOrDie(bootstrap)

	csr, key := csrFor(t, "node-csr-1", "system:node:n1", []string{"system:nodes"}, certificatesv1.KubeAPIServerClientKubeletSignerName,
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth)
	got, err := asToken.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Username != "system:bootstrap:"+tok.ID ||
		!slices.Equal(got.Spec.Groups, []string{"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token", "system:authenticated"}) {
		t.Fatalf("requester: %q %v", got.Spec.Username, got.Spec.Groups)
	}
	issued := waitIssued(t, c, "node-csr-1")
	if c := issued.Status.Conditions[0]; c.Reason != "AutoApproved" || c.Message != "Auto approving kubelet client certificate after SubjectAccessReview." {
		t.Fatalf("approval: %+v", c)
	}

	// The certificate authenticates as system:node:n1.
	asNode := rest.AnonymousClientConfig(srv.Loopback)
	asNode.CertData, asNode.KeyData = issued.Status.Certificate, pki.EncodeKey(key.Key)
	nodeClient := kubernetes.NewForConfigOrDie(asNode)
	renewal, _ := csrFor(t, "renewal", "system:node:n1", []string{"system:nodes"}, certificatesv1.KubeAPIServerClientKubeletSignerName,
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth)
	if got, err = nodeClient.CertificatesV1().CertificateSigningRequests().Create(ctx, renewal, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Username != "system:node:n1" || !slices.Equal(got.Spec.Groups, []string{"system:nodes", "system:authenticated"}) ||
		!strings.HasPrefix(got.Spec.Extra["authentication.kubernetes.io/credential-id"][0], "X509SHA256=") {
		t.Fatalf("node requester: %q %v %v", got.Spec.Username, got.Spec.Groups, got.Spec.Extra)
	}
	if c := waitIssued(t, c, "renewal").Status.Conditions[0]; c.Message != "Auto approving self kubelet client certificate after SubjectAccessReview." {
		t.Fatalf("renewal approval: %+v", c)
	}
	theirs, _ := csrFor(t, "theirs", "system:node:n2", []string{"system:nodes"}, certificatesv1.KubeAPIServerClientKubeletSignerName,
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth)
	if _, err = nodeClient.CertificatesV1().CertificateSigningRequests().Create(ctx, theirs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got, _ := c.CertificatesV1().CertificateSigningRequests().Get(ctx, "theirs", metav1.GetOptions{}); len(got.Status.Conditions) != 0 {
		t.Fatalf("another node's certificate was answered: %+v", got.Status)
	}

	// A certificate of another CA does not get past the handshake; one of
	// the cluster CA without client auth does not authenticate.
	stranger, _ := pki.NewCA()
	foreign := rest.AnonymousClientConfig(srv.Loopback)
	foreign.CertData, foreign.KeyData = clientCert(t, stranger, x509.ExtKeyUsageClientAuth)
	if _, err := kubernetes.NewForConfigOrDie(foreign).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	cluster, ok, err := pki.LoadCA(pki.Files{Dir: filepath.Join(dir, "tls")})
	if err != nil || !ok {
		t.Fatalf("the cluster CA: %v %v", ok, err)
	}
	serverOnly := rest.AnonymousClientConfig(srv.Loopback)
	serverOnly.CertData, serverOnly.KeyData = clientCert(t, cluster, x509.ExtKeyUsageServerAuth)
	if _, err := kubernetes.NewForConfigOrDie(serverOnly).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("a certificate without client auth was accepted")
	}
}

func waitIssued(t *testing.T, c kubernetes.Interface, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	var csr *certificatesv1.CertificateSigningRequest
	eventually(t, name+" issued", func() bool {
		var err error
		csr, err = c.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && len(csr.Status.Certificate) > 0
	})
	return csr
}

// clientCert is a certificate of ca for CN "mallory" with usage, and its
// key, as PEM.
func clientCert(t *testing.T, ca pki.CA, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := pki.NewKey()
	tmpl := &x509.Certificate{
		SerialNumber: ca.Cert.SerialNumber, Subject: pkix.Name{CommonName: "mallory"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pki.EncodeKey(key)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// rawAccept GETs path from srv as the admin, accepting accept.
func rawAccept(t *testing.T, srv *app.Server, path, accept string) (int, string) {
	t.Helper()
	hc, err := rest.HTTPClientFor(srv.Loopback)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	req.Header.Set("Accept", accept)
	req.Header.Set("Authorization", "Bearer "+srv.Loopback.BearerToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
