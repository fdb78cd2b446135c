package streaming_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"

	"github.com/moorage/moorage/internal/streaming"
)

// These tests speak the protocols by hand, where client-go has no client:
// base64 WebSocket framing, refused upgrades, a client that never opens its
// streams.

func wsURL(ts *testServer, t *testing.T, cmd []string, streams ...string) string {
	return "ws" + strings.TrimPrefix(ts.url(t, "/exec", cmd, streams...).String(), "http")
}

func TestWebSocketBase64(t *testing.T) {
	ts := newTestServer(t)
	d := websocket.Dialer{Subprotocols: []string{"v4.base64.channel.k8s.io"}}
	ws, resp, err := d.Dial(wsURL(ts, t, []string{"line"}, "stdin", "stdout"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "v4.base64.channel.k8s.io" {
		t.Fatalf("negotiated %q", got)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	read := func() (byte, string) {
		t.Helper()
		kind, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if kind != websocket.TextMessage || len(msg) == 0 {
			t.Fatalf("message type %d, %d bytes; want base64 text", kind, len(msg))
		}
		data, err := base64.StdEncoding.DecodeString(string(msg[1:]))
		if err != nil {
			t.Fatalf("decode %q: %v", msg, err)
		}
		return msg[0], string(data)
	}

	if ch, data := read(); ch != '1' || data != "" {
		t.Errorf("ready message = %c %q; want an empty stdout message", ch, data)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("0"+base64.StdEncoding.EncodeToString([]byte("hey\n")))); err != nil {
		t.Fatal(err)
	}
	if ch, data := read(); ch != '1' || data != "HEY\n" {
		t.Errorf("output = %c %q; want stdout %q", ch, data, "HEY\n")
	}
	ch, data := read()
	var st metav1.Status
	if err := json.Unmarshal([]byte(data), &st); ch != '3' || err != nil || st.Status != metav1.StatusSuccess {
		t.Errorf("status = %c %q; want a Success Status on channel 3", ch, data)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after the status: %v; want a normal close", err)
	}
}

// A v5 client half-closes stdin with [255, 0] and keeps the session: the
// executor sees EOF and still writes its answer.
func TestWebSocketCloseSignal(t *testing.T) {
	ts := newTestServer(t)
	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}}
	ws, _, err := d.Dial(wsURL(ts, t, []string{"upper", "7"}, "stdin", "stdout"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, msg := range [][]byte{{0, 'o', 'k'}, {255, 0}} {
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Errorf("end: %v; want a normal close", err)
			}
			break
		}
		got = append(got, string(msg))
	}
	want := []string{"\x01", "\x01OK",
		"\x03" + `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [upper 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("messages =\n%q\nwant\n%q", got, want)
	}
}

func TestWebSocketRefusesUnknownSubprotocol(t *testing.T) {
	ts := newTestServer(t)
	d := websocket.Dialer{Subprotocols: []string{"v9.channel.k8s.io"}}
	_, resp, err := d.Dial(wsURL(ts, t, []string{"upper"}, "stdout"), nil)
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("dial err = %v; want a refused handshake", err)
	}
	defer resp.Body.Close()
	var st metav1.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || st.Reason != metav1.StatusReasonBadRequest || !strings.Contains(st.Message, "v5.channel.k8s.io") {
		t.Errorf("got %d %+v; want a 400 BadRequest Status naming what is served", resp.StatusCode, st)
	}
	select {
	case <-ts.calls:
		t.Error("the executor ran")
	default:
	}
}

func TestNotAnUpgrade(t *testing.T) {
	ts := newTestServer(t)
	resp, err := http.Post(ts.url(t, "/exec", []string{"upper"}, "stdout").String(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d; want 400", resp.StatusCode)
	}
}

// An SPDY client that does not open the streams it promised is given up on
// after the stream creation timeout, told why if it opened an error stream,
// and the executor never runs.
func TestSPDYStreamCreationTimeout(t *testing.T) {
	ts := newTestServer(t)
	ts.mu.Lock()
	ts.creation = 200 * time.Millisecond
	ts.mu.Unlock()
	u := ts.url(t, "/exec", []string{"upper"}, "stdin", "stdout")
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, protocol, err := spdy.Negotiate(upgrader, &http.Client{Transport: transport}, req, "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if protocol != "v4.channel.k8s.io" {
		t.Fatalf("negotiated %q", protocol)
	}
	errStream, err := conn.CreateStream(http.Header{corev1.StreamType: {corev1.StreamTypeError}})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(errStream)
	if err != nil {
		t.Fatal(err)
	}
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil || !strings.Contains(st.Message, "timed out waiting for client to create streams") {
		t.Errorf("error stream = %q; want a timeout Status", body)
	}
	select {
	case <-conn.CloseChan():
	case <-time.After(10 * time.Second):
		t.Error("server kept the connection")
	}
	select {
	case <-ts.calls:
		t.Error("the executor ran")
	default:
	}
}

func TestOptionsFromRequest(t *testing.T) {
	tests := []struct {
		query string
		want  streaming.Options
		err   string
	}{
		{query: "stdin=true&stdout=true&stderr=true&command=ls&command=-l",
			want: streaming.Options{Stdin: true, Stdout: true, Stderr: true, Command: []string{"ls", "-l"}}},
		// The API server's spelling of the kubelet URL.
		{query: "input=1&output=1&error=1&command=sh",
			want: streaming.Options{Stdin: true, Stdout: true, Stderr: true, Command: []string{"sh"}}},
		{query: "stdout=true&stderr=true&tty=true",
			want: streaming.Options{Stdout: true, TTY: true}},
		{query: "stdin=false&stdout=1",
			want: streaming.Options{Stdout: true}},
		{query: "command=ls", err: "you must specify at least 1 of stdin, stdout, stderr"},
		{query: "tty=true&stderr=true", err: "you must specify at least 1 of stdin, stdout, stderr"},
		{query: "stdout=yes", err: `invalid value "yes" for query parameter "stdout"`},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/exec?"+tt.query, nil)
		got, err := streaming.OptionsFromRequest(r)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err = %v; want %q", tt.query, err, tt.err)
			}
		case err != nil:
			t.Errorf("%s: err = %v", tt.query, err)
		case !reflect.DeepEqual(got, tt.want):
			t.Errorf("%s: got %+v; want %+v", tt.query, got, tt.want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/exec", nil)
	if _, err := streaming.OptionsFromRequest(r); !errors.Is(err, streaming.ErrNoStreams) {
		t.Errorf("no streams: err = %v; want ErrNoStreams", err)
	}
}
