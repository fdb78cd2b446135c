package streaming_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	pfconst "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/moorage/moorage/internal/streaming"
)

// pfServer serves ServePortForward for pod "pod-uid" on an httptest
// server; the "pod" is this host's loopback.
type pfServer struct {
	*httptest.Server
	creation time.Duration

	mu       sync.Mutex
	upgrades []string      // Upgrade header of each request
	ended    chan struct{} // a ServePortForward call returned
}

func newPFServer(t *testing.T, creation time.Duration) *pfServer {
	t.Helper()
	ps := &pfServer{creation: creation, ended: make(chan struct{}, 100)}
	ps.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.mu.Lock()
		ps.upgrades = append(ps.upgrades, r.Header.Get("Upgrade"))
		ps.mu.Unlock()
		streaming.ServePortForward(w, r, "pod-uid", func(ctx context.Context, port int32) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		}, 0, ps.creation)
		ps.ended <- struct{}{}
	}))
	t.Cleanup(ps.Close)
	return ps
}

func (ps *pfServer) url(t *testing.T) *url.URL {
	t.Helper()
	u, err := url.Parse(ps.URL + "/portForward/default/p")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (ps *pfServer) upgradeHeaders() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]string(nil), ps.upgrades...)
}

// echoServer listens on 127.0.0.1 and echoes what each connection sends;
// at the client's EOF it half-closes, so the client reads EOF too.
func echoServer(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			})
		}
	})
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// closedPort is a port nothing listens on.
func closedPort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return int32(port)
}

// The dialers of client-go that kubectl uses.
func spdyDialer(t *testing.T, u *url.URL) httpstream.Dialer {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	return spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
}

func tunnelDialer(t *testing.T, u *url.URL) httpstream.Dialer {
	t.Helper()
	d, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{Host: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// kubectlDialer is kubectl 1.31 and later: the WebSocket tunnel first,
// plain SPDY if the upgrade fails.
func kubectlDialer(t *testing.T, u *url.URL) httpstream.Dialer {
	return portforward.NewFallbackDialer(tunnelDialer(t, u), spdyDialer(t, u), func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

var pfDialers = []struct {
	name    string
	dial    func(*testing.T, *url.URL) httpstream.Dialer
	upgrade string // the Upgrade header the server sees
}{
	{"spdy", spdyDialer, "SPDY/3.1"},
	{"websocket", tunnelDialer, "websocket"},
	{"kubectl", kubectlDialer, "websocket"},
}

// forwardSession is client-go's PortForwarder on a random local port.
type forwardSession struct {
	local uint16
	stop  chan struct{}
	done  chan error // ForwardPorts' result
}

func startForward(t *testing.T, d httpstream.Dialer, remote int32) *forwardSession {
	t.Helper()
	s := &forwardSession{stop: make(chan struct{}), done: make(chan error, 1)}
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddresses(d, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remote)}, s.stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-s.done:
		t.Fatalf("ForwardPorts: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("port forwarding never became ready")
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	s.local = ports[0].Local
	t.Cleanup(s.close)
	return s
}

func (s *forwardSession) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}

// roundTrip sends msg through the local port, half-closes, and returns
// everything read back until EOF.
func roundTrip(local uint16, msg []byte) ([]byte, error) {
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(local))))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return got, err
	}
	return got, <-werr
}

// TestPortForwardEcho: client-go's PortForwarder, over each transport,
// carries several concurrent connections to a real TCP server, both ways
// and with half-closes; stopping it ends the server's session.
func TestPortForwardEcho(t *testing.T) {
	for _, d := range pfDialers {
		t.Run(d.name, func(t *testing.T) {
			ps := newPFServer(t, 0)
			s := startForward(t, d.dial(t, ps.url(t)), echoServer(t))
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					msg := make([]byte, 64<<10+i)
					_, _ = rand.Read(msg)
					got, err := roundTrip(s.local, msg)
					if err != nil {
						t.Errorf("connection %d: %v", i, err)
					} else if !bytes.Equal(got, msg) {
						t.Errorf("connection %d: got %d bytes back, want the %d sent", i, len(got), len(msg))
					}
				})
			}
			wg.Wait()
			// Connections one after another on the same session.
			for i := range 3 {
				if got, err := roundTrip(s.local, []byte("again")); err != nil || string(got) != "again" {
					t.Errorf("sequential connection %d: %q, %v", i, got, err)
				}
			}
			if got := ps.upgradeHeaders(); len(got) != 1 || got[0] != d.upgrade {
				t.Errorf("Upgrade headers = %q, want [%q]", got, d.upgrade)
			}
			s.close()
			if err := waitFor(t, s.done, 10*time.Second, "ForwardPorts to return"); err != nil {
				t.Errorf("ForwardPorts: %v", err)
			}
			waitFor(t, ps.ended, 10*time.Second, "ServePortForward to return")
		})
	}
}

