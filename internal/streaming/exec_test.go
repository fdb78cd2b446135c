package streaming_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	clientremotecommand "k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// Every client flavour moves stdin, stdout and stderr. Where the client can
// end its stdin (SPDY half-close, WebSocket v5 close signal) the executor
// reads stdin to EOF before answering, so the close must reach it.
func TestExecStreams(t *testing.T) {
	ts := newTestServer(t)
	for _, c := range allClients {
		t.Run(c.name, func(t *testing.T) {
			want := "no stdin"
			var opts clientremotecommand.StreamOptions
			streams := []string{"stdout", "stderr"}
			if c.stdinEOF {
				want = "HELLO, WORLD\n"
				opts.Stdin = strings.NewReader("hello, world\n")
				streams = append(streams, "stdin")
			}
			res := run(t, c, ts.url(t, "/exec", []string{"upper", "0"}, streams...), opts)
			if res.err != nil {
				t.Fatalf("err = %v", res.err)
			}
			if res.stdout != want || res.stderr != "to stderr" {
				t.Errorf("stdout, stderr = %q, %q; want %q, %q", res.stdout, res.stderr, want, "to stderr")
			}
		})
	}
}

// kubectl cp is exec of tar: binary stdin in, binary stdout out, and the
// output must be whole even though the executor returns right after writing
// its last byte.
func TestExecBinaryRoundTrip(t *testing.T) {
	ts := newTestServer(t)
	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	for _, c := range allClients {
		if !c.stdinEOF {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			opts := clientremotecommand.StreamOptions{Stdin: bytes.NewReader(payload), Stdout: &out}
			u := ts.url(t, "/exec", []string{"cat"}, "stdin", "stdout")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.dial(t, u).StreamWithContext(ctx, opts); err != nil {
				t.Fatalf("err = %v", err)
			}
			if !bytes.Equal(out.Bytes(), payload) {
				t.Errorf("got %d bytes back, want the %d sent", out.Len(), len(payload))
			}
		})
	}
}

// From v4 the exit code travels as a Status and client-go returns an
// exec.ExitError carrying it (kubectl exits with it); v2 and v3 only carry
// the message. v1 clients race their error stream against stdout and may
// drop the status, so they are left out.
func TestExecExitCode(t *testing.T) {
	ts := newTestServer(t)
	const message = "command terminated with non-zero exit code: error executing command [upper 3], exit code 3"
	for _, c := range allClients {
		if c.version < 2 {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			res := run(t, c, ts.url(t, "/exec", []string{"upper", "3"}, "stdout", "stderr"), clientremotecommand.StreamOptions{})
			if res.stdout != "no stdin" {
				t.Errorf("stdout = %q", res.stdout)
			}
			if c.version < 4 {
				if res.err == nil || !strings.Contains(res.err.Error(), message) {
					t.Fatalf("err = %v; want it to contain %q", res.err, message)
				}
				return
			}
			var exit exec.ExitError
			if !errors.As(res.err, &exit) {
				t.Fatalf("err = %v (%T); want an exec.ExitError", res.err, res.err)
			}
			if !exit.Exited() || exit.ExitStatus() != 3 {
				t.Errorf("exit status = %d (exited %t); want 3", exit.ExitStatus(), exit.Exited())
			}
		})
	}
}

func TestExecExecutorError(t *testing.T) {
	ts := newTestServer(t)
	const message = "Internal error occurred: error executing command in container: boom"
	for _, c := range allClients {
		if c.version < 2 {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			res := run(t, c, ts.url(t, "/exec", []string{"fail"}, "stdout"), clientremotecommand.StreamOptions{})
			var exit exec.ExitError
			switch {
			case res.err == nil:
				t.Fatal("err = nil")
			case errors.As(res.err, &exit):
				t.Fatalf("err = %v is an exit code", res.err)
			case c.version >= 4 && res.err.Error() != message:
				t.Errorf("err = %q; want %q", res.err, message)
			case !strings.Contains(res.err.Error(), message):
				t.Errorf("err = %q; want it to contain %q", res.err, message)
			}
		})
	}
}

// Attach reports no exit code, as in the kubelet, but does report errors.
func TestAttach(t *testing.T) {
	ts := newTestServer(t)
	for _, c := range []client{allClients[0], allClients[4]} {
		t.Run(c.name, func(t *testing.T) {
			res := run(t, c, ts.url(t, "/attach", []string{"upper", "3"}, "stdout"), clientremotecommand.StreamOptions{})
			if res.err != nil || res.stdout != "no stdin" {
				t.Errorf("stdout, err = %q, %v; want %q, nil", res.stdout, res.err, "no stdin")
			}
			res = run(t, c, ts.url(t, "/attach", []string{"fail"}, "stdout"), clientremotecommand.StreamOptions{})
			const want = "Internal error occurred: error attaching to container: boom"
			if res.err == nil || res.err.Error() != want {
				t.Errorf("err = %v; want %q", res.err, want)
			}
		})
	}
}

