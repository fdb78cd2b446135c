package container

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a session's output and lets a test wait for it.
type lockedBuffer struct {
	mu     sync.Mutex
	b      strings.Builder
	change chan struct{} // closed and replaced on every write
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{change: make(chan struct{})} }

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	close(l.change)
	l.change = make(chan struct{})
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the buffer holds want.
func (l *lockedBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		s, change := l.b.String(), l.change
		l.mu.Unlock()
		if strings.Contains(s, want) {
			return
		}
		select {
		case <-change:
		case <-deadline:
			t.Fatalf("no %q in the session's output within 10s: %q", want, s)
		}
	}
}

// attach runs an attach session in the background; its error arrives on
// the returned channel.
func (e *env) attach(ctx context.Context, rt *Runtime, id string, spec AttachSpec) <-chan error {
	done := make(chan error, 1)
	go func() { done <- rt.Attach(ctx, id, spec) }()
	return done
}

func waitSession(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the attach session did not end within 10s")
		return nil
	}
}

// waitLog waits until the container's log holds want.
func (e *env) waitLog(spec ContainerSpec, want string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.output(spec), want) {
		if time.Now().After(deadline) {
			e.t.Fatalf("no %q in the log within 10s: %q", want, e.output(spec))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StdinOnce: the session's input reaches the container, which reads EOF
// when the input ends; the session relays stdout and stderr apart, without
// what was written before it, and ends when the container exits.
func TestAttachStdinOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "attach"})
	spec := sh(`echo before; while read l; do echo got:$l; echo err:$l >&2; done; echo bye`)
	spec.Stdin, spec.StdinOnce = true, true
	spec = e.start(pod, spec)
	e.waitLog(spec, "before\n")

	stdout, stderr := newLockedBuffer(), newLockedBuffer()
	err := waitSession(t, e.attach(context.Background(), e.rt, spec.ID, AttachSpec{
		Stdin: strings.NewReader("a\nb\n"), Stdout: stdout, Stderr: stderr,
	}))
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if got := stdout.String(); got != "got:a\ngot:b\nbye\n" {
		t.Errorf("stdout %q, want got:a, got:b, bye (and not what came before the session)", got)
	}
	if got := stderr.String(); got != "err:a\nerr:b\n" {
		t.Errorf("stderr %q", got)
	}
	if st := e.waitExited(spec.ID); st.ExitCode != 0 {
		t.Errorf("exit code %d, want 0", st.ExitCode)
	}
	if out := e.output(spec); !strings.Contains(out, "got:b\n") || !strings.Contains(out, "bye\n") {
		t.Errorf("log %q lacks the session's lines", out)
	}
	if err := e.rt.Attach(context.Background(), spec.ID, AttachSpec{Stdout: io.Discard}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Attach to an exited container: %v, want ErrNotRunning", err)
	}
	if err := e.rt.Attach(context.Background(), "no-such-container", AttachSpec{Stdout: io.Discard}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Attach to a missing container: %v, want ErrNotFound", err)
	}
}

// Without StdinOnce the container's stdin stays open: a session ends when
// its input does, and the next one — through another Runtime, as after an
// agent restart — writes to the same stdin. Output goes to every session.
func TestAttachStdinStaysOpenAcrossSessionsAndRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "attach"})
	spec := sh(`while read l; do echo got:$l; done; echo eof`)
	spec.Stdin = true
	spec = e.start(pod, spec)
	ctx := context.Background()

	inR, inW := io.Pipe()
	out1 := newLockedBuffer()
	done1 := e.attach(ctx, e.rt, spec.ID, AttachSpec{Stdin: inR, Stdout: out1})
	if _, err := inW.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	out1.waitFor(t, "got:one\n")
	inW.Close()
	if err := waitSession(t, done1); err != nil {
		t.Fatalf("first session: %v", err)
	}

	rt2, err := New(e.cfg) // a restarted agent
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watcher := newLockedBuffer()
	watching := e.attach(watchCtx, rt2, spec.ID, AttachSpec{Stdout: watcher}) // output only
	inR2, inW2 := io.Pipe()
	out2 := newLockedBuffer()
	done2 := e.attach(ctx, rt2, spec.ID, AttachSpec{Stdin: inR2, Stdout: out2})
	// The watcher connects on its own goroutine: ping until it sees output,
	// so that "two" cannot come out before it is attached.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(watcher.String(), "got:ping") {
		if time.Now().After(deadline) {
			t.Fatalf("the watching session never saw output: %q", watcher.String())
		}
		if _, err := inW2.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := inW2.Write([]byte("two\n")); err != nil {
		t.Fatal(err)
	}
	out2.waitFor(t, "got:two\n")
	watcher.waitFor(t, "got:two\n")
	inW2.Close()
	if err := waitSession(t, done2); err != nil {
		t.Fatalf("second session: %v", err)
	}
	if st, _ := rt2.State(spec.ID); st.Status != StatusRunning {
		t.Fatalf("the container is %s after sessions without StdinOnce ended, want running", st.Status)
	}
	if strings.Contains(out2.String(), "got:one") || strings.Contains(watcher.String(), "got:one") {
		t.Errorf("a later session got earlier output: %q, %q", out2.String(), watcher.String())
	}
	stopWatch()
	if err := waitSession(t, watching); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled session: %v, want context.Canceled", err)
	}
	if out := strings.ReplaceAll(e.output(spec), "got:ping\n", ""); out != "got:one\ngot:two\n" {
		t.Errorf("log %q", out)
	}
}

