package certificates

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/pki"
)

// request builds a CSR for a fresh key with the given subject and
// subject alternative names.
func request(t *testing.T, cn string, orgs []string, ips ...string) []byte {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: orgs}}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE REQUEST", der)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// csrBuilder makes CSRs for the tables below.
type csrBuilder struct {
	csr certificatesv1.CertificateSigningRequest
}

func newCSR(req []byte) *csrBuilder {
	return &csrBuilder{certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
		Request: req, SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
		Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
	}}}
}

func (b *csrBuilder) by(name string, groups ...string) *csrBuilder {
	b.csr.Spec.Username, b.csr.Spec.Groups = name, append(groups, "system:authenticated")
	return b
}

func (b *csrBuilder) signer(s string) *csrBuilder { b.csr.Spec.SignerName = s; return b }

func (b *csrBuilder) usages(u ...certificatesv1.KeyUsage) *csrBuilder {
	b.csr.Spec.Usages = u
	return b
}

func (b *csrBuilder) condition(t certificatesv1.RequestConditionType) *csrBuilder {
	b.csr.Status.Conditions = append(b.csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: t, Status: corev1.ConditionTrue})
	return b
}

func (b *csrBuilder) expiring(seconds int32) *csrBuilder {
	b.csr.Spec.ExpirationSeconds = &seconds
	return b
}

func (b *csrBuilder) get() *certificatesv1.CertificateSigningRequest { return b.csr.DeepCopy() }

