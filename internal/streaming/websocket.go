package streaming

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/remotecommand"
)

// wsProtocol is a WebSocket subprotocol: its remote command version and
// whether messages are base64 text ('0'+channel, then base64) instead of
// binary (channel byte, then raw data).
type wsProtocol struct {
	name    string
	version int
	base64  bool
}

// wsProtocols are the subprotocols served. The client's order of preference
// decides, as in the kubelet; kubectl offers only v5.
var wsProtocols = []wsProtocol{
	{remotecommand.StreamProtocolV5Name, 5, false},
	{remotecommand.StreamProtocolV4Name, 4, false},
	{"v4.base64.channel.k8s.io", 4, true},
	{"channel.k8s.io", 1, false},
	{"base64.channel.k8s.io", 1, true},
}

// negotiateWS picks the first offered subprotocol that is served. A client
// that offers none speaks channel.k8s.io.
func negotiateWS(offered []string) (wsProtocol, bool) {
	if len(offered) == 0 {
		return wsProtocol{name: "", version: 1}, true
	}
	for _, o := range offered {
		for _, p := range wsProtocols {
			if o == p.name {
				return p, true
			}
		}
	}
	return wsProtocol{}, false
}

const numChannels = remotecommand.StreamResize + 1

// wsConn multiplexes the session's streams over one WebSocket. One goroutine
// (readLoop) reads every message and feeds stdin and resize through pipes;
// writers share wmu.
type wsConn struct {
	ws    *websocket.Conn
	proto wsProtocol
	idle  time.Duration

	// inputs are the write ends of the pipes the session reads, by channel
	// (stdin and resize only); readers are their other ends.
	inputs  [numChannels]*io.PipeWriter
	readers [numChannels]*io.PipeReader

	wmu    sync.Mutex
	closed bool // guarded by wmu: the session is over, refuse writes
	// holdUntil delays output until the client can take it (set before
	// the session starts, read-only after).
	holdUntil time.Time

	lastActive atomic.Int64 // unix nanoseconds of the last data message
	readDone   chan struct{}
	stopIdle   chan struct{}
}

// openWebSocket negotiates the subprotocol and upgrades. A request offering
// only subprotocols not served gets a 400 Status, which client-go counts as
// an upgrade failure and so falls back to SPDY.
func openWebSocket(w http.ResponseWriter, r *http.Request, opts Options, idleTimeout time.Duration) *wire {
	offered := websocket.Subprotocols(r)
	proto, ok := negotiateWS(offered)
	if !ok {
		served := make([]string, len(wsProtocols))
		for i, p := range wsProtocols {
			served[i] = p.name
		}
		writeHTTPStatus(w, apierrors.NewBadRequest(fmt.Sprintf(
			"unable to upgrade: none of the WebSocket subprotocols %q is supported; supported: %q", offered, served)))
		return nil
	}
	var header http.Header
	if proto.name != "" {
		header = http.Header{"Sec-Websocket-Protocol": {proto.name}}
	}
	// Any Origin: the caller authenticates the request before serving it.
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, header)
	if err != nil {
		return nil // Upgrade has answered with an HTTP error.
	}

	c := &wsConn{
		ws:       ws,
		proto:    proto,
		idle:     idleTimeout,
		readDone: make(chan struct{}),
		stopIdle: make(chan struct{}),
	}
	c.touch()
	wr := &wire{version: proto.version, gone: c.readDone, close: c.close}
	if opts.Stdin {
		wr.stdin = c.pipe(remotecommand.StreamStdIn)
	}
	if opts.Stdout {
		wr.stdout = wsWriter{c, remotecommand.StreamStdOut}
	}
	if opts.Stderr {
		wr.stderr = wsWriter{c, remotecommand.StreamStdErr}
	}
	if opts.TTY {
		wr.resize = c.pipe(remotecommand.StreamResize)
	}
	wr.writeError = func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		_, err := c.send(remotecommand.StreamErr, b)
		return err
	}

	// Tell the client the connection is ready with an empty message on the
	// lowest channel it reads, as the kubelet does.
	ready := byte(remotecommand.StreamErr)
	switch {
	case opts.Stdout:
		ready = remotecommand.StreamStdOut
	case opts.Stderr:
		ready = remotecommand.StreamStdErr
	}
	c.wmu.Lock()
	_ = c.sendLocked(ready, nil) // a failure shows up in readLoop.
	c.wmu.Unlock()
	c.holdUntil = time.Now().Add(clientSetupGrace)

	go c.readLoop()
	if idleTimeout > 0 {
		go c.watchIdle()
	}
	return wr
}

func (c *wsConn) pipe(channel int) io.Reader {
	r, w := io.Pipe()
	c.readers[channel], c.inputs[channel] = r, w
	return readerOnly{r}
}

