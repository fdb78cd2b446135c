package certificates

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/pki"
)

// SignerComponent names the signer, as kube-controller-manager does.
const SignerComponent = "certificatesigningrequest-signing-controller"

// DefaultSigningDuration is how long a signed certificate lasts when the
// request asks for no shorter: kube-controller-manager's
// --cluster-signing-duration (a year).
const DefaultSigningDuration = 365 * 24 * time.Hour

// SignerValidationFailure is the reason of the Failed condition of a
// request its signer refuses.
const SignerValidationFailure = "SignerValidationFailure"

// SignerOptions configure the signer.
type SignerOptions struct {
	Options
	// Duration caps how long certificates last (DefaultSigningDuration).
	Duration time.Duration
}

// signers are the kubernetes.io signers moorage's CA signs for, with the
// check each makes of a request.
var signers = map[string]func(*x509.CertificateRequest, []certificatesv1.KeyUsage) error{
	certificatesv1.KubeAPIServerClientKubeletSignerName: validateKubeletClient,
	certificatesv1.KubeAPIServerClientSignerName:        validateAPIServerClient,
	certificatesv1.KubeletServingSignerName:             validateKubeletServing,
}

// NewSigner builds upstream's csrsigning controller for the signers
// kubernetes.io/kube-apiserver-client-kubelet, kube-apiserver-client and
// kubelet-serving, signing with ca: an approved request gets its
// certificate in status.certificate, valid for spec.expirationSeconds
// (at least 10 minutes, at most the duration); a request its signer
// refuses gets a Failed condition.
func NewSigner(cfg *rest.Config, log *slog.Logger, ca pki.CA, opts SignerOptions) (*Controller, error) {
	if ca.Cert == nil || ca.Key == nil {
		return nil, fmt.Errorf("%s: a CA with its key is required", SignerComponent)
	}
	if opts.Duration == 0 {
		opts.Duration = DefaultSigningDuration
	}
	c, err := newController(cfg, log, SignerComponent, opts.Options)
	if err != nil {
		return nil, err
	}
	s := &signer{ca: ca, max: opts.Duration, now: time.Now}
	c.handle = func(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) error {
		write, err := s.decide(csr)
		if err != nil || !write {
			return err
		}
		if _, err := c.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("error updating status for csr: %w", err)
		}
		c.log.Info("answered", "csr", csr.Name, "issued", len(csr.Status.Certificate) > 0)
		return nil
	}
	return c, nil
}

// signer decides what an approved request gets.
type signer struct {
	ca  pki.CA
	max time.Duration
	now func() time.Time
}

// decide changes csr as its signer answers it: status.certificate, or a
// Failed condition if the signer refuses the request. It reports whether
// there is anything to write; an error is worth a retry.
func (s *signer) decide(csr *certificatesv1.CertificateSigningRequest) (bool, error) {
	approved, denied := approval(csr)
	if !approved || denied || hasTrueCondition(csr, certificatesv1.CertificateFailed) {
		return false, nil
	}
	validate, ours := signers[csr.Spec.SignerName]
	if !ours {
		return false, nil
	}
	req, err := parseRequest(csr.Spec.Request)
	if err != nil {
		return false, fmt.Errorf("unable to parse csr %q: %w", csr.Name, err)
	}
	if err := validate(req, csr.Spec.Usages); err != nil {
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateFailed, Status: corev1.ConditionTrue,
			Reason: SignerValidationFailure, Message: err.Error(), LastUpdateTime: metav1.NewTime(s.now()),
		})
		return true, nil
	}
	cert, err := s.sign(req, csr.Spec.Usages, csr.Spec.ExpirationSeconds)
	if err != nil {
		return false, fmt.Errorf("error auto signing csr: %w", err)
	}
	csr.Status.Certificate = cert
	return true, nil
}

