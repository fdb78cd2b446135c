package container

// Attaching to a container's own streams (`kubectl attach`).
//
// Design. The shim owns the container's stdio for the container's whole
// life, so it is the shim that serves attach sessions, on a unix socket in
// the container's directory (attach.sock). The agent connects to it for
// each session; since the socket, the container's stdin and its output all
// belong to the shim, a restarted agent attaches exactly as before.
//
// Output is fanned out live: the shim tees what it reads from the
// container's stdout and stderr (or its terminal) to every connected
// session as it copies it into the log. Following the log file instead
// would deliver only whole lines (a prompt without a newline would never
// show) and could not carry a terminal's raw bytes; the tee is a few lines
// and is what containerd does. A session sees output from the moment it
// connects (no history), as upstream. A session that cannot keep up —
// its queue of output is full — is disconnected rather than allowed to
// stall the container: the log, not an attach, is what must not lose
// anything.
//
// Input: a container whose spec has Stdin gets a pipe (or, with TTY, the
// terminal) as its stdin, whose writing end the shim holds, so it stays
// open however many sessions come and go. A container without Stdin keeps
// /dev/null, and input sent by a session is dropped (as containerd does:
// the session still receives output). When a session's input ends (the
// client closed its stdin, or the session went away), the shim does what
// containerd does: for a StdinOnce container without a terminal it closes
// the container's stdin, so the program reads EOF, and the session goes on
// receiving output until the container exits; otherwise the session ends.
//
// The wire protocol is frames: one kind byte, a big-endian uint32 length,
// then the payload. A client first sends a hello (payload: one flags byte,
// helloStdin when it attaches stdin), then stdin data, the end of its
// stdin and window sizes; the shim sends stdout and stderr data. The shim
// closes every connection once the container's output has ended, which
// ends the sessions.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// attachSocket is the shim's attach socket, in the container's directory.
const attachSocket = "attach.sock"

// Frame kinds.
const (
	frameHello    byte = 'h' // client: flags
	frameStdin    byte = 'i' // client: input data
	frameStdinEnd byte = 'e' // client: its input has ended
	frameResize   byte = 'r' // client: width, height (uint16 each)
	frameStdout   byte = '1' // shim: output
	frameStderr   byte = '2' // shim: output
)

// helloStdin: the client attaches its stdin.
const helloStdin = 1

const (
	maxFrame = 1 << 20
	// attachQueue is how many chunks of output (each one read of the
	// container's output, at most 16 KiB) may wait for a slow session
	// before it is disconnected.
	attachQueue = 1024
)

func writeFrame(w io.Writer, kind byte, p []byte) error {
	buf := make([]byte, 5+len(p))
	buf[0] = kind
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(p)))
	copy(buf[5:], p)
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach: frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return h[0], p, nil
}

