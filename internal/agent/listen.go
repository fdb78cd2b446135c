package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Serve answers the agent's own API (logs, exec) on ln for API servers that
// present token, until ctx ends: what a standalone `moorage agent` does
// so that the server can reach pods on other machines. The port is
// reported in the Node's daemonEndpoints. Another bearer token is taken
// when the API server accepts it (the kubelet's webhook authentication, by
// a request of the agent's own): an agent that joined with a bootstrap
// token does not know the token its server presents.
func (a *Agent) Serve(ctx context.Context, ln net.Listener, token string) error {
	api := a.Handler()
	known := &tokenCache{ttl: time.Minute}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			ok := got != "" && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
			if !ok && got != "" {
				ok = known.valid(got, func() bool { return a.apiAccepts(r.Context(), got) })
			}
			if !ok {
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			api.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
