// Package pki makes and keeps the certificate authority and the serving
// certificate of a moorage server, and the key that signs its service
// account tokens, as PEM files in one directory.
package pki

import (
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

// EnsureServiceAccountKey returns the P-256 key that signs service account
// tokens, making it the first time. It is never replaced: every token
// issued with it stays valid across restarts.
func EnsureServiceAccountKey(f Files) (*ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(f.ServiceAccountKey())
	if err == nil {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "EC PRIVATE KEY" {
			return nil, fmt.Errorf("%s: not a PEM EC PRIVATE KEY", f.ServiceAccountKey())
		}
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.ServiceAccountKey(), err)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(f.ServiceAccountKey(), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// Ensure makes the CA if there is none, and a serving certificate for hosts
// (IP addresses or DNS names) signed by it if the current one is missing,
// expiring within 30 days, or does not cover every host. It returns the CA
// certificate's PEM and the serving key pair.
func Ensure(f Files, hosts []string) (caPEM []byte, serving tls.Certificate, err error) {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return nil, serving, err
	}
	caCert, caKey, caPEM, err := loadOrMakeCA(f)
	if err != nil {
		return nil, serving, err
	}
	if cert, err := tls.LoadX509KeyPair(f.ServerCert(), f.serverKey()); err == nil && covers(cert, hosts) {
		return caPEM, cert, nil
	}
	certPEM, keyPEM, err := sign(caCert, caKey, hosts)
	if err != nil {
		return nil, serving, err
	}
	if err := fsutil.WriteFileAtomic(f.serverKey(), keyPEM, 0o600); err != nil {
		return nil, serving, err
	}
	if err := fsutil.WriteFileAtomic(f.ServerCert(), certPEM, 0o644); err != nil {
		return nil, serving, err
	}
	serving, err = tls.X509KeyPair(certPEM, keyPEM)
	return caPEM, serving, err
}

func loadOrMakeCA(f Files) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPEM, errC := os.ReadFile(f.CACert())
	keyPEM, errK := os.ReadFile(f.caKey())
	if errC == nil && errK == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("CA in %s: %w", f.Dir, err)
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, nil, nil, err
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, nil, fmt.Errorf("CA key in %s is not ECDSA", f.Dir)
		}
		return cert, key, certPEM, nil
	}
	if !errors.Is(errC, os.ErrNotExist) && errC != nil {
		return nil, nil, nil, errC
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
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
		return nil, nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := fsutil.WriteFileAtomic(f.caKey(), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, nil, nil, err
	}
	if err := fsutil.WriteFileAtomic(f.CACert(), certPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	return cert, key, certPEM, nil
}

func sign(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
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

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}
