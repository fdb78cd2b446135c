// Package loopback lets the server's own clients (its controllers) call its
// HTTP handler in-process: an http.RoundTripper that runs the handler
// directly, with no socket, TLS or HTTP/2 framing between them. Requests and
// responses are the same bytes as over the network, so a controller cannot
// tell the difference, but a write costs less CPU.
//
// A response is buffered until the handler returns (the common case: one
// allocation, no goroutine hand-off for the body) or until it flushes
// (watches and other streams), from which point the body is a pipe and the
// handler's writes reach the client as they happen. Closing the body of a
// streaming response cancels the handler's context, as a client hanging up
// would. Connection upgrades (exec, attach, port-forward) are not supported.
package loopback

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// Transport serves requests with Handler.
type Transport struct {
	Handler http.Handler
	// BaseContext, if set, is the parent of every request's context (the
	// server's lifetime), as http.Server.BaseContext is.
	BaseContext func() context.Context
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	parent := context.Background()
	if t.BaseContext != nil {
		parent = t.BaseContext()
	}
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(req.Context(), cancel)
	in := req.Clone(ctx)
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:0"
	in.Proto, in.ProtoMajor, in.ProtoMinor = "HTTP/1.1", 1, 1

	w := &responseWriter{header: http.Header{}, ready: make(chan struct{})}
	go func() {
		defer func() {
			var err error
			if p := recover(); p != nil {
				err = fmt.Errorf("loopback: handler panicked: %v", p)
			}
			w.finish(err)
			if w.pipe == nil {
				cancel()
			}
		}()
		t.Handler.ServeHTTP(w, in)
	}()

	select {
	case <-w.ready:
	case <-req.Context().Done():
		stop()
		cancel()
		return nil, req.Context().Err()
	}
	resp := &http.Response{
		Status:     http.StatusText(w.status),
		StatusCode: w.status,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  w.sent,
		Request: req,
	}
	if w.pipe != nil {
		resp.ContentLength = -1
		resp.Body = &streamBody{r: w.pipeReader, done: func() { stop(); cancel() }}
		return resp, nil
	}
	stop()
	resp.ContentLength = int64(w.buf.Len())
	resp.Body = io.NopCloser(bytes.NewReader(w.buf.Bytes()))
	return resp, nil
}

// responseWriter buffers a response until it is complete or flushed.
type responseWriter struct {
	header http.Header
	sent   http.Header
	status int

	mu         sync.Mutex
	buf        bytes.Buffer
	pipe       *io.PipeWriter
	pipeReader *io.PipeReader
	ready      chan struct{}
	done       bool
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = code
		w.sent = w.header.Clone()
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	pipe := w.pipe
	if pipe == nil {
		defer w.mu.Unlock()
		return w.buf.Write(p)
	}
	w.mu.Unlock()
	return pipe.Write(p)
}

// Flush turns the response into a stream: the client gets the headers now
// and every later write as it happens.
func (w *responseWriter) Flush() {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	if w.pipe != nil || w.done {
		w.mu.Unlock()
		return
	}
	w.pipeReader, w.pipe = io.Pipe()
	pending := bytes.Clone(w.buf.Bytes())
	w.buf.Reset()
	close(w.ready)
	pipe := w.pipe
	w.mu.Unlock()
	if len(pending) > 0 {
		_, _ = pipe.Write(pending)
	}
}

// finish ends the response when the handler returns.
func (w *responseWriter) finish(err error) {
	w.WriteHeader(http.StatusOK)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	if w.pipe != nil {
		_ = w.pipe.CloseWithError(err)
		return
	}
	if err != nil {
		w.status = http.StatusInternalServerError
	}
	close(w.ready)
}

// streamBody is a streaming response's body; closing it hangs up.
type streamBody struct {
	r    *io.PipeReader
	once sync.Once
	done func()
}

func (b *streamBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *streamBody) Close() error {
	b.once.Do(func() {
		_ = b.r.Close()
		b.done()
	})
	return nil
}
