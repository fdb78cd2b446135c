package container

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fixedClock returns t0, t0+1s, t0+2s, ...
func fixedClock(t0 time.Time) func() time.Time {
	n := 0
	return func() time.Time {
		n++
		return t0.Add(time.Duration(n-1) * time.Second)
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)

func TestCRIWriterFormatsLines(t *testing.T) {
	var buf bytes.Buffer
	w := newCRIWriter(&buf)
	w.now = fixedClock(t0)
	long := strings.Repeat("x", maxLogLine+10)
	in := "hello\r\nworld\n" + long + "\nno newline"
	if err := w.copyLines(strings.NewReader(in), "stdout"); err != nil {
		t.Fatal(err)
	}
	want := "2026-01-02T03:04:05.600000000Z stdout F hello\n" +
		"2026-01-02T03:04:06.600000000Z stdout F world\n" +
		"2026-01-02T03:04:07.600000000Z stdout P " + long[:maxLogLine] + "\n" +
		"2026-01-02T03:04:08.600000000Z stdout F " + long[maxLogLine:] + "\n" +
		"2026-01-02T03:04:09.600000000Z stdout F no newline\n"
	if buf.String() != want {
		t.Errorf("got\n%.300q\nwant\n%.300q", buf.String(), want)
	}
}

// writeLog writes a CRI log with the given (stream, line) entries, one
// second apart from t0.
func writeLog(t *testing.T, lines ...string) string {
	t.Helper()
	var buf bytes.Buffer
	w := newCRIWriter(&buf)
	w.now = fixedClock(t0)
	for _, l := range lines {
		if err := w.copyLines(strings.NewReader(l), "stdout"); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadLogOptions(t *testing.T) {
	long := strings.Repeat("y", maxLogLine+1)
	path := writeLog(t, "one\n", "two\n", "three\n", long+"\n")
	since := t0.Add(1500 * time.Millisecond)
	tail := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name string
		opts LogOptions
		want string
	}{
		{"all", LogOptions{}, "one\ntwo\nthree\n" + long + "\n"},
		{"tail 3 entries (the long line is 2)", LogOptions{TailLines: tail(3)}, "three\n" + long + "\n"},
		{"tail 0", LogOptions{TailLines: tail(0)}, ""},
		{"tail more than there is", LogOptions{TailLines: tail(99)}, "one\ntwo\nthree\n" + long + "\n"},
		{"since", LogOptions{SinceTime: &since, LimitBytes: tail(8)}, "three\nyy"},
		{"timestamps", LogOptions{Timestamps: true, LimitBytes: tail(50)},
			"2026-01-02T03:04:05.6Z one\n2026-01-02T03:04:06.6Z "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := ReadLog(context.Background(), path, tc.opts, &out); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("got %.80q, want %.80q", out.String(), tc.want)
			}
		})
	}
}

func TestReadLogFollowsUntilExited(t *testing.T) {
	path := writeLog(t, "first\n")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exited atomic.Bool
	r, w := newPipeBuffer()
	done := make(chan error, 1)
	go func() {
		done <- ReadLog(context.Background(), path, LogOptions{Follow: true, Exited: exited.Load}, w)
	}()
	if got := r.waitFor(t, "first\n"); got != "first\n" {
		t.Fatalf("got %q", got)
	}
	cw := newCRIWriter(f)
	// Half an entry first: it must not be shown before its newline.
	if _, err := f.WriteString("2026-01-02T03:04:06.6Z stdout F sec"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("ond\n"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "first\nsecond\n")
	// The writer finishes, then says so: the reader must still show the end.
	if err := cw.copyLines(strings.NewReader("last\n"), "stderr"); err != nil {
		t.Fatal(err)
	}
	exited.Store(true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadLog still following after the container exited")
	}
	if got := r.String(); got != "first\nsecond\nlast\n" {
		t.Errorf("got %q", got)
	}
}

func TestReadLogFollowStopsWithContext(t *testing.T) {
	path := writeLog(t, "only\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() { done <- ReadLog(ctx, path, LogOptions{Follow: true}, &out) }()
	cancel()
	select {
	case err := <-done:
		if err != nil || out.String() != "only\n" {
			t.Errorf("ReadLog = %v, %q", err, out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadLog ignored its cancelled context")
	}
}

// pipeBuffer is a buffer a test can wait on.
type pipeBuffer struct {
	ch  chan []byte
	buf bytes.Buffer
}

func newPipeBuffer() (*pipeBuffer, *pipeWriter) {
	p := &pipeBuffer{ch: make(chan []byte, 100)}
	return p, &pipeWriter{p}
}

type pipeWriter struct{ p *pipeBuffer }

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.p.ch <- bytes.Clone(b)
	return len(b), nil
}

// waitFor reads until the buffer holds want (or a 5 s timeout).
func (p *pipeBuffer) waitFor(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for p.buf.String() != want {
		select {
		case b := <-p.ch:
			p.buf.Write(b)
		case <-timeout:
			t.Fatalf("waiting for %q, have %q", want, p.buf.String())
		}
	}
	return p.buf.String()
}

func (p *pipeBuffer) String() string {
	for {
		select {
		case b := <-p.ch:
			p.buf.Write(b)
		default:
			return p.buf.String()
		}
	}
}