// shortSocketPath calls f with a path naming dir/name that fits a unix
// socket address (at most 107 bytes): through /proc/self/fd when dir's
// own path is too long, as a container's directory often is.
func shortSocketPath(dir, name string, f func(path string) error) error {
	path := filepath.Join(dir, name)
	if len(path) < 100 {
		return f(path)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return f(fmt.Sprintf("/proc/self/fd/%d/%s", fd, name))
}

// listenUnix listens on dir/name, replacing a stale socket file. The
// listener does not remove the file when closed: whoever owns dir does.
func listenUnix(dir, name string) (*net.UnixListener, error) {
	_ = os.Remove(filepath.Join(dir, name))
	var ln *net.UnixListener
	err := shortSocketPath(dir, name, func(path string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // its name may be a /proc/self/fd path
	return ln, nil
}

// ---------------------------------------------------------------- shim side

// attachServer is the shim's end of attach sessions.
type attachServer struct {
	ln        *net.UnixListener
	path      string
	stdinOnce bool
	tty       bool
	// stdin is the container's input (the pipe's writing end, or the
	// terminal's master); nil when the container has no stdin.
	stdin *os.File
	// term is the terminal's master, for window sizes; nil without TTY.
	term      *os.File
	stdinMu   sync.Mutex // one session's input at a time
	closeOnce sync.Once

	mu      sync.Mutex
	clients map[*attachClient]bool
	conns   map[net.Conn]bool // every connection not yet closed
	over    bool              // the output has ended
	writers sync.WaitGroup
}

// attachClient is one connected session.
type attachClient struct {
	conn  net.Conn
	queue chan []byte // encoded frames for the session
	// Set by the connection's reader only.
	stdin, stdinEnded bool
}

// newAttachServer listens on dir's attach socket.
func newAttachServer(dir string, stdinOnce, tty bool) (*attachServer, error) {
	ln, err := listenUnix(dir, attachSocket)
	if err != nil {
		return nil, fmt.Errorf("attach socket: %w", err)
	}
	return &attachServer{
		ln: ln, path: filepath.Join(dir, attachSocket), stdinOnce: stdinOnce, tty: tty,
		clients: map[*attachClient]bool{}, conns: map[net.Conn]bool{},
	}, nil
}

// serve accepts sessions until the listener is closed.
func (s *attachServer) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &attachClient{conn: conn, queue: make(chan []byte, attachQueue)}
		s.mu.Lock()
		if s.over {
			s.mu.Unlock()
			conn.Close()
			continue
		}
		// Registered before anything is read: output from now on is the
		// session's.
		s.clients[c] = true
		s.conns[conn] = true
		s.writers.Add(1)
		s.mu.Unlock()
		go s.write(c)
		go s.read(c)
	}
}

// output returns a writer that sends what is written to every session, as
// frames of kind.
func (s *attachServer) output(kind byte) io.Writer {
	return outputFunc(func(p []byte) {
		frame := make([]byte, 5+len(p))
		frame[0] = kind
		binary.BigEndian.PutUint32(frame[1:5], uint32(len(p)))
		copy(frame[5:], p)
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.clients {
			select {
			case c.queue <- frame:
			default:
				// Cut it off now: its writer may be stuck on a session
				// that reads nothing, holding what is queued.
				fmt.Fprintf(os.Stderr, "attach: a session cannot keep up with the output; disconnecting it\n")
				s.dropLocked(c)
				c.conn.Close()
			}
		}
	})
}

type outputFunc func([]byte)

func (f outputFunc) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f(p)
	}
	return len(p), nil
}

// dropLocked ends a session's output: its writer sends what is queued,
// then closes the connection.
func (s *attachServer) dropLocked(c *attachClient) {
	if s.clients[c] {
		delete(s.clients, c)
		close(c.queue)
	}
}

func (s *attachServer) drop(c *attachClient) {
	s.mu.Lock()
	s.dropLocked(c)
	s.mu.Unlock()
}

// write sends a session its output until the session is dropped.
func (s *attachServer) write(c *attachClient) {
	defer s.writers.Done()
	var err error
	for frame := range c.queue {
		if err == nil {
			_, err = c.conn.Write(frame)
		}
		if err != nil {
			s.drop(c) // the agent went away; drain what is queued
		}
	}
	s.mu.Lock()
	delete(s.conns, c.conn)
	s.mu.Unlock()
	c.conn.Close()
}

// read handles what a session sends until it goes away.
func (s *attachServer) read(c *attachClient) {
	defer s.drop(c)
	for first := true; ; first = false {
		kind, p, err := readFrame(c.conn)
		if err != nil {
			break
		}
		if first != (kind == frameHello) {
			break // a protocol error: end the session
		}
		switch kind {
		case frameHello:
			c.stdin = len(p) > 0 && p[0]&helloStdin != 0
		case frameStdin:
			if s.stdin != nil && c.stdin && !c.stdinEnded {
				s.stdinMu.Lock()
				// A container that stopped reading its input makes this
				// fail (EPIPE) or wait (a full pipe); either way, as a
				// terminal or pipe would.
				_, _ = s.stdin.Write(p)
				s.stdinMu.Unlock()
			}
		case frameStdinEnd:
			s.endStdin(c)
		case frameResize:
			if s.term != nil && len(p) == 4 {
				ws := &unix.Winsize{Col: binary.BigEndian.Uint16(p[0:2]), Row: binary.BigEndian.Uint16(p[2:4])}
				_ = unix.IoctlSetWinsize(int(s.term.Fd()), unix.TIOCSWINSZ, ws)
			}
		}
	}
	// A session that goes away has ended its input too.
	s.endStdin(c)
}

