package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc names one process across pid reuse: its pid and its start time in
// clock ticks since boot (field 22 of /proc/<pid>/stat).
type proc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// errGone: the process has exited (or its pid now names another process).
var errGone = errors.New("process is gone")

// procOf names the process pid: a child of ours not yet waited for, so
// that the pid cannot have been reused.
func procOf(pid int) (proc, error) {
	start, _, err := procStat(pid)
	if err != nil {
		return proc{}, err
	}
	return proc{Pid: pid, Start: start}, nil
}

// procStat reads a process's start time and state letter.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, errGone)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// after it start behind the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 { // f[0] is field 3 (state), f[19] is field 22 (starttime)
		return 0, 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("pid %d: malformed stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// alive reports whether p is still running (a zombie counts as exited).
func (p proc) alive() bool {
	if p.Pid <= 0 {
		return false
	}
	start, state, err := procStat(p.Pid)
	return err == nil && start == p.Start && state != 'Z' && state != 'X'
}

// pidfd opens a pidfd for p, or returns errGone.
func (p proc) pidfd() (int, error) {
	if p.Pid <= 0 {
		return -1, errGone
	}
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, errGone
	}
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", p.Pid, err)
	}
	// The pidfd pins whatever process had the pid when it was opened:
	// check that it is ours.
	if !p.alive() {
		unix.Close(fd)
		return -1, errGone
	}
	return fd, nil
}

// signal sends sig to p; errGone if p has exited.
func (p proc) signal(sig syscall.Signal) error {
	fd, err := p.pidfd()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = unix.PidfdSendSignal(fd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return errGone
	}
	if err != nil {
		return fmt.Errorf("signal %d: %w", p.Pid, err)
	}
	return nil
}

// wait blocks until p has exited or ctx is done.
func (p proc) wait(ctx context.Context) error {
	fd, err := p.pidfd()
	if errors.Is(err, errGone) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd %d: %w", p.Pid, err)
		}
		if n > 0 || !p.alive() { // readable: it exited
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for pid %d: %w", p.Pid, ctx.Err())
		}
	}
}

// kill sends SIGKILL to p and waits until it is gone.
func (p proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		if errors.Is(err, errGone) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.wait(ctx)
}

// unmountAll unmounts target (every mount stacked on it); not being a
// mount point is success. A busy mount is detached lazily.
func unmountAll(target string) error {
	for range 16 {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", target)
}

// cgroupRoot is where the cgroup v1 hierarchies (and the hybrid unified
// one) are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// removeCgroup removes the cgroup rel from every hierarchy. A cgroup that
// is absent or still has members or children is left alone.
func removeCgroup(rel string) error {
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", rel, err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() { // cpu,cpuacct style symlinks name a hierarchy twice
			continue
		}
		err := unix.Rmdir(filepath.Join(cgroupRoot, e.Name(), rel))
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove cgroup %s/%s: %w", e.Name(), rel, err))
		}
	}
	return errors.Join(errs...)
}

// oomKilled reports whether the memory cgroup rel has killed a process.
func oomKilled(rel string) bool {
	f, err := os.Open(filepath.Join(cgroupRoot, "memory", rel, "memory.oom_control"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if n, ok := strings.CutPrefix(s.Text(), "oom_kill "); ok {
			v, _ := strconv.ParseUint(strings.TrimSpace(n), 10, 64)
			return v > 0
		}
	}
	return false
}

// capNames are the Linux capabilities by number.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// boundingCapabilities lists the capabilities in this process's bounding
// set: all a privileged container can be given (a VM may withhold some,
// e.g. CAP_SYS_RESOURCE, and asking runc for those fails).
func boundingCapabilities() ([]string, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("read capabilities: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "CapBnd:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("parse CapBnd %q: %w", v, err)
		}
		var caps []string
		for i, name := range capNames {
			if mask&(1<<i) != 0 {
				caps = append(caps, name)
			}
		}
		return caps, nil
	}
	return nil, errors.New("no CapBnd in /proc/self/status")
}
