package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// attachPods are the pods TestAttach attaches to (busybox is a host
// program named as an image).
const attachPods = `apiVersion: v1
kind: Pod
metadata: {name: reader-%[1]d}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "while read l; do echo got:$l; done; echo bye"]
---
apiVersion: v1
kind: Pod
metadata: {name: ticker-%[1]d}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.2; done"]
`

// TestAttach runs kubectl attach as upstream behaves, over WebSocket
// (1.33) and SPDY (1.27): input piped into a stdinOnce container, which
// then reads EOF and exits; output only, from the moment of attaching; a
// container that is not running; a terminal; and a container with stdin
// attached to again after moorage restarts.
func TestAttach(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	dir := t.TempDir()
	m := startMoorageIn(t, dir)
	m.hostImage(t, "busybox")
	versions := []int{defaultVersion, 27}
	for _, v := range versions {
		m.mustKubectl(t, defaultVersion, "create", "-f", m.writeFile(t, fmt.Sprintf("attach-%d.yaml", v), fmt.Sprintf(attachPods, v)))
	}
	m.mustKubectl(t, defaultVersion, "create", "-f", m.writeFile(t, "attach-more.yaml", `apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  containers:
  - {name: main, image: busybox, stdin: true, command: ["sh", "-c", "while read l; do echo got:$l; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: term}
spec:
  containers:
  - {name: main, image: busybox, stdin: true, tty: true, command: ["sh", "-c", "while read l; do echo got:$l; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  restartPolicy: Never
  containers:
  - {name: quick, image: busybox, command: ["true"]}
  - {name: slow, image: busybox, command: ["sleep", "3600"]}
`))

	for _, v := range versions {
		t.Run(fmt.Sprintf("stdinOnce-1.%d", v), func(t *testing.T) {
			name := fmt.Sprintf("reader-%d", v)
			waitPodRow(t, m, v, "default", name, "1/1", "Running")
			r := m.kubectlStdin(t, v, "a\nb\n", "attach", "-i", name)
			if r.Code != 0 || r.Stdout != "got:a\ngot:b\nbye\n" {
				t.Errorf("want exit 0 and got:a, got:b, bye\n%s", r)
			}
			// Its stdin closed, the program ended: the pod completes.
			waitPodRow(t, m, v, "default", name, "0/1", "Completed")
		})

		t.Run(fmt.Sprintf("output-1.%d", v), func(t *testing.T) {
			name := fmt.Sprintf("ticker-%d", v)
			waitPodRow(t, m, v, "default", name, "1/1", "Running")
			var before int
			if !eventually(podTimeout, func() bool {
				before = lastTick(m.kubectl(t, v, "logs", name).Stdout)
				return before >= 2
			}) {
				t.Fatalf("the ticker does not tick\n%s", m.kubectl(t, v, "logs", name))
			}
			b := m.kubectlBackground(t, v, "attach", name)
			first, ok := b.WaitLine(20*time.Second, func(l string) bool { return strings.HasPrefix(l, "line-") })
			if !ok {
				t.Fatalf("no output from kubectl attach\n%s", b.Output())
			}
			n, _ := strconv.Atoi(strings.TrimPrefix(first, "line-"))
			if n <= before {
				t.Errorf("attach began with %s, already logged (line-%d) before it started: want no history", first, before)
			}
			want := fmt.Sprintf("line-%d", n+3) // new lines keep coming
			if _, ok := b.WaitLine(10*time.Second, func(l string) bool { return l == want }); !ok {
				t.Errorf("no %s after %s\n%s", want, first, b.Output())
			}
			b.Stop()
		})

		t.Run(fmt.Sprintf("not-running-1.%d", v), func(t *testing.T) {
			waitPodRow(t, m, v, "default", "two", "1/2", "NotReady")
			expectFail(t, m.kubectl(t, v, "attach", "two", "-c", "quick"),
				"error: unable to upgrade connection: container quick not found in pod two_default")
		})
	}

	t.Run("tty", func(t *testing.T) {
		v := defaultVersion
		waitPodRow(t, m, v, "default", "term", "1/1", "Running")
		s := m.attachInteractive(t, v, "attach", "-it", "term")
		s.send(t, "hello\n")
		s.waitLine(t, "got:hello")
		s.endInput(t) // ends the session: a terminal's stdin is not closed
		if r := m.kubectl(t, v, "logs", "term"); !strings.Contains(r.Stdout, "got:hello\n") {
			t.Errorf("the terminal's output is not in the log\n%s", r)
		}
		waitPodRow(t, m, v, "default", "term", "1/1", "Running")
	})

	t.Run("after-restart", func(t *testing.T) {
		waitPodRow(t, m, defaultVersion, "default", "keeper", "1/1", "Running")
		if code, err := m.Stop(); err != nil || code != 0 {
			t.Fatalf("stopping moorage: %d, %v\n%s", code, err, m.Output())
		}
		m2 := startMoorageIn(t, dir)
		// Until the restarted agent has seen the pod it answers "pod does
		// not exist", as the kubelet does: a moment.
		if !eventually(podTimeout, func() bool { return m2.kubectl(t, defaultVersion, "exec", "keeper", "--", "true").Code == 0 }) {
			t.Fatalf("the restarted agent never took the pod back\n%s", m2.kubectl(t, defaultVersion, "describe", "pod", "keeper"))
		}
		for i, v := range versions {
			s := m2.attachInteractive(t, v, "attach", "-i", "keeper")
			line := fmt.Sprintf("after-restart-%d", i)
			s.send(t, line+"\n")
			s.waitLine(t, "got:"+line)
			s.endInput(t) // without stdinOnce, the session ends and the container goes on
		}
		waitPodRow(t, m2, defaultVersion, "default", "keeper", "1/1", "Running")
		if r := m2.kubectl(t, defaultVersion, "logs", "keeper"); r.Stdout != "got:after-restart-0\ngot:after-restart-1\n" {
			t.Errorf("the container's log\n%s", r)
		}
	})
}

