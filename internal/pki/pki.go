// Package pki makes and keeps the certificate authority and the serving
// certificate of a moorage server, and the key that signs its service
// account tokens, as PEM files in one directory.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
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
	"slices"
	"time"

	"github.com/moorage/moorage/internal/fsutil"
)

// Files are the PEM files under one directory.
type Files struct{ Dir string }

func (f Files) CACert() string     { return filepath.Join(f.Dir, "ca.crt") }
func (f Files) caKey() string      { return filepath.Join(f.Dir, "ca.key") }
func (f Files) ServerCert() string { return filepath.Join(f.Dir, "server.crt") }
func (f Files) serverKey() string  { return filepath.Join(f.Dir, "server.key") }

// ServiceAccountKey is the key that signs service account tokens
// (upstream's --service-account-signing-key-file).
func (f Files) ServiceAccountKey() string { return filepath.Join(f.Dir, "sa.key") }

// CA is the cluster's certificate authority: it signs the servers' serving
// certificates and the nodes' client certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// KeyPEM is the CA key as PEM.
func (ca CA) KeyPEM() []byte { return EncodeKey(ca.Key) }

// Pool is a pool holding only the CA.
func (ca CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// NewCA makes a CA valid for ten years.
func NewCA() (CA, error) {
	key, err := NewKey()
	if err != nil {
		return CA{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("moorage-ca@%d", time.Now().Unix())},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return CA{}, err
	}
	return CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// ParseCA reads a CA from its certificate and key PEM.
func ParseCA(certPEM, keyPEM []byte) (CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return CA{}, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return CA{}, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return CA{}, errors.New("the CA key is not ECDSA")
	}
	if !cert.IsCA {
		return CA{}, errors.New("the CA certificate is not a CA's")
	}
	return CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// LoadCA reads the CA in f; ok is false if there is none.
func LoadCA(f Files) (ca CA, ok bool, err error) {
	certPEM, errC := os.ReadFile(f.CACert())
	keyPEM, errK := os.ReadFile(f.caKey())
	if errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist) {
		return CA{}, false, nil
	}
	if err := errors.Join(errC, errK); err != nil {
		return CA{}, false, err
	}
	ca, err = ParseCA(certPEM, keyPEM)
	if err != nil {
		return CA{}, false, fmt.Errorf("CA in %s: %w", f.Dir, err)
	}
	return ca, true, nil
}

// WriteCA keeps ca in f, replacing the CA there if it differs.
func WriteCA(f Files, ca CA) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(f.caKey(), ca.KeyPEM(), 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(f.CACert(), ca.CertPEM, 0o644)
}

// EnsureCA returns the CA in f, making it the first time.
func EnsureCA(f Files) (CA, error) {
	ca, ok, err := LoadCA(f)
	if err != nil || ok {
		return ca, err
	}
	if ca, err = NewCA(); err != nil {
		return CA{}, err
	}
	return ca, WriteCA(f, ca)
}

// ServingCert returns the serving certificate kept in f if ca signed it,
// it covers every host (IP addresses or DNS names) and it does not expire
// within 30 days; else it signs a new one with ca and keeps it.
func ServingCert(f Files, ca CA, hosts []string) (tls.Certificate, error) {
	if cert, err := tls.LoadX509KeyPair(f.ServerCert(), f.serverKey()); err == nil && covers(cert, hosts) && signedBy(cert, ca) {
		return cert, nil
	}
	certPEM, keyPEM, err := sign(ca, hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := fsutil.WriteFileAtomic(f.serverKey(), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := fsutil.WriteFileAtomic(f.ServerCert(), certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// Ensure makes the CA if there is none, and a serving certificate for hosts
// (see ServingCert). It returns the CA certificate's PEM and the serving
// key pair.
func Ensure(f Files, hosts []string) (caPEM []byte, serving tls.Certificate, err error) {
	ca, err := EnsureCA(f)
	if err != nil {
		return nil, serving, err
	}
	serving, err = ServingCert(f, ca, hosts)
	return ca.CertPEM, serving, err
}

// EnsureServiceAccountKey returns the P-256 key that signs service account
// tokens, making it the first time. It is never replaced: every token
// issued with it stays valid across restarts.
func EnsureServiceAccountKey(f Files) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(f.ServiceAccountKey())
	if err == nil {
		key, err := ParseKey(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.ServiceAccountKey(), err)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	return key, WriteServiceAccountKey(f, key)
}

// WriteServiceAccountKey keeps key as f's service account key.
func WriteServiceAccountKey(f Files, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(f.ServiceAccountKey(), EncodeKey(key), 0o600)
}

// NewKey makes a P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// EncodeKey is key as a PEM "EC PRIVATE KEY".
func EncodeKey(key *ecdsa.PrivateKey) []byte {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err) // only for curves Go does not know, which NewKey never makes
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// ParseKey reads a PEM "EC PRIVATE KEY".
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return nil, errors.New("not a PEM EC PRIVATE KEY")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func sign(ca CA, hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "moorage-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), EncodeKey(key), nil
}

// covers: the certificate is valid for 30 more days and names every host.
func covers(pair tls.Certificate, hosts []string) bool {
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || time.Until(cert.NotAfter) < 30*24*time.Hour {
		return false
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if h != "" && !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

// signedBy: ca issued the certificate (a server that joined a cluster
// replaces the certificate its own first CA signed).
func signedBy(pair tls.Certificate, ca CA) bool {
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	return err == nil && bytes.Equal(cert.RawIssuer, ca.Cert.RawSubject) && cert.CheckSignatureFrom(ca.Cert) == nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}
