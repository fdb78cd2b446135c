package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/moorage/moorage/internal/fsutil"
)

// This file holds the certificates of nodes and of the servers' calls to
// them: what a node asks the CA for (NewCSR), what the CA signs for a
// request (SignRequest), the client certificate a server presents to node
// agents (KubeletClientCert), and a node agent's self-signed serving
// certificate (EnsureSelfSigned).

// Issued says what a certificate signed for a request may do and when.
type Issued struct {
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	NotBefore   time.Time
	NotAfter    time.Time
}

// SignRequest signs req, whose signature it checks, with ca: the
// request's subject and subject alternative names, with the usages and
// validity of issued (cut at the CA's own expiry). It returns the
// certificate as PEM.
func (ca CA) SignRequest(req *x509.CertificateRequest, issued Issued) ([]byte, error) {
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("unable to verify certificate request signature: %w", err)
	}
	if !issued.NotBefore.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the signer has expired: NotAfter=%v", ca.Cert.NotAfter)
	}
	notAfter := issued.NotAfter
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial128(),
		Subject:               req.Subject,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		EmailAddresses:        req.EmailAddresses,
		URIs:                  req.URIs,
		NotBefore:             issued.NotBefore,
		NotAfter:              notAfter,
		KeyUsage:              issued.KeyUsage,
		ExtKeyUsage:           issued.ExtKeyUsage,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, req.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("failed to sign certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NewCSR is a PEM certificate request for key with subject CN cn and
// organizations orgs.
func NewCSR(key crypto.Signer, cn string, orgs ...string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: orgs},
	}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// KubeletClient is the subject of the certificate servers present to node
// agents: kubeadm's apiserver-kubelet-client.
const (
	KubeletClientCN  = "kube-apiserver-kubelet-client"
	KubeletClientOrg = "system:masters"
)

// KubeletClientCert makes a client certificate signed by ca for
// kubeadm's apiserver-kubelet-client, valid for validFor.
func KubeletClientCert(ca CA, validFor time.Duration) (tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial128(),
		Subject:      pkix.Name{CommonName: KubeletClientCN, Organization: []string{KubeletClientOrg}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), EncodeKey(key))
}

// EnsureSelfSigned returns the self-signed serving certificate kept at
// certFile and keyFile if it names every host and is valid for 30 more
// days; else it makes one for a year and keeps it, as the kubelet does
// without a serving certificate of the cluster's (its kubelet.crt).
func EnsureSelfSigned(certFile, keyFile string, hosts []string) (tls.Certificate, error) {
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && covers(pair, hosts) {
		return pair, nil
	}
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	name := "localhost"
	if len(hosts) > 0 && hosts[0] != "" {
		name = hosts[0]
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial128(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", name, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, keyPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), EncodeKey(key)
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := fsutil.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := fsutil.WriteFileAtomic(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// ParseCertificate reads the first PEM "CERTIFICATE".
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM CERTIFICATE")
	}
	return x509.ParseCertificate(block.Bytes)
}

// PublicKeyMatches tells whether cert is for key.
func PublicKeyMatches(cert *x509.Certificate, key *ecdsa.PrivateKey) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(&key.PublicKey)
}

// serial128 is a random 128-bit serial number, as upstream's signer's.
func serial128() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n
}