// sign signs req as upstream's local signer: backdated 5 minutes (a
// certificate shorter than 8 hours keeps its whole length after now).
func (s *signer) sign(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage, expirationSeconds *int32) ([]byte, error) {
	keyUsage, extKeyUsage, err := x509Usages(usages)
	if err != nil {
		return nil, err
	}
	const backdate, short = 5 * time.Minute, 8 * time.Hour
	now := s.now()
	ttl := s.duration(expirationSeconds)
	notBefore, notAfter := now.Add(-backdate), now.Add(-backdate).Add(ttl)
	if ttl < short {
		notAfter = now.Add(ttl)
	}
	return s.ca.SignRequest(req, pki.Issued{KeyUsage: keyUsage, ExtKeyUsage: extKeyUsage, NotBefore: notBefore, NotAfter: notAfter})
}

// duration is what a request gets: what it asks for, between 10 minutes
// and the signer's maximum; the maximum if it asks for nothing.
func (s *signer) duration(expirationSeconds *int32) time.Duration {
	if expirationSeconds == nil {
		return s.max
	}
	return min(max(time.Duration(*expirationSeconds)*time.Second, 10*time.Minute), s.max)
}

var keyUsages = map[certificatesv1.KeyUsage]x509.KeyUsage{
	certificatesv1.UsageSigning: x509.KeyUsageDigitalSignature, certificatesv1.UsageDigitalSignature: x509.KeyUsageDigitalSignature,
	certificatesv1.UsageContentCommitment: x509.KeyUsageContentCommitment, certificatesv1.UsageKeyEncipherment: x509.KeyUsageKeyEncipherment,
	certificatesv1.UsageKeyAgreement: x509.KeyUsageKeyAgreement, certificatesv1.UsageDataEncipherment: x509.KeyUsageDataEncipherment,
	certificatesv1.UsageCertSign: x509.KeyUsageCertSign, certificatesv1.UsageCRLSign: x509.KeyUsageCRLSign,
	certificatesv1.UsageEncipherOnly: x509.KeyUsageEncipherOnly, certificatesv1.UsageDecipherOnly: x509.KeyUsageDecipherOnly,
}

var extKeyUsages = map[certificatesv1.KeyUsage]x509.ExtKeyUsage{
	certificatesv1.UsageAny: x509.ExtKeyUsageAny, certificatesv1.UsageServerAuth: x509.ExtKeyUsageServerAuth,
	certificatesv1.UsageClientAuth: x509.ExtKeyUsageClientAuth, certificatesv1.UsageCodeSigning: x509.ExtKeyUsageCodeSigning,
	certificatesv1.UsageEmailProtection: x509.ExtKeyUsageEmailProtection, certificatesv1.UsageSMIME: x509.ExtKeyUsageEmailProtection,
	certificatesv1.UsageIPsecEndSystem: x509.ExtKeyUsageIPSECEndSystem, certificatesv1.UsageIPsecTunnel: x509.ExtKeyUsageIPSECTunnel,
	certificatesv1.UsageIPsecUser: x509.ExtKeyUsageIPSECUser, certificatesv1.UsageTimestamping: x509.ExtKeyUsageTimeStamping,
	certificatesv1.UsageOCSPSigning: x509.ExtKeyUsageOCSPSigning, certificatesv1.UsageMicrosoftSGC: x509.ExtKeyUsageMicrosoftServerGatedCrypto,
	certificatesv1.UsageNetscapeSGC: x509.ExtKeyUsageNetscapeServerGatedCrypto,
}

// x509Usages turns the API's usages into x509's (extended ones sorted).
func x509Usages(usages []certificatesv1.KeyUsage) (x509.KeyUsage, []x509.ExtKeyUsage, error) {
	var ku x509.KeyUsage
	ext := map[x509.ExtKeyUsage]bool{}
	var unknown []certificatesv1.KeyUsage
	for _, u := range usages {
		if k, ok := keyUsages[u]; ok {
			ku |= k
		} else if e, ok := extKeyUsages[u]; ok {
			ext[e] = true
		} else {
			unknown = append(unknown, u)
		}
	}
	if len(unknown) > 0 {
		return 0, nil, fmt.Errorf("unrecognized usage values: %q", unknown)
	}
	var sorted []x509.ExtKeyUsage
	for e := x509.ExtKeyUsageAny; e <= x509.ExtKeyUsageMicrosoftKernelCodeSigning; e++ {
		if ext[e] {
			sorted = append(sorted, e)
		}
	}
	return ku, sorted, nil
}
