package dns

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/miekg/dns"
)

// shutdownGrace bounds how long Serve waits for queries in flight.
const shutdownGrace = 2 * time.Second

// Serve answers queries with h on pc (UDP) and l (TCP), either of which
// may be nil, until ctx is done; then it closes them and returns nil. It
// returns early, having closed both, if serving on one fails.
func Serve(ctx context.Context, h dns.Handler, pc net.PacketConn, l net.Listener) error {
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: h})
	}
	if l != nil {
		servers = append(servers, &dns.Server{Listener: l, Handler: h})
	}
	if len(servers) == 0 {
		return errors.New("dns: nothing to serve on")
	}
	errs := make(chan error, len(servers))
	var running []*dns.Server
	var failed error
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { errs <- srv.ActivateAndServe() }()
		// A server shut down before it has started would never stop.
		select {
		case <-started:
			running = append(running, srv)
		case err := <-errs:
			failed = err
		}
		if failed != nil {
			break
		}
	}
	if failed == nil {
		select {
		case <-ctx.Done():
		case failed = <-errs:
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, srv := range running {
		_ = srv.ShutdownContext(shutdown) // closes its socket
	}
	if pc != nil {
		_ = pc.Close()
	}
	if l != nil {
		_ = l.Close()
	}
	return failed
}
