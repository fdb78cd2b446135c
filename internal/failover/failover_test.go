package failover

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/pki"
)

// server serves its name over TLS with a certificate of ca naming only the
// in-cluster names and its own address, as a moorage server's does.
func server(t *testing.T, ca pki.CA, name string) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, err := pki.ServingCert(pki.Files{Dir: filepath.Join(dir, name)}, ca, []string{ServerName, "kubernetes"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go srv.ServeTLS(ln, "", "")
	return "https://" + ln.Addr().String(), func() { srv.Close() }
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestConfigureReachesWhicheverServerIsUp(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	a, stopA := server(t, ca, "a")
	b, stopB := server(t, ca, "b")
	defer stopB()
	cfg := &rest.Config{Host: a, TLSClientConfig: rest.TLSClientConfig{CAData: ca.CertPEM}}
	if err := Configure(cfg, []string{a, b}); err != nil {
		t.Fatal(err)
	}
	newClient := func() *http.Client {
		rt, err := rest.TransportFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: rt}
	}
	if got := get(t, newClient(), a); got != "a" {
		t.Fatalf("both up: reached %q, want a", got)
	}
	stopA()
	if got := get(t, newClient(), a); got != "b" {
		t.Fatalf("a down: reached %q, want b", got)
	}
	// A certificate of another CA is refused even if it names the server.
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	c, stopC := server(t, other, "c")
	defer stopC()
	bad := &rest.Config{Host: c, TLSClientConfig: rest.TLSClientConfig{CAData: ca.CertPEM}}
	if err := Configure(bad, []string{c, a}); err != nil {
		t.Fatal(err)
	}
	rt, err := rest.TransportFor(bad)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, &http.Client{Transport: rt}, c); got == "c" {
		t.Fatal("a server with a certificate of another CA was trusted")
	}
	if err := Configure(&rest.Config{}, []string{"http://x", "https://y"}); err == nil {
		t.Error("an http:// URL was accepted")
	}
}
