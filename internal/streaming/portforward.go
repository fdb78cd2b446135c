package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	pfconst "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/portforward"
)

// PortDialer connects to a port of the pod being forwarded to. ctx ends
// with the port-forward session.
type PortDialer func(ctx context.Context, port int32) (net.Conn, error)

// ServePortForward serves `kubectl port-forward` (the kubelet's
// /portForward): it upgrades the request to SPDY/3.1, directly or tunnelled
// through a WebSocket (kubectl 1.31 and later try that first), and then, for
// every pair of streams the client opens (one per local connection), dials
// the stream's port with dial and copies bytes both ways. A port that cannot
// be dialed is reported on the pair's error stream in the kubelet's words,
// naming pod. It returns when the client hangs up, the connection stays idle
// for idleTimeout (0: never), or r's context ends. If the upgrade fails, the
// client has been answered with an HTTP error.
//
// streamCreationTimeout bounds how long the client may take to open the
// second stream of a pair (0: remotecommand.DefaultStreamCreationTimeout).
func ServePortForward(w http.ResponseWriter, r *http.Request, pod string, dial PortDialer, idleTimeout, streamCreationTimeout time.Duration) {
	if err := checkPortQuery(r.URL.Query()); err != nil {
		writeHTTPStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	if streamCreationTimeout <= 0 {
		streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
	}
	f := &forwarder{
		pod:     pod,
		dial:    dial,
		timeout: streamCreationTimeout,
		streams: make(chan spdyStream),
		done:    make(chan struct{}),
	}
	var conn httpstream.Connection
	if websocket.IsWebSocketUpgrade(r) {
		conn = upgradeTunnel(w, r, f.newStream)
	} else {
		conn = upgradePortForwardSPDY(w, r, f.newStream)
	}
	if conn == nil {
		return
	}
	conn.SetIdleTimeout(idleTimeout)
	f.run(r.Context(), conn)
}

// upgradePortForwardSPDY is the plain SPDY upgrade (kubectl up to 1.30, and
// the fallback of later ones), negotiating portforward.k8s.io.
func upgradePortForwardSPDY(w http.ResponseWriter, r *http.Request, newStream httpstream.NewStreamHandler) httpstream.Connection {
	if !httpstream.IsUpgradeRequest(r) {
		writeHTTPStatus(w, apierrors.NewBadRequest("Upgrade request required"))
		return nil
	}
	if r.Header.Get(httpstream.HeaderProtocolVersion) == "" {
		writeHTTPStatus(w, apierrors.NewBadRequest(fmt.Sprintf("unable to upgrade: %s is required", httpstream.HeaderProtocolVersion)))
		return nil
	}
	if _, err := httpstream.Handshake(r, w, []string{pfconst.PortForwardV1Name}); err != nil {
		return nil // Handshake has written a 403 naming the version served.
	}
	return spdy.NewResponseUpgrader().UpgradeResponse(w, r, newStream)
}

// upgradeTunnel is the WebSocket upgrade of kubectl 1.31 and later: the
// subprotocol SPDY/3.1+portforward.k8s.io says that every binary message
// carries raw bytes of an SPDY/3.1 connection, which then runs exactly as a
// plain one (the apiserver's tunnelling handler does the same before it
// forwards those bytes to the kubelet). A WebSocket request without that
// subprotocol gets a 400, which client-go counts as an upgrade failure and
// so falls back to plain SPDY.
func upgradeTunnel(w http.ResponseWriter, r *http.Request, newStream httpstream.NewStreamHandler) httpstream.Connection {
	offered := websocket.Subprotocols(r)
	found := false
	for _, p := range offered {
		found = found || p == pfconst.WebsocketsSPDYTunnelingPortForwardV1
	}
	if !found {
		writeHTTPStatus(w, apierrors.NewBadRequest(fmt.Sprintf(
			"unable to upgrade: none of the WebSocket subprotocols %q is supported; supported: %q",
			offered, []string{pfconst.WebsocketsSPDYTunnelingPortForwardV1})))
		return nil
	}
	// Any Origin: the caller authenticates the request before serving it.
	up := websocket.Upgrader{
		Subprotocols: []string{pfconst.WebsocketsSPDYTunnelingPortForwardV1},
		CheckOrigin:  func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil // Upgrade has answered with an HTTP error.
	}
	conn, err := spdy.NewServerConnection(portforward.NewTunnelingConnection("server", ws), newStream)
	if err != nil {
		_ = ws.Close()
		return nil
	}
	return conn
}

// forwarder is one port-forward session: it pairs the streams the client
// opens and runs a forwarding per complete pair.
type forwarder struct {
	pod     string
	dial    PortDialer
	timeout time.Duration // for the second stream of a pair

	// streams carries the accepted streams from the connection's frame
	// goroutines to run; done is closed when run has returned.
	streams chan spdyStream
	done    chan struct{}
}

// newStream is the httpstream.NewStreamHandler: it checks a new stream's
// headers as the kubelet does (an error rejects the stream with a reset)
// and hands it to run. It runs on the connection's frame goroutines, before
// the stream is replied to.
func (f *forwarder) newStream(s httpstream.Stream, replySent <-chan struct{}) error {
	h := s.Headers()
	portString := h.Get(corev1.PortHeader)
	if portString == "" {
		return fmt.Errorf("%q header is required", corev1.PortHeader)
	}
	if _, err := parsePort(portString); err != nil {
		return err
	}
	switch kind := h.Get(corev1.StreamType); kind {
	case corev1.StreamTypeError, corev1.StreamTypeData:
	case "":
		return fmt.Errorf("%q header is required", corev1.StreamType)
	default:
		return fmt.Errorf("invalid stream type %q", kind)
	}
	select {
	case f.streams <- spdyStream{Stream: s, replySent: replySent}:
		return nil
	case <-f.done:
		return errors.New("the port-forward session is over")
	}
}

// streamPair is the error and data streams of one forwarded connection.
type streamPair struct {
	id         string
	data, errs *spdyStream
	timer      *time.Timer // fires when the pair took too long to complete
}

// run pairs the client's streams by request ID and forwards each complete
// pair, until the connection or ctx ends; then it closes the connection and
// waits for the forwardings to end.
func (f *forwarder) run(ctx context.Context, conn httpstream.Connection) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	pending := make(map[string]*streamPair)
	expired := make(chan *streamPair)
	defer func() {
		close(f.done)
		for _, p := range pending {
			p.timer.Stop()
		}
		cancel()     // forwardings close their pod connections
		conn.Close() // and every stream is reset
		wg.Wait()
	}()
	for {
		select {
		case <-conn.CloseChan():
			return
		case <-ctx.Done():
			return
		case s := <-f.streams:
			id := requestID(s)
			p := pending[id]
			if p == nil {
				p = &streamPair{id: id}
				p.timer = time.AfterFunc(f.timeout, func() {
					select {
					case expired <- p:
					case <-f.done:
					}
				})
				pending[id] = p
			}
			slot := &p.data
			if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
				slot = &p.errs
			}
			if *slot != nil {
				_ = s.Reset() // a second stream of one kind: drop it
				continue
			}
			*slot = &s
			if p.data != nil && p.errs != nil {
				p.timer.Stop()
				delete(pending, id)
				wg.Go(func() {
					defer conn.RemoveStreams(p.data, p.errs)
					f.forward(ctx, *p.data, *p.errs)
				})
			}
		case p := <-expired:
			if pending[p.id] != p {
				continue // completed meanwhile
			}
			delete(pending, p.id)
			if p.data != nil {
				_ = p.data.Reset()
				conn.RemoveStreams(p.data)
			}
			if p.errs != nil {
				wg.Go(func() {
					defer conn.RemoveStreams(p.errs)
					writeStreamError(ctx, *p.errs, fmt.Sprintf("request %s: timed out waiting for streams", p.id))
				})
			}
		}
	}
}