func TestAutoApproval(t *testing.T) {
	nodeReq := request(t, "system:node:n1", []string{"system:nodes"})
	tests := []struct {
		name string
		csr  *certificatesv1.CertificateSigningRequest
		want string // "" means not approved
	}{
		{"a bootstrap token's first node certificate", newCSR(nodeReq).by("system:bootstrap:abcdef", "system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token").get(), NodeClientApprovedMessage},
		{"key encipherment is allowed", newCSR(nodeReq).by("system:bootstrap:abcdef", "system:bootstrappers").
			usages(certificatesv1.UsageKeyEncipherment, certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth).get(), NodeClientApprovedMessage},
		{"the node renews its own", newCSR(nodeReq).by("system:node:n1", "system:nodes").get(), SelfApprovedMessage},
		{"another node's certificate", newCSR(nodeReq).by("system:node:n2", "system:nodes").get(), ""},
		{"the admin is not a bootstrap token", newCSR(nodeReq).by("kubernetes-admin", "kubeadm:cluster-admins").get(), ""},
		{"a service account", newCSR(nodeReq).by("system:serviceaccount:default:x", "system:serviceaccounts").get(), ""},
		{"another signer", newCSR(nodeReq).by("system:bootstrap:abcdef", "system:bootstrappers").signer(certificatesv1.KubeAPIServerClientSignerName).get(), ""},
		{"server auth", newCSR(nodeReq).by("system:bootstrap:abcdef", "system:bootstrappers").
			usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth).get(), ""},
		{"not a node's name", newCSR(request(t, "alice", []string{"system:nodes"})).by("system:bootstrap:abcdef", "system:bootstrappers").get(), ""},
		{"not only system:nodes", newCSR(request(t, "system:node:n1", []string{"system:nodes", "system:masters"})).by("system:bootstrap:abcdef", "system:bootstrappers").get(), ""},
		{"an IP address", newCSR(request(t, "system:node:n1", []string{"system:nodes"}, "10.0.0.1")).by("system:bootstrap:abcdef", "system:bootstrappers").get(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := parseRequest(tt.csr.Spec.Request)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := autoApproval(tt.csr, req)
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("autoApproval = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

func TestSignerDecides(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	s := &signer{ca: ca, max: DefaultSigningDuration, now: func() time.Time { return now }}
	nodeReq := request(t, "system:node:n1", []string{"system:nodes"})
	year := 365 * 24 * time.Hour
	tests := []struct {
		name     string
		csr      *certificatesv1.CertificateSigningRequest
		write    bool
		failed   string        // the Failed condition's message, if any
		lifetime time.Duration // of the certificate issued, if any (from now)
	}{
		{"pending", newCSR(nodeReq).get(), false, "", 0},
		{"denied", newCSR(nodeReq).condition(certificatesv1.CertificateDenied).get(), false, "", 0},
		{"failed before", newCSR(nodeReq).condition(certificatesv1.CertificateApproved).condition(certificatesv1.CertificateFailed).get(), false, "", 0},
		{"another signer's", newCSR(nodeReq).signer("example.com/mine").condition(certificatesv1.CertificateApproved).get(), false, "", 0},
		{"a node client certificate for a year", newCSR(nodeReq).condition(certificatesv1.CertificateApproved).get(), true, "", year - 5*time.Minute},
		{"a day, as asked", newCSR(nodeReq).expiring(86400).condition(certificatesv1.CertificateApproved).get(), true, "", 24*time.Hour - 5*time.Minute},
		{"an hour is short: not backdated", newCSR(nodeReq).expiring(3600).condition(certificatesv1.CertificateApproved).get(), true, "", time.Hour},
		{"never more than the maximum", newCSR(nodeReq).expiring(1 << 30).condition(certificatesv1.CertificateApproved).get(), true, "", year - 5*time.Minute},
		{"a bad node certificate fails", newCSR(request(t, "alice", []string{"system:nodes"})).condition(certificatesv1.CertificateApproved).get(),
			true, "subject common name does not begin with system:node:", 0},
		{"a node certificate with server auth fails", newCSR(nodeReq).usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth).
			condition(certificatesv1.CertificateApproved).get(), true, "usages did not match [client auth digital signature key encipherment]", 0},
		{"an API client certificate", newCSR(request(t, "alice", []string{"devs"})).signer(certificatesv1.KubeAPIServerClientSignerName).
			usages(certificatesv1.UsageClientAuth).condition(certificatesv1.CertificateApproved).get(), true, "", year - 5*time.Minute},
		{"an API client certificate without client auth fails", newCSR(request(t, "alice", nil)).signer(certificatesv1.KubeAPIServerClientSignerName).
			usages(certificatesv1.UsageDigitalSignature).condition(certificatesv1.CertificateApproved).get(), true, "missing required usage for client certificate: client auth", 0},
		{"a kubelet serving certificate", newCSR(request(t, "system:node:n1", []string{"system:nodes"}, "10.0.0.1")).signer(certificatesv1.KubeletServingSignerName).
			usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth).condition(certificatesv1.CertificateApproved).get(), true, "", year - 5*time.Minute},
		{"a kubelet serving certificate without an address fails", newCSR(nodeReq).signer(certificatesv1.KubeletServingSignerName).
			usages(certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth).condition(certificatesv1.CertificateApproved).get(), true, "DNS or IP subjectAltName is required", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := tt.csr
			write, err := s.decide(csr)
			if err != nil {
				t.Fatal(err)
			}
			if write != tt.write {
				t.Fatalf("write = %v, want %v", write, tt.write)
			}
			var failed string
			for _, c := range csr.Status.Conditions {
				if c.Type == certificatesv1.CertificateFailed && c.Reason == SignerValidationFailure {
					failed = c.Message
				}
			}
			if failed != tt.failed {
				t.Errorf("Failed condition %q, want %q", failed, tt.failed)
			}
			if tt.lifetime == 0 {
				if len(csr.Status.Certificate) > 0 {
					t.Errorf("a certificate was issued")
				}
				return
			}
			cert, err := pki.ParseCertificate(csr.Status.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			if got := cert.NotAfter.Sub(now); got != tt.lifetime {
				t.Errorf("lifetime %v, want %v", got, tt.lifetime)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("not the CA's: %v", err)
			}
		})
	}
}
