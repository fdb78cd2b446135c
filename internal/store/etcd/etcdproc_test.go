package etcd

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// etcdBinary returns the etcd binary the tests run. Without one they skip,
// unless running as root (CI), where a missing etcd is a setup error. Like
// the project's other tests that spawn processes, they skip with -short.
func etcdBinary(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("spawns etcd processes: skipped with -short")
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	if os.Geteuid() == 0 {
		tb.Fatal("etcd not found: run hack/install-etcd.sh")
	}
	tb.Skip("etcd not found (run hack/install-etcd.sh as root to install it)")
	return ""
}

// member is one etcd process of a test cluster, on loopback ports.
type member struct {
	tb                 testing.TB
	bin                string
	name, dir          string
	clientURL, peerURL string
	args               []string // flags common to the cluster
	cmd                *exec.Cmd
	exited             chan struct{} // closed when cmd has exited
}

// cluster is a set of etcd members started by a test.
type cluster struct {
	members []*member
}

// Timing for test clusters: fast enough elections that a killed leader is
// replaced within a second, slow enough not to flap on a loaded machine.
var clusterFlags = []string{"--heartbeat-interval=50", "--election-timeout=500"}

// startCluster starts n members and waits until every one is healthy. The
// members are killed when tb ends.
func startCluster(tb testing.TB, n int, flags ...string) *cluster {
	tb.Helper()
	bin := etcdBinary(tb)
	for attempt := 1; ; attempt++ {
		c, err := tryStartCluster(tb, bin, n, flags)
		if err == nil {
			return c
		}
		if attempt == 3 { // a port taken between picking and binding it
			tb.Fatalf("starting etcd: %v", err)
		}
		tb.Logf("starting etcd (attempt %d): %v; retrying", attempt, err)
	}
}

func tryStartCluster(tb testing.TB, bin string, n int, flags []string) (*cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &cluster{}
	var initial []string
	for i := range n {
		m := &member{
			tb:        tb,
			bin:       bin,
			name:      fmt.Sprintf("m%d", i),
			dir:       tb.TempDir(),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	token := filepath.Base(c.members[0].dir) // unique to this cluster
	for _, m := range c.members {
		m.args = append([]string{
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-token=" + token,
			"--logger=zap", "--log-level=warn",
		}, flags...)
		if err := m.start("new"); err != nil {
			c.kill()
			return nil, err
		}
	}
	for _, m := range c.members {
		if err := m.waitHealthy(); err != nil {
			c.kill()
			return nil, err
		}
	}
	tb.Cleanup(func() {
		c.kill()
		if tb.Failed() {
			for _, m := range c.members {
				m.logTail()
			}
		}
	})
	return c, nil
}

// endpoints returns the members' client URLs.
func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

func (c *cluster) kill() {
	for _, m := range c.members {
		m.kill()
	}
}

// start starts the member's process (state: "new" for a new cluster,
// "existing" to restart on its data dir).
func (m *member) start(state string) error {
	args := append([]string{
		"--name=" + m.name,
		"--data-dir=" + filepath.Join(m.dir, "data"),
		"--listen-client-urls=" + m.clientURL,
		"--advertise-client-urls=" + m.clientURL,
		"--listen-peer-urls=" + m.peerURL,
		"--initial-advertise-peer-urls=" + m.peerURL,
		"--initial-cluster-state=" + state,
	}, m.args...)
	log, err := os.OpenFile(filepath.Join(m.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own descriptor
	cmd := exec.Command(m.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = environWithoutEtcd() // ETCD_* variables would conflict with the flags
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(m.exited)
	}()
	return nil
}

// kill kills the member's process, if running, and waits for it to exit.
func (m *member) kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// restart kills the member and starts it again on its data.
func (m *member) restart() {
	m.tb.Helper()
	m.kill()
	if err := m.start("existing"); err != nil {
		m.tb.Fatalf("restart %s: %v", m.name, err)
	}
	if err := m.waitHealthy(); err != nil {
		m.tb.Fatalf("restart %s: %v", m.name, err)
	}
}

// waitHealthy waits until the member serves /health with a leader.
func (m *member) waitHealthy() error {
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-m.exited:
			return fmt.Errorf("%s exited: %s", m.name, m.logLines(5))
		default:
		}
		resp, err := client.Get(m.clientURL + "/health")
		if err == nil {
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(body.String(), `"health":"true"`) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy within 15s: %v: %s", m.name, err, m.logLines(5))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines returns the last n lines of the member's log.
func (m *member) logLines(n int) string {
	b, err := os.ReadFile(filepath.Join(m.dir, "etcd.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (m *member) logTail() {
	m.tb.Logf("etcd %s log:\n%s", m.name, m.logLines(30))
}

// freePorts returns n distinct loopback ports that were free just now.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func environWithoutEtcd() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}