// endStdin applies upstream's rule when a session's input ends: with
// StdinOnce and no terminal, the container's stdin is closed and the
// session goes on until the container exits; otherwise the session ends.
// Sessions that did not attach stdin, or containers without it, are not
// affected.
func (s *attachServer) endStdin(c *attachClient) {
	if !c.stdin || c.stdinEnded || s.stdin == nil {
		return
	}
	c.stdinEnded = true
	if s.stdinOnce && !s.tty {
		s.closeStdin()
		return
	}
	s.drop(c)
}

// closeStdin closes the container's input pipe (not a terminal, which is
// also its output): its program reads EOF. It does not wait for a write
// in progress, which the close interrupts.
func (s *attachServer) closeStdin() {
	if s.stdin == nil || s.tty {
		return
	}
	s.closeOnce.Do(func() { _ = s.stdin.Close() })
}

// finish ends every session once the container's output has ended: each
// gets what is queued for it (within a few seconds), then its connection
// is closed. No session can start afterwards.
func (s *attachServer) finish(timeout time.Duration) {
	s.mu.Lock()
	s.over = true
	for c := range s.clients {
		s.dropLocked(c)
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	_ = os.Remove(s.path)
	s.closeStdin()
	done := make(chan struct{})
	go func() { s.writers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.mu.Lock()
		for conn := range s.conns {
			conn.Close() // unblocks its writer
		}
		s.mu.Unlock()
		<-done
	}
}

// ---------------------------------------------------------------- agent side

// AttachSpec is one attach session's streams.
type AttachSpec struct {
	// Stdin is sent to the container's stdin, if it has one (spec Stdin);
	// nil attaches no input. When it ends, the session ends — unless the
	// container is StdinOnce without a terminal: then the container's
	// stdin is closed and the session lasts until the container exits.
	Stdin  io.Reader
	Stdout io.Writer // nil: discarded; with a terminal, all output
	Stderr io.Writer // nil: discarded
	Resize <-chan TermSize
}

// Attach connects spec's streams to the running container's own stdio
// (`kubectl attach`): output from now on (no history), input to its stdin,
// window sizes to its terminal. It returns nil when the session ends: the
// container's output has ended (it exited), or the session's input ended.
// Cancelling ctx ends the session (and returns ctx's error). A container
// that is not running is ErrNotRunning.
func (r *Runtime) Attach(ctx context.Context, id string, spec AttachSpec) error {
	st, err := r.State(id)
	if err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	if st.Status != StatusRunning {
		return fmt.Errorf("attach to %s: %w", id, ErrNotRunning)
	}
	var conn net.Conn
	err = shortSocketPath(r.containerDir(id), attachSocket, func(path string) error {
		var err error
		conn, err = net.DialTimeout("unix", path, 5*time.Second)
		return err
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
		if st, serr := r.State(id); serr == nil && st.Status == StatusRunning {
			return fmt.Errorf("attach to %s: its shim serves no attach sessions (started by an older moorage?): %w", id, err)
		}
		// The shim has finished: the container has exited.
		return fmt.Errorf("attach to %s: %w", id, ErrNotRunning)
	}
	if err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var sendMu sync.Mutex
	send := func(kind byte, p []byte) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return writeFrame(conn, kind, p)
	}
	var flags byte
	if spec.Stdin != nil {
		flags |= helloStdin
	}
	if err := send(frameHello, []byte{flags}); err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	done := make(chan struct{})
	defer close(done)
	if spec.Stdin != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := spec.Stdin.Read(buf)
				if n > 0 && send(frameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					// EOF, or the client is gone: the input has ended.
					_ = send(frameStdinEnd, nil)
					return
				}
			}
		}()
	}
	if spec.Resize != nil {
		go func() {
			for {
				select {
				case size, ok := <-spec.Resize:
					if !ok {
						return
					}
					var p [4]byte
					binary.BigEndian.PutUint16(p[0:2], size.Width)
					binary.BigEndian.PutUint16(p[2:4], size.Height)
					if send(frameResize, p[:]) != nil {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}

	stdout, stderr := orDiscard(spec.Stdout), orDiscard(spec.Stderr)
	for {
		kind, p, err := readFrame(conn)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("attach to %s: %w", id, ctx.Err())
			}
			return nil // the shim ended the session
		}
		var werr error
		switch kind {
		case frameStdout:
			_, werr = stdout.Write(p)
		case frameStderr:
			_, werr = stderr.Write(p)
		}
		if werr != nil {
			return fmt.Errorf("attach to %s: %w", id, werr)
		}
	}
}
