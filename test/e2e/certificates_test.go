package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"regexp"
	"strings"
	"testing"
)

// TestKubectlCertificateApproveAndDeny: a user's CertificateSigningRequest
// for the kube-apiserver-client signer waits until `kubectl certificate
// approve`, is then signed, and the certificate authenticates as its
// common name (the requestor of the user's own next request); `kubectl
// certificate deny` denies another.
func TestKubectlCertificateApproveAndDeny(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrYAML := func(name, cn string) string {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"devs"}}}, key)
		if err != nil {
			t.Fatal(err)
		}
		req := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
		return `apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: ` + name + `}
spec:
  request: ` + req + `
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: 86400
  usages: [client auth]
`
	}
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "alice.yaml", csrYAML("alice", "alice"))),
		"certificatesigningrequest.certificates.k8s.io/alice created")
	expectRow := func(name, requestor, condition string) {
		t.Helper()
		if r := m.kubectl(t, v, "get", "csr", name); !regexp.MustCompile(`(?m)^` + name + `\s+\S+\s+kubernetes\.io/kube-apiserver-client\s+` +
			regexp.QuoteMeta(requestor) + `\s+24h\s+` + condition + `\s*$`).MatchString(r.Stdout) {
			t.Fatalf("want %s by %s %s:\n%s", name, requestor, condition, r)
		}
	}
	expectRow("alice", "kubernetes-admin", "Pending")
	expectOK(t, m.kubectl(t, v, "certificate", "approve", "alice"), "certificatesigningrequest.certificates.k8s.io/alice approved")
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "get", "csr", "alice").Stdout, "Approved,Issued")
	}) {
		t.Fatalf("never issued:\n%s", m.kubectl(t, v, "get", "csr", "alice", "-o", "yaml"))
	}
	expectRow("alice", "kubernetes-admin", `Approved,Issued`)
	if r := m.kubectl(t, v, "get", "csr", "alice", "-o", "jsonpath={.status.conditions[0].reason}"); r.Stdout != "KubectlApprove" {
		t.Errorf("approval reason: %s", r)
	}

	// The certificate authenticates as alice.
	cert := m.mustKubectl(t, v, "get", "csr", "alice", "-o", "jsonpath={.status.certificate}")
	certPEM, err := base64.StdEncoding.DecodeString(cert)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile := m.writeFile(t, "alice.crt", string(certPEM))
	keyFile := m.writeFile(t, "alice.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	expectOK(t, m.kubectl(t, v, "--client-certificate", certFile, "--client-key", keyFile, "create", "-f", m.writeFile(t, "bob.yaml", csrYAML("bob", "bob"))),
		"certificatesigningrequest.certificates.k8s.io/bob created")
	expectRow("bob", "alice", "Pending")
	expectOK(t, m.kubectl(t, v, "certificate", "deny", "bob"), "certificatesigningrequest.certificates.k8s.io/bob denied")
	expectRow("bob", "alice", "Denied")
}
