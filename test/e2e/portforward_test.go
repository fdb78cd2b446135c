package e2e

import (
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort is a TCP port free on 127.0.0.1 right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// webPod is a pod whose busybox httpd serves "hello from NAME" on its own
// loopback, 127.0.0.1:port, where port-forward reaches it (as upstream's);
// Ready once it answers there.
func webPod(name string, port int, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s}
spec:
  terminationGracePeriodSeconds: 1
%[3]s  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /tmp/www && echo hello from %[1]s > /tmp/www/index.html && exec busybox httpd -f -p 127.0.0.1:%[2]d -h /tmp/www"]
    readinessProbe:
      exec: {command: ["sh", "-c", "busybox wget -qO- http://127.0.0.1:%[2]d/ >/dev/null"]}
      periodSeconds: 1
`, name, port, extra)
}

var forwardingLine = regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$`)

// portForward runs `kubectl port-forward pod/NAME :PORT` in the background
// and returns it with the local port it picked.
func (m *moorage) portForward(t *testing.T, v int, pod string, port int, extra ...string) (*background, int) {
	t.Helper()
	pf := m.kubectlBackground(t, v, append([]string{"port-forward", "pod/" + pod, fmt.Sprintf(":%d", port)}, extra...)...)
	line, ok := pf.WaitLine(30*time.Second, forwardingLine.MatchString)
	if !ok {
		t.Fatalf("kubectl 1.%d port-forward never forwarded:\n%s", v, pf.Output())
	}
	local, _ := strconv.Atoi(forwardingLine.FindStringSubmatch(line)[1])
	return pf, local
}

// httpGet sends a GET for / to 127.0.0.1:local and returns everything
// that comes back until the server closes.
func httpGet(local int) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: pod\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// checkForward fetches the pod's page twice through pf.
func checkForward(t *testing.T, v int, pf *background, local int, want string) {
	t.Helper()
	for i := range 2 {
		got, err := httpGet(local)
		if err != nil || !strings.HasPrefix(got, "HTTP/1.") || !strings.HasSuffix(got, "\r\n\r\n"+want+"\n") {
			t.Errorf("kubectl 1.%d, connection %d: %q, %v; want an HTTP response with body %q\n%s", v, i, got, err, want, pf.Output())
		}
	}
}

// TestPortForward: kubectl port-forward to a pod of `moorage up`'s own
// node, over a WebSocket (kubectl 1.33, which would say if it fell back to
// SPDY) and over SPDY (1.27); to a port nothing listens on, kubectl prints
// the kubelet's message and gives up.
func TestPortForward(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	port := freePort(t)
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "web.yaml", webPod("web", port, "")))
	waitPodRow(t, m, v, "default", "web", "1/1", "Running")

	pf, local := m.portForward(t, v, "web", port, "-v=4")
	checkForward(t, v, pf, local, "hello from web")
	pf.Stop()
	if out := pf.Output(); strings.Contains(out, "fallback to secondary dialer") || !strings.Contains(out, "negotiated protocol: portforward.k8s.io") {
		t.Errorf("kubectl 1.%d did not tunnel through a WebSocket:\n%s", v, out)
	}

	pf, local = m.portForward(t, 27, "web", port)
	checkForward(t, 27, pf, local, "hello from web")
	pf.Stop()

	// Nothing listens on closed: the first connection gets nothing, and
	// kubectl reports why and ends.
	p := m.pod(t, v, "default", "web")
	closed := freePort(t)
	pf, local = m.portForward(t, v, "web", closed)
	if got, err := httpGet(local); got != "" {
		t.Errorf("read %q (%v) through a port nothing listens on", got, err)
	}
	select {
	case <-pf.done:
	case <-time.After(20 * time.Second):
		t.Errorf("kubectl port-forward still runs after the error")
	}
	pf.Stop()
	want := fmt.Sprintf("an error occurred forwarding %d -> %d: error forwarding port %d to pod %s, uid : dial tcp4 127.0.0.1:%d: connect: connection refused", local, closed, closed, p.UID, closed)
	if out := pf.Output(); !strings.Contains(out, want) || !strings.Contains(out, "error: lost connection to pod") {
		t.Errorf("kubectl 1.%d port-forward to a closed port: want %q and %q in\n%s", v, want, "error: lost connection to pod", out)
	}
	if code := pf.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("kubectl exited %d, want 1", code)
	}

	// A pod name the server does not know.
	r := m.kubectl(t, v, "port-forward", "pod/nobody", "8080")
	expectFail(t, r, `pods "nobody" not found`)
}

// TestPortForwardStandaloneAgent: port-forward to a pod of a second node,
// whose `moorage agent` the server reaches over the network (the server
// proxies the upgraded connection), with both transports.
func TestPortForwardStandaloneAgent(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.startSecondNode(t, "second")
	port := freePort(t)
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "far.yaml", webPod("far", port, "  nodeSelector: {kubernetes.io/hostname: second}\n")))
	waitPodRow(t, m, v, "default", "far", "1/1", "Running")
	checkCol(t, m.kubectl(t, v, "get", "pod", "far", "-o", "wide"), "NODE", "second", "far")

	for _, ver := range []int{v, 27} { // WebSocket, SPDY
		pf, local := m.portForward(t, ver, "far", port)
		checkForward(t, ver, pf, local, "hello from far")
		pf.Stop()
	}
	m.mustKubectl(t, v, "delete", "pod", "far", "--grace-period=1")
}
