package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStandaloneAgent: a second node, `moorage agent` in its own process,
// joins the server of `moorage up`; a pod placed on it runs there, and
// kubectl logs and exec reach it through the server.
func TestStandaloneAgent(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	out := m.startSecondNode(t, "second")
	if !eventually(podTimeout, func() bool {
		return regexp.MustCompile(`(?m)^second\s+Ready\s`).MatchString(m.kubectl(t, v, "get", "nodes").Stdout)
	}) {
		t.Fatalf("node second never Ready\n%s\nagent output:\n%s", m.kubectl(t, v, "get", "nodes"), out.String())
	}
	pod := `apiVersion: v1
kind: Pod
metadata: {name: elsewhere}
spec:
  nodeSelector: {kubernetes.io/hostname: second}
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo on the second node; exec sleep 3600"]}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "elsewhere.yaml", pod))
	waitPodRow(t, m, v, "default", "elsewhere", "1/1", "Running")
	checkCol(t, m.kubectl(t, v, "get", "pod", "elsewhere", "-o", "wide"), "NODE", "second", "elsewhere")
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "logs", "elsewhere").Stdout, "on the second node")
	}) {
		t.Errorf("kubectl logs through the server:\n%s", m.kubectl(t, v, "logs", "elsewhere"))
	}
	expectOK(t, m.kubectl(t, v, "exec", "elsewhere", "--", "hostname"), "elsewhere")  // WebSocket
	expectOK(t, m.kubectl(t, 27, "exec", "elsewhere", "--", "hostname"), "elsewhere") // SPDY
	m.mustKubectl(t, v, "delete", "pod", "elsewhere", "--grace-period=1")
}

// startSecondNode runs `moorage agent` for another node of m's server in its
// own process and data directory (with busybox as a host image), stopped and
// cleaned up (killall) at the test's end. It returns the agent's output.
func (m *moorage) startSecondNode(t *testing.T, name string) *syncBuffer {
	t.Helper()
	out, _ := m.startSecondNodeIn(t, name)
	return out
}

// startSecondNodeIn is startSecondNode that also returns the agent's data
// directory.
func (m *moorage) startSecondNodeIn(t *testing.T, name string) (*syncBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(moorageBin, "image", "host", "--data-dir", dir, "busybox").CombinedOutput(); err != nil {
		t.Fatalf("moorage image host: %v\n%s", err, out)
	}
	cmd := exec.Command(moorageBin, "agent", "--kubeconfig", m.Kubeconfig, "--data-dir", dir, "--node-name", name, "--listen", "127.0.0.1:0")
	return runAgent(t, cmd, dir), dir
}

// runAgent starts a `moorage agent` command whose data directory is dir;
// at the test's end it stops it (SIGTERM, then SIGKILL after 10 s) and
// cleans the node up (killall). It returns the agent's output.
func runAgent(t *testing.T, cmd *exec.Cmd, dir string) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if b, err := exec.Command(moorageBin, "killall", "--data-dir", dir).CombinedOutput(); err != nil {
			t.Errorf("moorage killall: %v\n%s", err, b)
		}
	})
	return out
}
