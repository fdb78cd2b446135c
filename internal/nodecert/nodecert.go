// Package nodecert gets a node's client certificate through the
// CertificateSigningRequest API and renews it before it expires, as the
// kubelet's TLS bootstrapping and certificate manager do: the node makes a
// key, asks for system:node:NAME in system:nodes from the signer
// kubernetes.io/kube-apiserver-client-kubelet, and waits until a server
// approves and signs the request.
package nodecert

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/fsutil"
	"github.com/moorage/moorage/internal/pki"
)

// Upstream's names for nodes.
const (
	UserPrefix = "system:node:"
	Group      = "system:nodes"
)

// Usages are what a node's client certificate is for (an ECDSA key has
// no use for key encipherment).
var Usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}

// Pair is a certificate and its key, as PEM.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// Certificate is the pair's leaf certificate.
func (p Pair) Certificate() (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(pair.Certificate[0])
}

// RequestOptions tune Request.
type RequestOptions struct {
	// Timeout is how long to wait for the certificate (5 minutes).
	Timeout time.Duration
	// GenerateName names the request with a random suffix (renewals, as
	// the kubelet's "csr-"); "" names it after its key and subject (the
	// kubelet's "node-csr-..." at bootstrap).
	GenerateName string
	// Poll is how often the request is read while waiting (250 ms).
	Poll time.Duration
}

// Request asks for node's client certificate with client (authenticated as
// a bootstrap token, or as the node itself to renew) and waits until it
// is issued.
func Request(ctx context.Context, client kubernetes.Interface, node string, opts RequestOptions) (Pair, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Poll == 0 {
		opts.Poll = 250 * time.Millisecond
	}
	key, err := pki.NewKey()
	if err != nil {
		return Pair{}, err
	}
	cn := UserPrefix + node
	request, err := pki.NewCSR(key, cn, Group)
	if err != nil {
		return Pair{}, err
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: opts.GenerateName},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request: request, SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName, Usages: Usages,
		},
	}
	if opts.GenerateName == "" {
		csr.Name = digestedName(key, cn)
	}
	csrs := client.CertificatesV1().CertificateSigningRequests()
	created, err := csrs.Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		return Pair{}, fmt.Errorf("creating the certificate signing request for %s: %w", cn, err)
	}
	cert, err := wait(ctx, client, created.Name, opts)
	if err != nil {
		return Pair{}, err
	}
	parsed, err := pki.ParseCertificate(cert)
	if err != nil || !pki.PublicKeyMatches(parsed, key) {
		return Pair{}, fmt.Errorf("certificate signing request %s: the certificate issued is not for the key requested", created.Name)
	}
	return Pair{CertPEM: cert, KeyPEM: pki.EncodeKey(key)}, nil
}

// wait reads the request until it has a certificate, is denied or failed,
// or the timeout passes.
func wait(ctx context.Context, client kubernetes.Interface, name string, opts RequestOptions) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	t := time.NewTicker(opts.Poll)
	defer t.Stop()
	var last error
	for {
		csr, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			if len(csr.Status.Certificate) > 0 {
				return csr.Status.Certificate, nil
			}
			for _, c := range csr.Status.Conditions {
				switch c.Type {
				case certificatesv1.CertificateDenied:
					return nil, fmt.Errorf("certificate signing request %s is denied, reason: %s, message: %s", name, c.Reason, c.Message)
				case certificatesv1.CertificateFailed:
					return nil, fmt.Errorf("certificate signing request %s failed, reason: %s, message: %s", name, c.Reason, c.Message)
				}
			}
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("certificate signing request %s was deleted before it was approved", name)
		case ctx.Err() == nil:
			last = err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				msg := fmt.Sprintf("certificate signing request %s was not approved and issued within %s: approve it on a server (kubectl certificate approve %s)", name, opts.Timeout, name)
				if last != nil {
					msg += fmt.Sprintf("; last error reading it: %v", last)
				}
				return nil, errors.New(msg)
			}
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// digestedName names a bootstrap request after its key and subject, as the
// kubelet does: a retry with the same key finds the same request.
func digestedName(key *ecdsa.PrivateKey, cn string) string {
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	h := sha256.New()
	h.Write(pub)
	h.Write([]byte("|" + cn + "|" + Group))
	for _, u := range Usages {
		h.Write([]byte("|" + string(u)))
	}
	return "node-csr-" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Files keep a node's current certificate and key in one PEM file (the
// kubelet's kubelet-client-current.pem), which client configurations
// name as both their certificate and key file: client-go reloads it when
// it changes.
type Files struct{ Dir string }

// Current is the PEM file with the certificate and the key.
func (f Files) Current() string { return filepath.Join(f.Dir, "agent-client-current.pem") }

// Write keeps p as the current pair.
func (f Files) Write(p Pair) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(f.Current(), append(append([]byte{}, p.CertPEM...), p.KeyPEM...), 0o600)
}

// RenewAfter is when a certificate valid from notBefore to notAfter is
// renewed: at 80% of its life, as the kubelet (70 to 90%).
func RenewAfter(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 8 / 10)
}

// Renew keeps the node's certificate fresh until ctx ends: at RenewAfter
// of the current one it asks for a new one with client (authenticated
// with the current certificate: the approver approves a node's own
// renewal), and passes it to renewed. A failure is retried every
// retry (a minute).
func Renew(ctx context.Context, client kubernetes.Interface, node string, current Pair, renewed func(Pair) error, log *slog.Logger, retry time.Duration) {
	if retry == 0 {
		retry = time.Minute
	}
	for {
		cert, err := current.Certificate()
		if err != nil {
			log.Error("node certificate unreadable: not renewing it", "err", err)
			return
		}
		at := RenewAfter(cert.NotBefore, cert.NotAfter)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		next, err := Request(ctx, client, node, RequestOptions{GenerateName: "csr-"})
		if err == nil {
			err = renewed(next)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("renewing the node certificate failed; retrying", "err", err, "expires", cert.NotAfter, "retry", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			continue
		}
		log.Info("node certificate renewed")
		current = next
	}
}