// rawConn opens a port-forward connection without client-go's forwarder.
func rawConn(t *testing.T, d httpstream.Dialer) httpstream.Connection {
	t.Helper()
	conn, protocol, err := d.Dial(pfconst.PortForwardV1Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if protocol != pfconst.PortForwardV1Name {
		t.Fatalf("negotiated %q", protocol)
	}
	return conn
}

// openPair opens the error and data streams of one forwarded connection;
// requestID "" leaves the header out, as clients before it did.
func openPair(conn httpstream.Connection, requestID, port string) (data, errs httpstream.Stream, err error) {
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, port)
	if requestID != "" {
		h.Set(corev1.PortForwardRequestIDHeader, requestID)
	}
	if errs, err = conn.CreateStream(h); err != nil {
		return nil, nil, err
	}
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	if data, err = conn.CreateStream(h); err != nil {
		return nil, errs, err
	}
	return data, errs, nil
}

// TestPortForwardRefused: a port nothing listens on is reported on the
// error stream in the kubelet's words, over both transports; client-go
// (as kubectl) then ends the session.
func TestPortForwardRefused(t *testing.T) {
	for _, d := range pfDialers[:2] {
		t.Run(d.name, func(t *testing.T) {
			ps := newPFServer(t, 0)
			port := closedPort(t)
			conn := rawConn(t, d.dial(t, ps.url(t)))
			data, errs, err := openPair(conn, "0", strconv.Itoa(int(port)))
			if err != nil {
				t.Fatal(err)
			}
			msg, err := io.ReadAll(errs)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("error forwarding port %d to pod pod-uid, uid : dial tcp 127.0.0.1:%d: connect: connection refused", port, port)
			if string(msg) != want {
				t.Errorf("error stream:\n got %q\nwant %q", msg, want)
			}
			if b, err := io.ReadAll(data); err != nil || len(b) != 0 {
				t.Errorf("data stream: %q, %v; want EOF", b, err)
			}

			s := startForward(t, d.dial(t, ps.url(t)), port)
			if got, err := roundTrip(s.local, []byte("hello")); len(got) != 0 {
				t.Errorf("read %q (%v) from a refused port", got, err)
			}
			if err := waitFor(t, s.done, 10*time.Second, "ForwardPorts to return"); !errors.Is(err, portforward.ErrLostConnectionToPod) {
				t.Errorf("ForwardPorts = %v, want %v", err, portforward.ErrLostConnectionToPod)
			}
		})
	}
}

