package streaming

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/util/remotecommand"
)

// spdyProtocols are the X-Stream-Protocol-Version values served, best first.
// Over SPDY, v5 is v4: its close signal is a WebSocket matter, and SPDY
// streams half-close natively.
var spdyProtocols = []string{
	remotecommand.StreamProtocolV5Name,
	remotecommand.StreamProtocolV4Name,
	remotecommand.StreamProtocolV3Name,
	remotecommand.StreamProtocolV2Name,
	remotecommand.StreamProtocolV1Name,
}

// protocolVersion is the version number of a negotiated protocol name
// (channel.k8s.io, or nothing negotiated, is version 1).
func protocolVersion(name string) int {
	switch name {
	case remotecommand.StreamProtocolV5Name:
		return 5
	case remotecommand.StreamProtocolV4Name:
		return 4
	case remotecommand.StreamProtocolV3Name:
		return 3
	case remotecommand.StreamProtocolV2Name:
		return 2
	}
	return 1
}

var streamTypes = map[string]bool{
	corev1.StreamTypeStdin:  true,
	corev1.StreamTypeStdout: true,
	corev1.StreamTypeStderr: true,
	corev1.StreamTypeError:  true,
	corev1.StreamTypeResize: true,
}

var (
	errStreamTimeout = errors.New("timed out waiting for client to create streams")
	errClientGone    = errors.New("client closed the connection while creating streams")
)

// spdyStream is a stream the client opened, with the channel closed once
// our reply to it has been queued; writing before that loses the data.
type spdyStream struct {
	httpstream.Stream
	replySent <-chan struct{}
}

// openSPDY negotiates the protocol version, upgrades, and waits for the
// client to open the streams opts promise. On failure the client has been
// answered (before the upgrade) or the connection is closed (after it).
func openSPDY(w http.ResponseWriter, r *http.Request, opts Options, idleTimeout, creationTimeout time.Duration) *wire {
	if !httpstream.IsUpgradeRequest(r) {
		writeHTTPStatus(w, apierrors.NewBadRequest("Upgrade request required"))
		return nil
	}
	if r.Header.Get(httpstream.HeaderProtocolVersion) == "" {
		// Handshake refuses this without answering.
		writeHTTPStatus(w, apierrors.NewBadRequest(fmt.Sprintf("unable to upgrade: %s is required", httpstream.HeaderProtocolVersion)))
		return nil
	}
	protocol, err := httpstream.Handshake(r, w, spdyProtocols)
	if err != nil {
		return nil // Handshake has written a 403 naming the versions served.
	}
	version := protocolVersion(protocol)

	incoming := make(chan spdyStream)
	settled := make(chan struct{})
	var mu sync.Mutex
	seen := make(map[string]bool)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, replySent <-chan struct{}) error {
		// Runs on the connection's frame goroutines; an error rejects the
		// stream with a reset.
		kind := s.Headers().Get(corev1.StreamType)
		if !streamTypes[kind] {
			return fmt.Errorf("unknown stream type %q", kind)
		}
		mu.Lock()
		dup := seen[kind]
		seen[kind] = true
		mu.Unlock()
		if dup {
			return fmt.Errorf("duplicate %s stream", kind)
		}
		select {
		case incoming <- spdyStream{Stream: s, replySent: replySent}:
			return nil
		case <-settled:
			return fmt.Errorf("%s stream opened after the session started", kind)
		}
	})
	if conn == nil {
		return nil // the upgrader has answered the client.
	}
	conn.SetIdleTimeout(idleTimeout)

	streams, err := awaitStreams(conn, incoming, requiredStreams(opts, version), creationTimeout)
	close(settled)
	if err != nil {
		// Tell the client why, if it gave us a way to.
		if es, ok := streams[corev1.StreamTypeError]; ok && isClosed(es.replySent) {
			if b := encodeStatus(version, internalError(err)); len(b) > 0 {
				_, _ = es.Write(b)
			}
			_ = es.Close()
		}
		_ = conn.Close()
		return nil
	}

	gone := make(chan struct{})
	go func() {
		<-conn.CloseChan()
		close(gone)
	}()
	c := &wire{version: version, gone: gone}
	if s, ok := streams[corev1.StreamTypeStdin]; ok && opts.Stdin {
		c.stdin = readerOnly{s}
	}
	if s, ok := streams[corev1.StreamTypeStdout]; ok && opts.Stdout {
		c.stdout = writerOnly{s}
	}
	if s, ok := streams[corev1.StreamTypeStderr]; ok && opts.Stderr {
		c.stderr = writerOnly{s}
	}
	if s, ok := streams[corev1.StreamTypeResize]; ok && opts.TTY {
		c.resize = readerOnly{s}
	}
	errStream := streams[corev1.StreamTypeError]
	c.writeError = func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		_, err := errStream.Write(b)
		return err
	}
	c.close = func() {
		// Half-close what we write, so the client reads to EOF, then let it
		// hang up first.
		for _, kind := range []string{corev1.StreamTypeError, corev1.StreamTypeStdout, corev1.StreamTypeStderr} {
			if s, ok := streams[kind]; ok {
				_ = s.Close()
			}
		}
		t := time.NewTimer(closeGrace)
		select {
		case <-conn.CloseChan():
		case <-t.C:
		}
		t.Stop()
		_ = conn.Close()
	}
	return c
}

// requiredStreams lists the streams a client of this version opens for
// opts: always error, the standard streams asked for, and resize for a
// terminal from v3 on.
func requiredStreams(opts Options, version int) []string {
	need := []string{corev1.StreamTypeError}
	if opts.Stdin {
		need = append(need, corev1.StreamTypeStdin)
	}
	if opts.Stdout {
		need = append(need, corev1.StreamTypeStdout)
	}
	if opts.Stderr {
		need = append(need, corev1.StreamTypeStderr)
	}
	if opts.TTY && version >= 3 {
		need = append(need, corev1.StreamTypeResize)
	}
	return need
}

// awaitStreams collects streams until every needed kind is there and
// replied to. Extra kinds the client opens are kept (old clients open stderr
// even with a terminal). It returns what it has so far with an error on
// timeout or disconnect.
func awaitStreams(conn httpstream.Connection, incoming <-chan spdyStream, need []string, timeout time.Duration) (map[string]spdyStream, error) {
	got := make(map[string]spdyStream)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	missing := func() bool {
		for _, kind := range need {
			if _, ok := got[kind]; !ok {
				return true
			}
		}
		return false
	}
	for missing() {
		select {
		case s := <-incoming:
			got[s.Headers().Get(corev1.StreamType)] = s
		case <-timer.C:
			return got, errStreamTimeout
		case <-conn.CloseChan():
			return got, errClientGone
		}
	}
	for _, s := range got {
		select {
		case <-s.replySent:
		case <-timer.C:
			return got, errStreamTimeout
		case <-conn.CloseChan():
			return got, errClientGone
		}
	}
	return got, nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