// sizeQueue hands the client a fixed list of terminal sizes.
type sizeQueue chan *clientremotecommand.TerminalSize

func (q sizeQueue) Next() *clientremotecommand.TerminalSize { return <-q }

func newSizeQueue(sizes ...clientremotecommand.TerminalSize) sizeQueue {
	q := make(sizeQueue, len(sizes))
	for i := range sizes {
		q <- &sizes[i]
	}
	close(q)
	return q
}

// With a terminal, window sizes reach the executor in order (a size it has
// not taken may be replaced by a newer one), and there is no stderr.
func TestTTYResize(t *testing.T) {
	ts := newTestServer(t)
	for _, c := range allClients {
		// Before v3 the client sends no sizes, even over WebSocket where
		// the server would take them.
		if c.version < 3 {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			opts := clientremotecommand.StreamOptions{
				Tty:               true,
				TerminalSizeQueue: newSizeQueue(clientremotecommand.TerminalSize{Width: 80, Height: 24}, clientremotecommand.TerminalSize{Width: 100, Height: 40}),
			}
			res := run(t, c, ts.url(t, "/exec", []string{"resize", "100", "40"}, "stdout", "tty"), opts)
			if res.err != nil {
				t.Fatalf("err = %v", res.err)
			}
			if res.stdout != "80x24\n100x40\n" && res.stdout != "100x40\n" {
				t.Errorf("sizes seen = %q; want 80x24 then 100x40", res.stdout)
			}
		})
	}
}

func TestSessionShape(t *testing.T) {
	ts := newTestServer(t)
	for _, c := range allClients {
		t.Run(c.name, func(t *testing.T) {
			res := run(t, c, ts.url(t, "/exec", []string{"describe"}, "stdout", "stderr"), clientremotecommand.StreamOptions{})
			if want := "stdin=false stderr=true tty=false resize=false"; res.err != nil || res.stdout != want {
				t.Errorf("stdout, err = %q, %v; want %q, nil", res.stdout, res.err, want)
			}
			// stderr=true is dropped with a terminal.
			res = run(t, c, ts.url(t, "/exec", []string{"describe"}, "stdout", "stderr", "tty"), clientremotecommand.StreamOptions{Tty: true})
			want := "stdin=false stderr=false tty=true resize=false"
			if c.resizable {
				want = "stdin=false stderr=false tty=true resize=true"
			}
			if res.err != nil || res.stdout != want {
				t.Errorf("tty: stdout, err = %q, %v; want %q, nil", res.stdout, res.err, want)
			}
		})
	}
}

// A client that goes away cancels the executor's context.
func TestClientDisconnectCancels(t *testing.T) {
	ts := newTestServer(t)
	for _, c := range []client{allClients[0], allClients[4]} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- c.dial(t, ts.url(t, "/exec", []string{"block"}, "stdout")).StreamWithContext(ctx, clientremotecommand.StreamOptions{Stdout: io.Discard})
			}()
			waitFor(t, ts.started, 10*time.Second, "the session to start")
			cancel()
			if err := waitFor(t, done, 10*time.Second, "the client to return"); !errors.Is(err, context.Canceled) {
				t.Errorf("client err = %v", err)
			}
			if err := waitFor(t, ts.finished, 10*time.Second, "the executor's context to end"); !errors.Is(err, context.Canceled) {
				t.Errorf("executor ctx.Err() = %v", err)
			}
		})
	}
}

// A connection that carries no data for the idle timeout is closed, which
// cancels the executor's context; client-go's WebSocket pings do not count.
func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t)
	ts.mu.Lock()
	ts.idle = 300 * time.Millisecond
	ts.mu.Unlock()
	for _, c := range []client{allClients[0], allClients[4]} {
		t.Run(c.name, func(t *testing.T) {
			// The client sees the connection drop; what it makes of that
			// differs by transport.
			_ = run(t, c, ts.url(t, "/exec", []string{"block"}, "stdout"), clientremotecommand.StreamOptions{})
			if err := waitFor(t, ts.finished, 10*time.Second, "the executor's context to end"); !errors.Is(err, context.Canceled) {
				t.Errorf("executor ctx.Err() = %v", err)
			}
		})
	}
}

// kubectl 1.30+ tries WebSocket first and falls back to SPDY when the
// upgrade is refused; a subprotocol we do not serve must be refused.
func TestFallbackToSPDY(t *testing.T) {
	ts := newTestServer(t)
	c := fallbackClient("v9.channel.k8s.io")
	res := run(t, c, ts.url(t, "/exec", []string{"upper", "0"}, "stdin", "stdout"), clientremotecommand.StreamOptions{Stdin: strings.NewReader("abc")})
	if res.err != nil || res.stdout != "ABC" {
		t.Errorf("stdout, err = %q, %v; want %q, nil", res.stdout, res.err, "ABC")
	}
	got := ts.upgradeHeaders()
	if len(got) != 2 || !strings.EqualFold(got[0], "websocket") || got[1] != "SPDY/3.1" {
		t.Errorf("Upgrade headers = %q; want websocket then SPDY/3.1", got)
	}
}