var tickLine = regexp.MustCompile(`(?m)^line-(\d+)$`)

// lastTick is the number of the last "line-N" in out (0 if none).
func lastTick(out string) int {
	all := tickLine.FindAllStringSubmatch(out, -1)
	if len(all) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(all[len(all)-1][1])
	return n
}

// interactive is a kubectl whose stdin the test writes, line by line, and
// then closes.
type interactive struct {
	*background
	stdin io.WriteCloser
}

// attachInteractive starts kubectl (an attach -i) with its stdin on a pipe.
func (m *moorage) attachInteractive(t *testing.T, v int, args ...string) *interactive {
	t.Helper()
	cmd := exec.Command(kubectlPath(t, v), append([]string{"--kubeconfig", m.Kubeconfig}, args...)...)
	cmd.Env = m.kubectlEnv(v)
	cmd.Dir = m.tmp
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b := &background{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	cmd.Stderr = b.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("1.%d $ kubectl %s <&pipe", v, shellJoin(args))
	}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, strings.TrimSuffix(sc.Text(), "\r"))
			b.mu.Unlock()
			select {
			case b.notify <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(b.Stop)
	return &interactive{background: b, stdin: stdin}
}

func (s *interactive) send(t *testing.T, text string) {
	t.Helper()
	if _, err := io.WriteString(s.stdin, text); err != nil {
		t.Fatalf("writing to kubectl: %v\n%s", err, s.Output())
	}
}

// waitLine waits for kubectl to print the line want.
func (s *interactive) waitLine(t *testing.T, want string) {
	t.Helper()
	if _, ok := s.WaitLine(20*time.Second, func(l string) bool { return l == want }); !ok {
		t.Fatalf("kubectl printed no line %q\n%s", want, s.Output())
	}
}

// endInput closes kubectl's stdin and expects it to exit 0 at once.
func (s *interactive) endInput(t *testing.T) {
	t.Helper()
	s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("kubectl still attached 20s after its input ended\n%s", s.Output())
	}
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("kubectl: %v\n%s", err, s.Output())
	}
}
