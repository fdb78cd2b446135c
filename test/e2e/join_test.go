package e2e

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJoinWithBootstrapToken: `moorage token create` on the server, then
// `moorage agent --server URL --token TOKEN` on a new node, which trusts
// nothing but what the token signed. With the token it asks for its node
// client certificate, which the server approves and signs (kubectl get csr
// shows it as upstream); it keeps a kubeconfig with that certificate and
// no token. The node becomes Ready, and a pod on it finds its service
// account token, the cluster's CA and its namespace; the server reaches
// the agent over TLS with its client certificate for logs and exec. With
// the bootstrap token deleted, the agent keeps working, across a restart.
func TestJoinWithBootstrapToken(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	out, err := exec.Command(moorageBin, "token", "create", "--data-dir", m.DataDir).CombinedOutput()
	token := strings.TrimSpace(string(out))
	if err != nil || !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`).MatchString(token) {
		t.Fatalf("moorage token create: %v\n%s", err, out)
	}
	tokenID, _, _ := strings.Cut(token, ".")

	dir := t.TempDir()
	if out, err := exec.Command(moorageBin, "image", "host", "--data-dir", dir, "busybox").CombinedOutput(); err != nil {
		t.Fatalf("moorage image host: %v\n%s", err, out)
	}
	args := []string{"agent", "--server", m.URL, "--token", token, "--data-dir", dir, "--node-name", "joined", "--listen", "127.0.0.1:0"}
	first := startAgentProcess(t, exec.Command(moorageBin, args...))
	runAgentCleanup(t, first, dir)
	waitNodeReady(t, m, v, "joined", first)

	// The node's credentials: a client certificate, no token.
	kubeconfig, err := os.ReadFile(filepath.Join(dir, "agent.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(kubeconfig), "client-certificate-data:") || !strings.Contains(string(kubeconfig), "client-key-data:") ||
		strings.Contains(string(kubeconfig), "token:") || strings.Contains(string(kubeconfig), token) {
		t.Fatalf("the joined kubeconfig:\n%s", kubeconfig)
	}
	csr := m.kubectl(t, v, "get", "csr")
	expectHeader(t, csr, "NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION")
	if !regexp.MustCompile(`(?m)^node-csr-\S+\s+\S+\s+kubernetes\.io/kube-apiserver-client-kubelet\s+system:bootstrap:` + tokenID + `\s+<none>\s+Approved,Issued\s*$`).MatchString(csr.Stdout) {
		t.Fatalf("kubectl get csr:\n%s", csr)
	}

	pod := `apiVersion: v1
kind: Pod
metadata: {name: identity}
spec:
  restartPolicy: Never
  nodeSelector: {kubernetes.io/hostname: joined}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "cd /var/run/secrets/kubernetes.io/serviceaccount && test -s token && grep -q 'BEGIN CERTIFICATE' ca.crt && test \"$(cat namespace)\" = default && echo identity checked"]
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  nodeSelector: {kubernetes.io/hostname: joined}
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo sleeping on joined; exec sleep 3600"]}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "identity.yaml", pod))
	waitPodRow(t, m, v, "default", "identity", "0/1", "Completed")
	waitPodRow(t, m, v, "default", "sleeper", "1/1", "Running")
	// The server reaches the agent over TLS, with its client certificate.
	expectOK(t, m.kubectl(t, v, "logs", "identity"), "identity checked")
	expectOK(t, m.kubectl(t, v, "exec", "sleeper", "--", "hostname"), "sleeper")  // WebSocket
	expectOK(t, m.kubectl(t, 27, "exec", "sleeper", "--", "hostname"), "sleeper") // SPDY
	// The agent's API: TLS only, and no answers without credentials.
	port := strings.Trim(m.mustKubectl(t, v, "get", "node", "joined", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"), "'")
	agentAPI := net.JoinHostPort("127.0.0.1", port)
	if code, body := get(t, "http://"+agentAPI+"/containerLogs/default/sleeper/main"); code != http.StatusBadRequest || !strings.Contains(body, "HTTPS") {
		t.Errorf("plain http to the agent: %d %s", code, body)
	}
	if code, body := get(t, "https://"+agentAPI+"/containerLogs/default/sleeper/main"); code != http.StatusUnauthorized {
		t.Errorf("https without credentials to the agent: %d %s", code, body)
	}

	// Without the bootstrap token the node keeps working, across a restart
	// with the same flags.
	m.mustKubectl(t, v, "-n", "kube-system", "delete", "secret", "bootstrap-token-"+tokenID)
	first.stop(t)
	second := startAgentProcess(t, exec.Command(moorageBin, args...))
	runAgentCleanup(t, second, dir)
	waitNodeReady(t, m, v, "joined", second)
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "logs", "sleeper").Stdout, "sleeping on joined")
	}) {
		t.Fatalf("kubectl logs after the restart:\n%s\nagent:\n%s", m.kubectl(t, v, "logs", "sleeper"), second.out)
	}
	expectOK(t, m.kubectl(t, v, "exec", "sleeper", "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"), "default")
	if csr := m.kubectl(t, v, "get", "csr", "-o", "name"); strings.Count(csr.Stdout, "\n") != 1 {
		t.Errorf("the restart asked for another certificate:\n%s", csr)
	}
	m.mustKubectl(t, v, "delete", "pod", "sleeper", "--grace-period=1")
}

// agentProcess is one `moorage agent` run.
type agentProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// startAgentProcess starts cmd; stop ends it.
func startAgentProcess(t *testing.T, cmd *exec.Cmd) *agentProcess {
	t.Helper()
	p := &agentProcess{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

// stop sends SIGTERM, then SIGKILL after 10 s, and waits for the exit;
// again, it returns at once.
func (p *agentProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// runAgentCleanup stops p at the test's end and cleans its node up.
func runAgentCleanup(t *testing.T, p *agentProcess, dir string) {
	t.Cleanup(func() {
		p.stop(t)
		if b, err := exec.Command(moorageBin, "killall", "--data-dir", dir).CombinedOutput(); err != nil {
			t.Errorf("moorage killall: %v\n%s", err, b)
		}
	})
}

func waitNodeReady(t *testing.T, m *moorage, v int, node string, p *agentProcess) {
	t.Helper()
	if !eventually(podTimeout, func() bool {
		return regexp.MustCompile(`(?m)^` + node + `\s+Ready\s`).MatchString(m.kubectl(t, v, "get", "nodes").Stdout)
	}) {
		t.Fatalf("node %s never Ready\n%s\nagent output:\n%s", node, m.kubectl(t, v, "get", "nodes"), p.out)
	}
}

// get GETs url without credentials or certificate checks.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // #nosec G402: a test of the agent's answers
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