// TestPortForwardRawPairs: pairs are matched by requestID (in any order and
// interleaved) or, without it, by stream ID; a stream with a bad port or
// type is refused; a pair whose second stream never comes times out with a
// message on its error stream, and the connection goes on.
func TestPortForwardRawPairs(t *testing.T) {
	ps := newPFServer(t, 300*time.Millisecond)
	port := strconv.Itoa(int(echoServer(t)))
	conn := rawConn(t, spdyDialer(t, ps.url(t)))

	echo := func(name string, data, errs httpstream.Stream) {
		t.Helper()
		if _, err := io.WriteString(data, "ping "+name); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = data.Close()
		got, err := io.ReadAll(data)
		if err != nil || string(got) != "ping "+name {
			t.Errorf("%s: echoed %q, %v", name, got, err)
		}
		if msg, err := io.ReadAll(errs); err != nil || len(msg) != 0 {
			t.Errorf("%s: error stream %q, %v", name, msg, err)
		}
	}
	data, errs, err := openPair(conn, "", port)
	if err != nil {
		t.Fatal(err)
	}
	echo("no requestID", data, errs)

	// Two pairs opened interleaved, data stream first.
	h := func(kind, id string) http.Header {
		return http.Header{corev1.StreamType: {kind}, corev1.PortHeader: {port}, corev1.PortForwardRequestIDHeader: {id}}
	}
	var streams []httpstream.Stream
	for _, hd := range []http.Header{h("data", "7"), h("data", "8"), h("error", "8"), h("error", "7")} {
		s, err := conn.CreateStream(hd)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	echo("request 8", streams[1], streams[2])
	echo("request 7", streams[0], streams[3])

	for _, bad := range []http.Header{
		{corev1.StreamType: {"error"}, corev1.PortHeader: {"0"}},
		{corev1.StreamType: {"error"}, corev1.PortHeader: {"65536"}},
		{corev1.StreamType: {"error"}, corev1.PortHeader: {"http"}},
		{corev1.StreamType: {"error"}},
		{corev1.StreamType: {"stdin"}, corev1.PortHeader: {port}},
	} {
		if _, err := conn.CreateStream(bad); err == nil {
			t.Errorf("stream with headers %v was accepted", bad)
		}
	}

	errs, err = conn.CreateStream(h("error", "9"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := io.ReadAll(errs)
	if err != nil || !strings.Contains(string(msg), "timed out waiting for streams") {
		t.Errorf("lone error stream: %q, %v; want a timeout", msg, err)
	}
	data, errs, err = openPair(conn, "10", port)
	if err != nil {
		t.Fatal(err)
	}
	echo("after the timeout", data, errs)
}

// TestPortForwardBadRequests: ports named in the query are checked as the
// kubelet checks them; a WebSocket without the tunnelling subprotocol and a
// request that is no upgrade are refused with a 400.
func TestPortForwardBadRequests(t *testing.T) {
	ps := newPFServer(t, 0)
	for query, want := range map[string]string{
		"port=0":             `port \"0\" must be \u003e 0`,
		"port=80,70000":      `unable to parse \"70000\" as a port`,
		"port=":              `query parameter \"port\" cannot be empty`,
		"ports=8080&ports=x": `unable to parse \"x\" as a port`,
	} {
		resp, err := http.Post(ps.URL+"/portForward/default/p?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), want) {
			t.Errorf("?%s: %d %s; want 400 with %s", query, resp.StatusCode, body, want)
		}
	}
	resp, err := http.Post(ps.URL+"/portForward/default/p", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no upgrade: %d, want 400", resp.StatusCode)
	}

	d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(ps.URL, "http")+"/portForward/default/p?port=80", nil)
	if err == nil {
		ws.Close()
		t.Fatal("a WebSocket without the SPDY tunnel subprotocol was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("WebSocket without the tunnel subprotocol: %v, %v; want 400", resp, err)
	}
}

// TestPortForwardKubectl runs the real `kubectl port-forward` of every
// version at hand against ServePortForward behind the fake API server of
// TestKubectl: 1.27 to 1.30 speak SPDY, 1.31 and later tunnel it through a
// WebSocket. With nothing listening, kubectl prints the kubelet's message
// and gives up.
func TestPortForwardKubectl(t *testing.T) {
	var versions []int
	for minor := 27; minor <= 33; minor++ {
		if _, err := os.Stat(filepath.Join(kubectlDir, fmt.Sprintf("kubectl.1.%d", minor))); err == nil {
			versions = append(versions, minor)
		}
	}
	if len(versions) == 0 {
		t.Skipf("no kubectl.1.* in %s", kubectlDir)
	}
	ps := newPFServer(t, 0)
	fake := &fakeAPIServer{}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/namespaces/default/pods/p/portforward" {
			ps.Config.Handler.ServeHTTP(w, r)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(api.Close)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
contexts: [{name: c, context: {cluster: c, namespace: default}}]
current-context: c
`, api.URL)
	if err := os.WriteFile(kubeconfig, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	echo := echoServer(t)
	forwarding := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> \d+`)

	// portForward starts kubectl port-forward to remote on a random local
	// port and returns that port and the process (killed at the end).
	portForward := func(t *testing.T, minor int, remote int32) (uint16, *kubectlProc) {
		t.Helper()
		cmd := exec.Command(filepath.Join(kubectlDir, fmt.Sprintf("kubectl.1.%d", minor)), "--kubeconfig", kubeconfig,
			"port-forward", "--address", "127.0.0.1", "pod/p", fmt.Sprintf(":%d", remote))
		cmd.Env = append(os.Environ(), "HOME="+dir, fmt.Sprintf("KUBECACHEDIR=%s/cache-%d", dir, minor))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // even if the test dies
		p := &kubectlProc{exited: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = &p.out, &p.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.err = cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-p.exited
		})
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if m := forwarding.FindStringSubmatch(p.out.String()); m != nil {
				port, _ := strconv.Atoi(m[1])
				return uint16(port), p
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("kubectl 1.%d port-forward never said it was forwarding:\n%s", minor, p.out.String())
		return 0, nil
	}

	for _, minor := range versions {
		t.Run(fmt.Sprintf("1.%d", minor), func(t *testing.T) {
			ps.mu.Lock()
			ps.upgrades = nil
			ps.mu.Unlock()
			local, p := portForward(t, minor, echo)
			for i := range 2 {
				msg := fmt.Sprintf("hello %d from kubectl 1.%d", i, minor)
				if got, err := roundTrip(local, []byte(msg)); err != nil || string(got) != msg {
					t.Errorf("through kubectl: %q, %v; want %q\n%s", got, err, msg, p.out.String())
				}
			}
			want := "SPDY/3.1"
			if minor >= 31 {
				want = "websocket"
			}
			if got := ps.upgradeHeaders(); len(got) != 1 || got[0] != want {
				t.Errorf("Upgrade headers = %q, want [%q]", got, want)
			}

			// Nothing listens: kubectl prints the kubelet's message, ends
			// the session and exits 1.
			port := closedPort(t)
			local, p = portForward(t, minor, port)
			_, _ = roundTrip(local, []byte("anyone?"))
			select {
			case <-p.exited:
				if p.err == nil {
					t.Errorf("kubectl exited 0")
				}
			case <-time.After(10 * time.Second):
				t.Errorf("kubectl still runs")
			}
			refused := fmt.Sprintf("error forwarding port %d to pod pod-uid, uid : dial tcp 127.0.0.1:%d: connect: connection refused", port, port)
			for _, w := range []string{refused, "lost connection to pod"} {
				if !strings.Contains(p.out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, p.out.String())
				}
			}
		})
	}
}

// kubectlProc is a kubectl running in the background.
type kubectlProc struct {
	out    syncBuf
	exited chan struct{} // closed when it has exited, with err set
	err    error
}

// syncBuf is a bytes.Buffer safe for a process's output and a reader.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
