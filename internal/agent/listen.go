package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/pki"
)

// ServeOptions say how the agent's API authenticates its callers.
type ServeOptions struct {
	// ClientCAs verify the callers' client certificates (the kubelet's
	// --client-ca-file): API servers present one the cluster CA issued
	// for its apiserver-kubelet-client. Nil takes none.
	ClientCAs *x509.CertPool
	// Token is a bearer token taken besides those the API server accepts
	// (which the agent asks it about, as the kubelet's webhook
	// authentication does), for callers without a client certificate.
	Token string
}

// Serve answers the agent's own API (logs, exec) over TLS on ln until ctx
// ends: what a standalone `moorage agent` does so that servers can reach
// pods on other machines. The port is reported in the Node's
// daemonEndpoints. As the kubelet without a serving certificate of the
// cluster's, it serves a self-signed one kept in its data directory
// (pki/kubelet.crt). Callers authenticate with a client certificate of
// opts.ClientCAs, else a bearer token (see ServeOptions). As everywhere
// in moorage, whoever authenticates may do everything.
func (a *Agent) Serve(ctx context.Context, ln net.Listener, opts ServeOptions) error {
	dir := filepath.Join(a.opts.DataDir, "pki")
	cert, err := pki.EnsureSelfSigned(filepath.Join(dir, "kubelet.crt"), filepath.Join(dir, "kubelet.key"), []string{a.opts.NodeName, a.ip})
	if err != nil {
		return fmt.Errorf("the agent's serving certificate: %w", err)
	}
	api := a.Handler()
	known := &tokenCache{ttl: time.Minute}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.callerAuthenticated(r, opts.Token, known) {
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			api.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	// HTTP/1.1 only: exec, attach and port-forward upgrade the connection.
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.ClientCAs != nil {
		tlsConfig.ClientAuth, tlsConfig.ClientCAs = tls.VerifyClientCertIfGiven, opts.ClientCAs
	}
	tlsLn := tls.NewListener(ln, tlsConfig)
	if err := srv.Serve(tlsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// callerAuthenticated: a client certificate the TLS handshake verified
// against the client CAs (for client auth), else token, else a bearer
// token the API server accepts.
func (a *Agent) callerAuthenticated(r *http.Request, token string, known *tokenCache) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if got == "" {
		return false
	}
	if token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 {
		return true
	}
	return known.valid(got, func() bool { return a.apiAccepts(r.Context(), got) })
}

// apiAccepts asks the API server whether token authenticates: it reads
// this node with it.
func (a *Agent) apiAccepts(ctx context.Context, token string) bool {
	cfg := rest.AnonymousClientConfig(a.cfg)
	cfg.BearerToken = token
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = client.CoreV1().Nodes().Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	return err == nil
}

// tokenCache remembers tokens the API server accepted, for ttl.
type tokenCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[32]byte]time.Time
}

func (c *tokenCache) valid(token string, check func() bool) bool {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	until, ok := c.m[key]
	c.mu.Unlock()
	if ok && time.Now().Before(until) {
		return true
	}
	if !check() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[32]byte]time.Time{}
	}
	for k, t := range c.m {
		if time.Now().After(t) {
			delete(c.m, k)
		}
	}
	c.m[key] = time.Now().Add(c.ttl)
	return true
}