func (c *wsConn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// readLoop reads messages until the connection ends, then closes the input
// pipes: with EOF after a normal close, with the error otherwise.
func (c *wsConn) readLoop() {
	var err error
	defer func() {
		for _, w := range c.inputs {
			if w != nil {
				_ = w.CloseWithError(err)
			}
		}
		close(c.readDone)
	}()
	for {
		var r io.Reader
		_, r, err = c.ws.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				err = nil
			}
			return
		}
		c.touch()
		if err = c.dispatch(r); err != nil {
			return
		}
	}
}

// dispatch routes one message by its channel. Data for a channel the session
// does not read, or no longer reads, is dropped.
func (c *wsConn) dispatch(r io.Reader) error {
	var head [1]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty message carries nothing
		}
		return err
	}
	channel := head[0]
	if c.proto.version >= 5 && channel == remotecommand.StreamClose {
		return c.closeSignal(r)
	}
	if c.proto.base64 {
		channel -= '0'
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	var dst io.Writer = io.Discard
	if int(channel) < len(c.inputs) && c.inputs[channel] != nil {
		dst = &dropOnError{w: c.inputs[channel]}
	}
	_, err := io.Copy(dst, r)
	return err
}

// closeSignal handles the v5 message [255, channel]: the client will send
// nothing more on channel, so the session reads EOF there.
func (c *wsConn) closeSignal(r io.Reader) error {
	body, err := io.ReadAll(io.LimitReader(r, 2))
	if err != nil {
		return err
	}
	if len(body) != 1 {
		return fmt.Errorf("close signal carries %d bytes, want 1", len(body))
	}
	if ch := int(body[0]); ch < len(c.inputs) && c.inputs[ch] != nil {
		_ = c.inputs[ch].Close()
	}
	return nil
}

// dropOnError writes to w until a write fails (the session closed that
// pipe), then discards, so that one message never fails the connection.
type dropOnError struct {
	w      io.Writer
	failed bool
}

func (d *dropOnError) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}

// wsWriter writes one channel; every Write is one message.
type wsWriter struct {
	c       *wsConn
	channel byte
}

func (w wsWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return w.c.send(w.channel, p)
}

func (c *wsConn) send(channel byte, p []byte) (int, error) {
	if d := time.Until(c.holdUntil); d > 0 {
		time.Sleep(d)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return 0, errSessionOver
	}
	if err := c.sendLocked(channel, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// clientSetupGrace is how long output waits after the upgrade. client-go's
// WebSocket executor (kubectl 1.30 and later) starts reading before it has
// registered its streams, and drops what arrives for a stream it does not
// know yet ("Unknown stream id 3, discarding message"): a session that
// fails at once, such as exec of a missing command, could lose its status
// and exit 0. The kubelet, behind the API server's proxy, is rarely that
// fast; moorage is.
const clientSetupGrace = 20 * time.Millisecond

// sendLocked writes one message on channel; wmu is held.
func (c *wsConn) sendLocked(channel byte, p []byte) error {
	if c.idle > 0 {
		_ = c.ws.SetWriteDeadline(time.Now().Add(c.idle))
	}
	kind := websocket.BinaryMessage
	if c.proto.base64 {
		kind = websocket.TextMessage
	}
	mw, err := c.ws.NextWriter(kind)
	if err != nil {
		return err
	}
	if c.proto.base64 {
		if _, err = mw.Write([]byte{'0' + channel}); err == nil {
			enc := base64.NewEncoder(base64.StdEncoding, mw)
			if _, err = enc.Write(p); err == nil {
				err = enc.Close()
			}
		}
	} else if _, err = mw.Write([]byte{channel}); err == nil {
		_, err = mw.Write(p)
	}
	if cerr := mw.Close(); err == nil {
		err = cerr
	}
	c.touch()
	return err
}

// close ends the session: it stops feeding the Executor's pipes, refuses
// further writes, sends a normal close frame (the client reads EOF on every
// channel only then), waits for the client's close reply, and closes.
func (c *wsConn) close() {
	for _, r := range c.readers {
		if r != nil {
			_ = r.CloseWithError(errSessionOver)
		}
	}
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
	deadline := time.Now().Add(closeGrace)
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline)
	t := time.NewTimer(time.Until(deadline))
	select {
	case <-c.readDone:
	case <-t.C:
	}
	t.Stop()
	close(c.stopIdle)
	_ = c.ws.Close()
}

// watchIdle closes the connection once no data message has gone either way
// for c.idle. Pings do not count: client-go sends them every few seconds.
func (c *wsConn) watchIdle() {
	t := time.NewTimer(c.idle)
	defer t.Stop()
	for {
		select {
		case <-c.stopIdle:
			return
		case <-t.C:
		}
		quiet := time.Since(time.Unix(0, c.lastActive.Load()))
		if quiet >= c.idle {
			_ = c.ws.Close() // readLoop fails, which cancels the session.
			return
		}
		t.Reset(c.idle - quiet)
	}
}
