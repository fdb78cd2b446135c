// Package failover lets a client reach whichever of several API servers is
// up. Servers that share one etcd serve the same API with certificates of
// the same CA, each naming the in-cluster names of the API ("kubernetes",
// "kubernetes.default.svc", ...), so a client may verify any of them under
// one of those names and dial the first that answers: an agent joined with
// `--server A,B` keeps working when A dies.
//
// The switch happens at dial time: a connection in use stays on its server
// until it breaks (client-go's watches then end and re-dial), and the next
// dial starts from the server that answered last.
package failover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// ServerName is the name the client verifies every server's certificate
// under: one of the in-cluster names every moorage server's certificate has.
const ServerName = "kubernetes.default.svc"

// DialTimeout bounds the attempt on each server, so that one that vanished
// from the network (no refusal, only silence) costs seconds, not minutes.
const DialTimeout = 3 * time.Second

// Dialer dials the first of its addresses that accepts a connection,
// starting from the one that did last.
type Dialer struct {
	addrs []string // host:port
	mu    sync.Mutex
	last  int
	d     net.Dialer
}

// NewDialer returns a Dialer over the host:port of each https URL.
func NewDialer(urls []string) (*Dialer, error) {
	if len(urls) == 0 {
		return nil, errors.New("no server URLs")
	}
	d := &Dialer{d: net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%q: want an https:// URL of an API server", raw)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		d.addrs = append(d.addrs, host)
	}
	return d, nil
}

// DialContext ignores addr (the configured server's) and dials the servers
// in turn, starting from the last that answered.
func (d *Dialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	d.mu.Lock()
	start := d.last
	d.mu.Unlock()
	var errs []error
	for i := range d.addrs {
		n := (start + i) % len(d.addrs)
		c, err := d.d.DialContext(ctx, network, d.addrs[n])
		if err == nil {
			d.mu.Lock()
			d.last = n
			d.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// Configure makes cfg reach any of urls (cfg.Host stays the first): it
// dials through a Dialer and verifies each server's certificate under
// ServerName. One URL leaves cfg as it is.
func Configure(cfg *rest.Config, urls []string) error {
	if len(urls) < 2 {
		return nil
	}
	d, err := NewDialer(urls)
	if err != nil {
		return err
	}
	cfg.Host = urls[0]
	cfg.Dial = d.DialContext
	cfg.TLSClientConfig.ServerName = ServerName
	return nil
}
