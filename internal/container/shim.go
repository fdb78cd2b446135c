package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
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
	var sio stdio
	fl.BoolVar(&sio.stdin, "stdin", false, "keep the container's stdin open for attach sessions")
	fl.BoolVar(&sio.stdinOnce, "stdin-once", false, "close the container's stdin when the first attached input ends")
	fl.BoolVar(&sio.tty, "tty", false, "run the container on a terminal")
	if err := fl.Parse(args); err != nil {
		report(status, shimReport{Error: err.Error()})
		return err
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	out, err := createContainer(*runc, *root, *bundle, *id, *logPath, sio)
	if err != nil {
		report(status, shimReport{Error: err.Error()})
		return err
	}
	go out.attach.serve()
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

// stdio says how the container's standard streams are wired.
type stdio struct {
	// stdin: a pipe the shim holds open for attach sessions, instead of
	// /dev/null; stdinOnce: closed when the first attached input ends.
	stdin, stdinOnce bool
	// tty: a terminal (runc's --console-socket hands the shim its master
	// side); its output is logged as stdout, as upstream logs it.
	tty bool
}

// consoleSocket is where runc hands over a terminal's master, in the
// bundle; it exists only during `runc create`.
const consoleSocket = "console.sock"

// created is a container made by createContainer whose output is being
// copied.
type created struct {
	init     proc
	log      *os.File
	pipes    []*os.File // the output's reading ends (or the terminal)
	attach   *attachServer
	copyDone chan struct{}
}

// createContainer runs `runc create` with the container's stdout and
// stderr on pipes (or a terminal) that are copied into the log and to
// attach sessions. It makes this process the subreaper of the container's
// init, so that waitChild can learn its exit.
func createContainer(runc, root, bundle, id, logPath string, sio stdio) (c *created, err error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become subreaper: %w", err)
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	attach, err := newAttachServer(bundle, sio.stdinOnce, sio.tty)
	if err != nil {
		log.Close()
		return nil, err
	}
	c = &created{log: log, attach: attach, copyDone: make(chan struct{})}
	defer func() {
		if err != nil {
			c.attach.finish(0)
			for _, p := range c.pipes {
				p.Close()
			}
			log.Close()
		}
	}()

	runcLog := filepath.Join(bundle, "runc.log")
	pidFile := filepath.Join(bundle, "init.pid")
	args := []string{"--root", root, "--log", runcLog, "--log-format", "json",
		"create", "--bundle", bundle, "--pid-file", pidFile}
	if sio.tty {
		err = c.createOnTerminal(runc, append(args, "--console-socket", consoleSocket, id), bundle, runcLog, sio.stdin)
	} else {
		err = c.createWithPipes(runc, append(args, id), runcLog, sio.stdin)
	}
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, fmt.Errorf("runc create: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("runc create: pid file: %w", err)
	}
	if c.init, err = procOf(pid); err != nil {
		return nil, fmt.Errorf("runc create: container init: %w", err)
	}

	// What is read goes to attach sessions first (the tee), then into the
	// log, one entry per line.
	w := newCRIWriter(log)
	var wg sync.WaitGroup
	if sio.tty {
		ptm := c.pipes[0]
		wg.Go(func() { _ = w.copyLines(io.TeeReader(ptm, attach.output(frameStdout)), "stdout") })
	} else {
		outR, errR := c.pipes[0], c.pipes[1]
		wg.Go(func() { _ = w.copyLines(io.TeeReader(outR, attach.output(frameStdout)), "stdout") })
		wg.Go(func() { _ = w.copyLines(io.TeeReader(errR, attach.output(frameStderr)), "stderr") })
	}
	go func() { wg.Wait(); close(c.copyDone) }()
	return c, nil
}

// createWithPipes runs `runc create` (args) with the container's stdout
// and stderr on pipes, and its stdin on a pipe the attach server writes
// to (with stdin) or /dev/null.
func (c *created) createWithPipes(runc string, args []string, runcLog string, stdin bool) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	c.pipes = []*os.File{outR, errR}
	cmd := exec.Command(runc, args...)
	cmd.Stdout, cmd.Stderr = outW, errW // stdin: /dev/null unless...
	if stdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			outW.Close()
			errW.Close()
			return err
		}
		defer inR.Close() // the container has its own copy
		cmd.Stdin = inR
		c.attach.stdin = inW
	}
	runErr := cmd.Run()
	outW.Close()
	errW.Close()
	if runErr != nil {
		return fmt.Errorf("runc create: %w: %s", runErr, lastRuncError(runcLog))
	}
	return nil
}

// createOnTerminal runs `runc create` (args, with --console-socket) in
// bundle, receives the container's terminal from runc and keeps its
// master side: output is read from it, and input (with stdin) and window
// sizes go to it.
func (c *created) createOnTerminal(runc string, args []string, bundle, runcLog string, stdin bool) error {
	console, err := listenUnix(bundle, consoleSocket)
	if err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	defer os.Remove(filepath.Join(bundle, consoleSocket))
	type result struct {
		f   *os.File
		err error
	}
	received := make(chan result, 1)
	go func() {
		f, err := receiveFile(console)
		received <- result{f, err}
	}()
	cmd := exec.Command(runc, args...)
	cmd.Dir = bundle // runc is given the socket's relative name: its path may be too long for one
	runErr := cmd.Run()
	if runErr != nil {
		console.Close()
		if res := <-received; res.f != nil {
			res.f.Close()
		}
		return fmt.Errorf("runc create: %w: %s", runErr, lastRuncError(runcLog))
	}
	var res result
	select {
	case res = <-received:
	case <-time.After(5 * time.Second):
		res.err = errors.New("runc did not send the terminal")
	}
	console.Close()
	if res.err != nil {
		if r := <-received; r.f != nil {
			r.f.Close()
		}
		return fmt.Errorf("runc create: console: %w", res.err)
	}
	c.pipes = []*os.File{res.f}
	c.attach.term = res.f
	if stdin {
		c.attach.stdin = res.f
	}
	return nil
}

// receiveFile accepts one connection on ln and receives the file
// descriptor sent on it (SCM_RIGHTS), in non-blocking mode so that closing
// it interrupts a read.
func receiveFile(ln *net.UnixListener) (*os.File, error) {
	conn, err := ln.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("got %d control messages, want 1", len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return nil, err
	}
	if len(fds) == 0 {
		return nil, errors.New("no file descriptor received")
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	unix.CloseOnExec(fds[0])
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// finishCopy waits for the container's output to be copied: its pipes
// close when the last process of its PID namespace is gone, which follows
// init's exit at once. After timeout the pipes are closed. Then the attach
// sessions end.
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
	c.attach.finish(2 * time.Second)
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
