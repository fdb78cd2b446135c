package loopback

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestBufferedResponse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(r.Method + " " + r.URL.RequestURI() + " " + string(body)))
	})
	c := &http.Client{Transport: &Transport{Handler: h}}
	resp, err := c.Post("http://in-process/api/v1/x?y=1", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "text/plain" || string(got) != "POST /api/v1/x?y=1 hello" {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, got)
	}
}

func TestStreamEndsHandlerOnClose(t *testing.T) {
	ended := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(ended)
		for i := 0; ; i++ {
			if _, err := io.WriteString(w, "event\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	c := &http.Client{Transport: &Transport{Handler: h}}
	resp, err := c.Get("http://in-process/watch")
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(resp.Body)
	for i := 0; i < 3; i++ {
		if !lines.Scan() || lines.Text() != "event" {
			t.Fatalf("line %d: %q %v", i, lines.Text(), lines.Err())
		}
	}
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still running after the client closed the stream")
	}
}

func TestRequestContextCancelsWait(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://in-process/slow", nil)
	if _, err := (&Transport{Handler: h}).RoundTrip(req); err == nil {
		t.Fatal("expected the request's deadline to end the round trip")
	}
}

func TestPanicIsAnError(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	resp, err := (&Transport{Handler: h}).RoundTrip(httptestRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func httptestRequest(t *testing.T) *http.Request {
	req, err := http.NewRequest(http.MethodGet, "http://in-process/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
