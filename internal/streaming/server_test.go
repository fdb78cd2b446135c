package streaming_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	clientremotecommand "k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/moorage/moorage/internal/streaming"
)

// testServer is an httptest server whose handler serves exec (and attach on
// /attach) with testExecutor. The command line picks the behaviour.
type testServer struct {
	*httptest.Server
	idle, creation time.Duration

	mu       sync.Mutex
	upgrades []string // Upgrade header of each request, in order

	started  chan struct{} // "block" sessions signal here when running
	finished chan error    // "block" sessions send ctx.Err() here
	calls    chan struct{} // every Executor call signals here
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ts := &testServer{
		creation: 5 * time.Second,
		started:  make(chan struct{}, 10),
		finished: make(chan error, 10),
		calls:    make(chan struct{}, 100),
	}
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.handle))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *testServer) handle(w http.ResponseWriter, r *http.Request) {
	ts.mu.Lock()
	ts.upgrades = append(ts.upgrades, r.Header.Get("Upgrade"))
	idle, creation := ts.idle, ts.creation
	ts.mu.Unlock()
	opts, err := streaming.OptionsFromRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	exec := ts.executor(opts.Command)
	if r.URL.Path == "/attach" {
		streaming.ServeAttach(w, r, opts, exec, idle, creation)
		return
	}
	streaming.ServeExec(w, r, opts, exec, idle, creation)
}

func (ts *testServer) upgradeHeaders() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.upgrades...)
}

// executor returns the test Executor for a command line:
//
//	upper CODE   read stdin to EOF (if any), write it uppercased to stdout
//	             (or "no stdin"), "to stderr" to stderr, exit CODE
//	cat          copy stdin to stdout
//	line         copy one line of stdin, uppercased, to stdout
//	resize W H   print each size received as "WxH" until W x H arrives
//	describe     print which streams the session has
//	block        wait for ctx to be cancelled, report ctx.Err()
//	fail         return an error
func (ts *testServer) executor(cmd []string) streaming.Executor {
	return func(ctx context.Context, s streaming.Session) (int, error) {
		ts.calls <- struct{}{}
		if len(cmd) == 0 {
			return 0, errors.New("no command")
		}
		switch cmd[0] {
		case "upper":
			out := "no stdin"
			if s.Stdin != nil {
				in, err := io.ReadAll(s.Stdin)
				if err != nil {
					return 0, err
				}
				out = strings.ToUpper(string(in))
			}
			if s.Stdout != nil {
				fmt.Fprint(s.Stdout, out)
			}
			if s.Stderr != nil {
				fmt.Fprint(s.Stderr, "to stderr")
			}
			code := 0
			if len(cmd) > 1 {
				code, _ = strconv.Atoi(cmd[1])
			}
			return code, nil
		case "cat":
			_, err := io.Copy(s.Stdout, s.Stdin)
			return 0, err
		case "line":
			line, err := bufio.NewReader(s.Stdin).ReadString('\n')
			if err != nil {
				return 0, err
			}
			_, err = io.WriteString(s.Stdout, strings.ToUpper(line))
			return 0, err
		case "resize":
			want := cmd[1] + "x" + cmd[2]
			for size := range s.Resize {
				got := fmt.Sprintf("%dx%d", size.Width, size.Height)
				fmt.Fprintln(s.Stdout, got)
				if got == want {
					return 0, nil
				}
			}
			return 1, nil
		case "describe":
			fmt.Fprintf(s.Stdout, "stdin=%t stderr=%t tty=%t resize=%t",
				s.Stdin != nil, s.Stderr != nil, s.TTY, s.Resize != nil)
			return 0, nil
		case "block":
			ts.started <- struct{}{}
			<-ctx.Done()
			ts.finished <- ctx.Err()
			return 0, ctx.Err()
		case "fail":
			return 0, errors.New("boom")
		}
		return 0, fmt.Errorf("unknown test command %q", cmd[0])
	}
}

