package pki

import (
	"crypto/x509"
	"testing"
)

func TestEnsureKeepsTheCAAndCoversEveryHost(t *testing.T) {
	f := Files{Dir: t.TempDir()}
	ca1, cert1, err := Ensure(f, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca1)
	leaf, _ := x509.ParseCertificate(cert1.Certificate[0])
	for _, h := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
			t.Fatalf("serving certificate for %s: %v", h, err)
		}
	}
	// Same hosts: same certificate. A new host: a new certificate, same CA.
	_, cert2, _ := Ensure(f, []string{"127.0.0.1"})
	if string(cert2.Certificate[0]) != string(cert1.Certificate[0]) {
		t.Fatal("certificate re-issued although it covers the hosts")
	}
	ca3, cert3, err := Ensure(f, []string{"10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if string(ca3) != string(ca1) {
		t.Fatal("the CA changed")
	}
	if !covers(cert3, []string{"10.1.2.3"}) || covers(cert3, []string{"192.0.2.1"}) {
		t.Fatal("covers is wrong")
	}
}

func TestServiceAccountKeyIsMadeOnceAndKept(t *testing.T) {
	f := Files{Dir: t.TempDir()}
	k1, err := EnsureServiceAccountKey(f)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := EnsureServiceAccountKey(f)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("the service account key changed on the second call")
	}
}