// writeStreamError writes msg on an error stream once the stream has been
// replied to (the client drops data that comes before the reply) and
// half-closes it.
func writeStreamError(ctx context.Context, s spdyStream, msg string) {
	select {
	case <-s.replySent:
	case <-ctx.Done():
		return
	}
	_, _ = io.WriteString(s, msg)
	_ = s.Close()
}

// forward dials the data stream's port and copies bytes both ways. A dial
// failure goes on the error stream; kubectl then ends the whole session, as
// with the kubelet.
func (f *forwarder) forward(ctx context.Context, data, errs spdyStream) {
	for _, s := range []spdyStream{data, errs} {
		select {
		case <-s.replySent:
		case <-ctx.Done():
			return
		}
	}
	port, _ := parsePort(data.Headers().Get(corev1.PortHeader)) // newStream checked it
	pc, err := f.dial(ctx, port)
	if err != nil {
		// The kubelet's words; its uid is empty when it goes through CRI.
		_, _ = fmt.Fprintf(errs, "error forwarding port %d to pod %s, uid : %v", port, f.pod, err)
		_ = errs.Close()
		_ = data.Close()
		return
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { _ = pc.Close() }) // unblocks both copies
	defer stop()

	// client -> pod. EOF (the client half-closed, or reset, its data stream)
	// half-closes the pod connection, so that the pod sees the end of its
	// input and can still answer. If the pod stops reading, reset the stream:
	// frames the client keeps sending to an unread stream would hold up the
	// connection's other streams.
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		_, err := io.Copy(pc, data)
		cw, ok := pc.(interface{ CloseWrite() error })
		if err != nil || !ok {
			_ = data.Reset()
			_ = pc.Close()
			return
		}
		_ = cw.CloseWrite()
	}()

	// pod -> client, until the pod closes its side: then half-close the data
	// stream (the client reads EOF and closes its local connection), and the
	// error stream with nothing on it (the client waits for that before it
	// is done with the connection).
	_, _ = io.Copy(data, pc)
	_ = data.Close()
	_ = errs.Close()
	// The client resets or half-closes its data stream once it has read EOF.
	// (A pod that neither answers nor closes after the client's EOF keeps the
	// pair until the session ends; containerd gives it a second instead.)
	<-upDone
}

// requestID is the pair a stream belongs to: its requestID header, or, from
// clients older than that header, its stream ID (the error stream is
// opened first, the data stream right after it).
func requestID(s httpstream.Stream) string {
	if id := s.Headers().Get(corev1.PortForwardRequestIDHeader); id != "" {
		return id
	}
	id := s.Identifier()
	if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeData {
		id -= 2 // client stream IDs are odd and go up by two
	}
	return strconv.FormatUint(uint64(id), 10)
}

// parsePort reads a port number (1 to 65535), with the kubelet's errors.
func parsePort(s string) (int32, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("unable to parse %q as a port: %v", s, err)
	}
	if p < 1 {
		return 0, fmt.Errorf("port %q must be > 0", s)
	}
	return int32(p), nil
}

// checkPortQuery checks the ports a request names in its query: the
// kubelet's "port" and PodPortForwardOptions' "ports", each repeated or
// comma-separated. kubectl names none (ports travel in stream headers),
// but a client that does must name valid ones.
func checkPortQuery(q url.Values) error {
	for _, name := range []string{corev1.PortHeader, "ports"} {
		for _, v := range q[name] {
			if v == "" {
				return fmt.Errorf("query parameter %q cannot be empty", name)
			}
			for _, p := range strings.Split(v, ",") {
				if _, err := parsePort(p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
