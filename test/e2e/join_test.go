package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestJoinWithBootstrapToken: `moorage token create` on the server, then
// `moorage agent --server URL --token TOKEN` on a new node, which trusts
// nothing but what the token signed; the node becomes Ready, and a pod on it
// finds its service account token, the cluster's CA and its namespace.
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

	dir := t.TempDir()
	if out, err := exec.Command(moorageBin, "image", "host", "--data-dir", dir, "busybox").CombinedOutput(); err != nil {
		t.Fatalf("moorage image host: %v\n%s", err, out)
	}
	agentOut := runAgent(t, exec.Command(moorageBin, "agent", "--server", m.URL, "--token", token, "--data-dir", dir, "--node-name", "joined", "--listen", "127.0.0.1:0"), dir)
	if !eventually(podTimeout, func() bool {
		return regexp.MustCompile(`(?m)^joined\s+Ready\s`).MatchString(m.kubectl(t, v, "get", "nodes").Stdout)
	}) {
		t.Fatalf("node joined never Ready\n%s\nagent output:\n%s", m.kubectl(t, v, "get", "nodes"), agentOut.String())
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
    command: ["sh", "-c", "cd /var/run/secrets/kubernetes.io/serviceaccount && test -s token && grep -q 'BEGIN CERTIFICATE' ca.crt && test \"$(cat namespace)\" = default"]
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "identity.yaml", pod))
	waitPodRow(t, m, v, "default", "identity", "0/1", "Completed")
	// The server reaches the joined agent for logs (the agent checks the
	// server's token with the API server).
	m.mustKubectl(t, v, "logs", "identity")
}
