package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecSpec is a process to run in a running container.
type ExecSpec struct {
	Args []string
	Env  []string // added to the container's environment
	Cwd  string   // "" means the container's
	User *User    // nil means the container's
	// TTY runs the process on a terminal: Stdout receives both its output
	// streams, Resize its window size changes.
	TTY    bool
	Stdin  io.Reader // nil: no input
	Stdout io.Writer // nil: discarded
	Stderr io.Writer // nil: discarded
	Resize <-chan TermSize
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Width, Height uint16
}

// Exec runs spec in the container with `runc exec` and returns the exit
// code of the process (128+n if signal n killed it). An error means the
// process could not be run. Cancelling ctx kills the process.
func (r *Runtime) Exec(ctx context.Context, id string, spec ExecSpec) (int, error) {
	if len(spec.Args) == 0 {
		return -1, fmt.Errorf("exec in %s: no Args", id)
	}
	st, err := r.State(id)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	if st.Status != StatusRunning {
		return -1, fmt.Errorf("exec in %s: %w", id, ErrNotRunning)
	}
	pidFile, err := os.CreateTemp(r.containerDir(id), "exec-*.pid")
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	pidFile.Close()
	os.Remove(pidFile.Name()) // runc writes it once the process runs
	defer os.Remove(pidFile.Name())

	args := []string{"--root", r.runcRoot, "exec", "--pid-file", pidFile.Name()}
	if spec.Cwd != "" {
		args = append(args, "--cwd", spec.Cwd)
	}
	for _, e := range spec.Env {
		args = append(args, "--env", e)
	}
	if u := spec.User; u != nil {
		args = append(args, "--user", fmt.Sprintf("%d:%d", u.UID, u.GID))
		for _, g := range u.AdditionalGIDs {
			args = append(args, "--additional-gids", strconv.FormatUint(uint64(g), 10))
		}
	}
	if spec.TTY {
		args = append(args, "--tty")
	}
	args = append(append(args, id), spec.Args...)
	cmd := exec.Command(r.runc, args...)
	diag := &headWriter{max: 4096} // runc's own complaints, for the error
	var runErr error
	if spec.TTY {
		runErr = runOnTerminal(ctx, cmd, spec, diag, pidFile.Name())
	} else {
		runErr = runWithPipes(ctx, cmd, spec, diag, pidFile.Name())
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
	if runErr == nil {
		return 0, nil
	}
	var exitErr *exec.ExitError
	if !errors.As(runErr, &exitErr) {
		return -1, fmt.Errorf("exec in %s: %w", id, runErr)
	}
	if _, err := os.Stat(pidFile.Name()); err != nil {
		// The process never ran: runc failed.
		return -1, fmt.Errorf("exec in %s: runc exec: %w: %s", id, runErr, strings.TrimSpace(diag.String()))
	}
	return exitErr.ExitCode(), nil
}

// runWithPipes runs cmd with spec's streams; runc copies them to and from
// the process.
func runWithPipes(ctx context.Context, cmd *exec.Cmd, spec ExecSpec, diag *headWriter, pidFile string) error {
	cmd.Stdout = spec.Stdout
	cmd.Stderr = io.MultiWriter(diag, orDiscard(spec.Stderr))
	cmd.WaitDelay = 2 * time.Second
	if spec.Stdin != nil {
		// Our own pipe, so that a Stdin that never ends cannot hold up Wait.
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		defer pr.Close()
		cmd.Stdin = pr
		go func() {
			_, _ = io.Copy(pw, spec.Stdin)
			pw.Close()
		}()
		defer pw.Close() // ends the copy once the process is gone
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { killExec(cmd, pidFile) })
	defer stop()
	return cmd.Wait()
}

// runOnTerminal runs cmd (a `runc exec --tty`) on a new pseudo-terminal:
// runc makes another one in the container and relays between the two,
// passing on window size changes, which it learns from SIGWINCH.
func runOnTerminal(ctx context.Context, cmd *exec.Cmd, spec ExecSpec, diag *headWriter, pidFile string) error {
	ptm, pts, err := openPTY()
	if err != nil {
		return err
	}
	defer ptm.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	pts.Close()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { killExec(cmd, pidFile) })
	defer stop()

	var output, resizing sync.WaitGroup
	out := io.MultiWriter(diag, orDiscard(spec.Stdout))
	output.Go(func() { _, _ = io.Copy(out, ptm) }) // ends with EIO once runc is gone
	if spec.Stdin != nil {
		go func() { _, _ = io.Copy(ptm, spec.Stdin) }()
	}
	done := make(chan struct{})
	if spec.Resize != nil {
		fd := int(ptm.Fd())
		resizing.Go(func() {
			for {
				select {
				case size, ok := <-spec.Resize:
					if !ok {
						return
					}
					ws := &unix.Winsize{Row: size.Height, Col: size.Width}
					_ = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws)
				case <-done:
					return
				}
			}
		})
	}
	err = cmd.Wait()
	output.Wait()
	close(done)
	resizing.Wait() // before ptm is closed and its number reused
	return err
}

// killExec kills the exec'd process (runc then exits), or runc itself if
// the process has not started.
func killExec(cmd *exec.Cmd, pidFile string) {
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL) // runc's child: not yet reaped, so still this process
			return
		}
	}
	_ = cmd.Process.Kill()
}

// openPTY opens a new pseudo-terminal pair.
func openPTY() (ptm, pts *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	ptm = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	name := filepath.Join("/dev/pts", strconv.FormatUint(uint64(n), 10))
	pts, err = os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return ptm, pts, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (h *headWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headWriter) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.buf)
}
