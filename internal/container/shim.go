package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ShimMain runs one of the runtime's helpers and returns the process exit
// code. The agent's binary calls it for the arguments following
// Config.ShimCommand:
//
//	pause --hostname NAME   hold a sandbox's namespaces until killed
//	run --id ID ...         create a container with runc and supervise it
//
// A helper reports on file descriptor 3 when it is ready.
func ShimMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "container shim: want a command: pause or run")
		return 2
	}
	unix.CloseOnExec(3) // the status pipe is not for runc or the container
	status := os.NewFile(3, "status")
	var err error
	switch args[0] {
	case "pause":
		err = pauseMain(args[1:], status)
	case "run":
		err = runMain(args[1:], status)
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "container shim %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// report writes the helper's report and closes the status pipe; the agent
// may be gone by now, so a failure to write is not an error.
func report(status *os.File, rep shimReport) {
	if status == nil {
		return
	}
	_ = json.NewEncoder(status).Encode(rep)
	_ = status.Close()
}

// pauseMain runs in the sandbox's fresh IPC and UTS namespaces (and its
// network namespace): it sets the hostname and waits to be killed.
func pauseMain(args []string, status *os.File) error {
	fl := flag.NewFlagSet("pause", flag.ContinueOnError)
	hostname := fl.String("hostname", "", "the pod's hostname")
	if err := fl.Parse(args); err != nil {
		report(status, shimReport{Error: err.Error()})
		return err
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if *hostname != "" {
		if err := unix.Sethostname([]byte(*hostname)); err != nil {
			err = fmt.Errorf("set hostname %q: %w", *hostname, err)
			report(status, shimReport{Error: err.Error()})
			return err
		}
	}
	report(status, shimReport{})
	<-stop
	return nil
}

// runMain creates the container, reports its init, copies its output into
// the log until it exits, then records the exit in the bundle.
func runMain(args []string, status *os.File) error {
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	id := fl.String("id", "", "container ID")
	bundle := fl.String("bundle", "", "OCI bundle directory")
	root := fl.String("root", "", "runc state root")
	runc := fl.String("runc", "runc", "runc binary")
	logPath := fl.String("log", "", "CRI log file")
	cgroup := fl.String("cgroup", "", "the container's cgroups path")
	if err := fl.Parse(args); err != nil {
		report(status, shimReport{Error: err.Error()})
		return err
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	out, err := createContainer(*runc, *root, *bundle, *id, *logPath)
	if err != nil {
		report(status, shimReport{Error: err.Error()})
		return err
	}
	report(status, shimReport{Init: out.init})

	code := waitChild(out.init.Pid)
	finished := time.Now()
	out.finishCopy(5 * time.Second)
	exit := exitRecord{ExitCode: code, FinishedAt: finished}
	if oomKilled(*cgroup) {
		exit.Reason = ReasonOOMKilled
	}
	if err := writeJSON(filepath.Join(*bundle, "exit.json"), &exit); err != nil {
		return fmt.Errorf("record exit of %s: %w", *id, err)
	}
	return nil
}

// created is a container made by createContainer whose output is being
// copied.
type created struct {
	init     proc
	log      *os.File
	pipes    []*os.File
	copyDone chan struct{}
}

// createContainer runs `runc create` with the container's stdout and
// stderr on pipes that are copied into the log. It makes this process the
// subreaper of the container's init, so that waitChild can learn its exit.
func createContainer(runc, root, bundle, id, logPath string) (*created, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become subreaper: %w", err)
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	runcLog := filepath.Join(bundle, "runc.log")
	pidFile := filepath.Join(bundle, "init.pid")
	cmd := exec.Command(runc, "--root", root, "--log", runcLog, "--log-format", "json",
		"create", "--bundle", bundle, "--pid-file", pidFile, id)
	cmd.Stdout, cmd.Stderr = outW, errW // stdin: /dev/null
	runErr := cmd.Run()
	outW.Close()
	errW.Close()
	if runErr != nil {
		return nil, fmt.Errorf("runc create: %w: %s", runErr, lastRuncError(runcLog))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, fmt.Errorf("runc create: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("runc create: pid file: %w", err)
	}
	init, err := procOf(pid)
	if err != nil {
		return nil, fmt.Errorf("runc create: container init: %w", err)
	}

	c := &created{init: init, log: log, pipes: []*os.File{outR, errR}, copyDone: make(chan struct{})}
	w := newCRIWriter(log)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.copyLines(outR, "stdout") })
	wg.Go(func() { _ = w.copyLines(errR, "stderr") })
	go func() { wg.Wait(); close(c.copyDone) }()
	return c, nil
}

// finishCopy waits for the container's output to be copied: its pipes
// close when the last process of its PID namespace is gone, which follows
// init's exit at once. After timeout the pipes are closed.
func (c *created) finishCopy(timeout time.Duration) {
	select {
	case <-c.copyDone:
	case <-time.After(timeout):
		for _, p := range c.pipes {
			p.Close()
		}
		<-c.copyDone
	}
	for _, p := range c.pipes {
		p.Close()
	}
	_ = c.log.Sync()
	_ = c.log.Close()
}

// waitChild reaps children until pid exits, and returns its exit code.
func waitChild(pid int) int {
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
		case err != nil: // ECHILD: init is not ours after all
			return 255
		case wpid == pid:
			return exitCodeOf(ws)
		}
	}
}

// lastRuncError digs the last error out of runc's JSON log.
func lastRuncError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	s := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for s.Scan() {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(s.Bytes(), &entry) == nil && entry.Level == "error" {
			last = entry.Msg
		}
	}
	return last
}