// A container without Stdin keeps /dev/null: a session's input is dropped
// and its end does not end the session, which still relays output.
func TestAttachWithoutStdinRelaysOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "attach"})
	spec := e.start(pod, sh(`cat; echo cat-done; i=0; while sleep 0.05; do i=$((i+1)); echo tick-$i; done`))
	e.waitLog(spec, "tick-2\n")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := newLockedBuffer()
	done := e.attach(ctx, e.rt, spec.ID, AttachSpec{Stdin: strings.NewReader("dropped\n"), Stdout: out})
	out.waitFor(t, "\n")
	first := out.String()
	// The session outlives its input's end by several ticks.
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the session ended with its input: %v; output %q", err, out.String())
	default:
	}
	cancel()
	if err := waitSession(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled session: %v, want context.Canceled", err)
	}
	got := out.String()
	if strings.Contains(got, "dropped") || strings.Contains(got, "cat-done") || strings.Contains(got, "tick-1\n") {
		t.Errorf("session output %q: want only ticks after the session began", got)
	}
	if n := strings.Count(got, "tick-"); n < 4 {
		t.Errorf("session output %q (first %q): want several ticks", got, first)
	}
	if log := e.output(spec); strings.Contains(log, "dropped") {
		t.Errorf("the input reached a container without stdin: %q", log)
	}
}

// A TTY container runs on a terminal the shim holds: the session's input
// and window size reach it, its output (one stream) reaches the session
// and the log's stdout.
func TestAttachTTY(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "attach"})
	spec := sh(`tty; read l; stty size; echo got:$l; echo to-stderr >&2`)
	spec.Stdin, spec.TTY = true, true
	spec = e.start(pod, spec)
	e.waitLog(spec, "/dev/pts/")

	inR, inW := io.Pipe()
	resize := make(chan TermSize)
	out := newLockedBuffer()
	done := e.attach(context.Background(), e.rt, spec.ID, AttachSpec{Stdin: inR, Stdout: out, Resize: resize})
	// The second send returns once the first size has been sent on, ahead
	// of the input.
	resize <- TermSize{Width: 100, Height: 30}
	resize <- TermSize{Width: 100, Height: 30}
	if _, err := inW.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := waitSession(t, done); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	inW.Close()
	got := out.String()
	for _, want := range []string{"hello\r\n", "30 100\r\n", "got:hello\r\n", "to-stderr\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("session output %q lacks %q", got, want)
		}
	}
	if st := e.waitExited(spec.ID); st.ExitCode != 0 {
		t.Errorf("exit code %d", st.ExitCode)
	}
	log := e.output(spec)
	if !strings.Contains(log, "got:hello\n") || !strings.Contains(log, "to-stderr\n") {
		t.Errorf("log %q", log)
	}
}

// A session that reads nothing is disconnected once its queue is full;
// the container's output (here, the tee's writes) never waits for it.
func TestAttachSlowSessionIsDisconnected(t *testing.T) {
	t.Parallel()
	s, err := newAttachServer(t.TempDir(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	go s.serve()
	var conn net.Conn
	err = shortSocketPath(filepath.Dir(s.path), attachSocket, func(path string) error {
		conn, err = net.Dial("unix", path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := writeFrame(conn, frameHello, []byte{0}); err != nil {
		t.Fatal(err)
	}
	for { // until the server has registered the session
		s.mu.Lock()
		n := len(s.clients)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	out := s.output(frameStdout)
	chunk := make([]byte, 16*1024)
	t0 := time.Now()
	for range 2 * attachQueue {
		_, _ = out.Write(chunk)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("writing the output took %v: it waited for the session", d)
	}
	read, err := io.Copy(io.Discard, conn) // what the socket held, then EOF
	if err != nil {
		t.Fatal(err)
	}
	if written := int64(2 * attachQueue * len(chunk)); read >= written {
		t.Errorf("the session got all %d bytes; want it cut off", read)
	}
	s.finish(time.Second)
}
