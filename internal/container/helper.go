package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent's side of the helpers (ShimMain is theirs): start one detached,
// record who it is, wait for its report.

// helperSpec says how to start one of ShimCommand's helpers.
type helperSpec struct {
	args       []string // after ShimCommand
	logPath    string   // the helper's own stdout and stderr
	cloneflags uintptr  // namespaces to unshare
	netns      string   // network namespace to start in; "" for ours
	// started records the helper's identity before it is waited for, so
	// a crash from then on does not lose track of it.
	started func(proc) error
}

// shimReport is what a helper writes on its status pipe (fd 3) once it is
// ready, or has failed.
type shimReport struct {
	Error string `json:"error,omitempty"`
	Init  proc   `json:"init"` // the container's init (run only)
}

// startHelper starts a helper in its own session (so that it outlives us)
// and waits for its report.
func (r *Runtime) startHelper(ctx context.Context, h helperSpec) (shimReport, error) {
	logFile, err := os.OpenFile(h.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return shimReport{}, err
	}
	defer logFile.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return shimReport{}, err
	}
	defer statusR.Close()
	args := append(append([]string{}, r.cfg.ShimCommand[1:]...), h.args...)
	cmd := exec.Command(r.cfg.ShimCommand[0], args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: h.cloneflags}
	err = startInNetNS(cmd, h.netns)
	statusW.Close()
	if err != nil {
		return shimReport{}, fmt.Errorf("start %s: %w", h.args[0], err)
	}
	p, err := procOf(cmd.Process.Pid) // before it can be reaped
	go cmd.Wait()                     //nolint:errcheck // reap it whenever it exits; records tell how it went
	if err == nil {
		err = h.started(p)
	}
	if err != nil {
		// Everything the helper started shares its process group.
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		return shimReport{}, err
	}

	type result struct {
		rep shimReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(statusR)
		var rep shimReport
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("%s exited without a report (see %s)", h.args[0], h.logPath)
		} else if err == nil {
			err = json.Unmarshal(b, &rep)
		}
		done <- result{rep, err}
	}()
	select {
	case res := <-done:
		if res.err == nil && res.rep.Error != "" {
			res.err = errors.New(res.rep.Error)
		}
		if res.err != nil {
			_ = unix.Kill(-p.Pid, unix.SIGKILL)
		}
		return res.rep, res.err
	case <-ctx.Done():
		_ = unix.Kill(-p.Pid, unix.SIGKILL)
		return shimReport{}, fmt.Errorf("waiting for %s: %w", h.args[0], ctx.Err())
	}
}

// startInNetNS starts cmd in the network namespace at path: from a thread
// that joins the namespace, since a forked child keeps its parent thread's
// namespaces.
func startInNetNS(cmd *exec.Cmd, path string) error {
	if path == "" {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Unlocked only once the thread is back in its own namespace: a
		// thread left locked dies with this goroutine.
		errc <- func() error {
			own, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				return err
			}
			defer own.Close()
			target, err := os.Open(path)
			if err != nil {
				runtime.UnlockOSThread()
				return fmt.Errorf("network namespace: %w", err)
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				return fmt.Errorf("join network namespace %s: %w", path, err)
			}
			startErr := cmd.Start()
			if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err == nil {
				runtime.UnlockOSThread()
			}
			return startErr
		}()
	}()
	return <-errc
}