// url builds a request URL for path with the command and stream flags.
func (ts *testServer) url(t *testing.T, path string, cmd []string, streams ...string) *url.URL {
	t.Helper()
	q := url.Values{"command": cmd}
	for _, s := range streams {
		q.Set(s, "true")
	}
	u, err := url.Parse(ts.URL + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// client is one real client-go executor flavour.
type client struct {
	name      string
	version   int  // remote command protocol version negotiated
	stdinEOF  bool // the client can tell the server its stdin ended
	resizable bool // the server offers Resize (the v1 client never sends sizes)
	dial      func(t *testing.T, u *url.URL) clientremotecommand.Executor
}

func spdyClient(protocol string, version int) client {
	return client{
		name:    "spdy/" + protocol,
		version: version,
		// The v1 client never half-closes stdin.
		stdinEOF:  version > 1,
		resizable: version >= 3,
		dial: func(t *testing.T, u *url.URL) clientremotecommand.Executor {
			t.Helper()
			transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
			if err != nil {
				t.Fatal(err)
			}
			e, err := clientremotecommand.NewSPDYExecutorForProtocols(transport, upgrader, http.MethodPost, u, protocol)
			if err != nil {
				t.Fatal(err)
			}
			return e
		},
	}
}

func wsClient(protocol string, version int) client {
	return client{
		name:    "websocket/" + protocol,
		version: version,
		// Only v5 has the close signal; before it a WebSocket client
		// cannot end stdin without ending the session.
		stdinEOF:  version >= 5,
		resizable: true,
		dial: func(t *testing.T, u *url.URL) clientremotecommand.Executor {
			t.Helper()
			e, err := clientremotecommand.NewWebSocketExecutorForProtocols(&rest.Config{Host: u.Host}, http.MethodGet, u.String(), protocol)
			if err != nil {
				t.Fatal(err)
			}
			return e
		},
	}
}

// fallbackClient is what kubectl 1.30+ does: WebSocket v5 first, SPDY if the
// upgrade fails.
func fallbackClient(wsProtocol string) client {
	ws, sp := wsClient(wsProtocol, 5), spdyClient(remotecommand.StreamProtocolV5Name, 5)
	return client{
		name: "fallback/" + wsProtocol, version: 5, stdinEOF: true, resizable: true,
		dial: func(t *testing.T, u *url.URL) clientremotecommand.Executor {
			t.Helper()
			e, err := clientremotecommand.NewFallbackExecutor(ws.dial(t, u), sp.dial(t, u), httpstream.IsUpgradeFailure)
			if err != nil {
				t.Fatal(err)
			}
			return e
		},
	}
}

var allClients = []client{
	wsClient(remotecommand.StreamProtocolV5Name, 5),
	wsClient(remotecommand.StreamProtocolV4Name, 4),
	wsClient(remotecommand.StreamProtocolV1Name, 1),
	spdyClient(remotecommand.StreamProtocolV5Name, 5),
	spdyClient(remotecommand.StreamProtocolV4Name, 4),
	spdyClient(remotecommand.StreamProtocolV3Name, 3),
	spdyClient(remotecommand.StreamProtocolV2Name, 2),
	spdyClient(remotecommand.StreamProtocolV1Name, 1),
}

// result is what a client saw of one session.
type result struct {
	stdout, stderr string
	err            error
}

// run streams one session with the client and a timeout; opts gives
// stdin, tty and sizes, run adds stdout and stderr as the URL asks.
func run(t *testing.T, c client, u *url.URL, opts clientremotecommand.StreamOptions) result {
	t.Helper()
	// The client opens the streams the URL asks for, no more, no less.
	var stdout, stderr strings.Builder
	q := u.Query()
	if q.Get("stdout") == "true" {
		opts.Stdout = &stdout
	}
	if q.Get("stderr") == "true" && !opts.Tty {
		opts.Stderr = &stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.dial(t, u).StreamWithContext(ctx, opts)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: session did not end", c.name)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// waitFor fails the test if ch yields nothing within d.
func waitFor[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}
