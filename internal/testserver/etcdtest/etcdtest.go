// Package etcdtest runs real etcd processes for tests and benchmarks:
// clusters of members on free loopback ports, in temporary directories,
// killed when the test ends. The binary is Debian's etcd-server
// (hack/install-etcd.sh); without it tests skip, except as root (CI),
// where a missing etcd is a setup error.
package etcdtest

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

// Binary returns the etcd binary the tests run. Without one they skip,
// unless running as root (CI), where a missing etcd is a setup error. Like
// the project's other tests that spawn processes, they skip with -short.
func Binary(tb testing.TB) string {
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

// Member is one etcd process of a test cluster, on loopback ports.
type Member struct {
	tb                 testing.TB
	bin                string
	name, dir          string
	ClientURL, peerURL string
	args               []string // flags common to the cluster
	cmd                *exec.Cmd
	exited             chan struct{} // closed when cmd has exited
}

// Cluster is a set of etcd members started by a test.
type Cluster struct {
	Members []*Member
}

// ClusterFlags time test clusters: fast enough elections that a killed leader is
// replaced within a second, slow enough not to flap on a loaded machine.
var ClusterFlags = []string{"--heartbeat-interval=50", "--election-timeout=500"}

// StartCluster starts n members and waits until every one is healthy. The
// members are killed when tb ends.
func StartCluster(tb testing.TB, n int, flags ...string) *Cluster {
	tb.Helper()
	bin := Binary(tb)
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

func tryStartCluster(tb testing.TB, bin string, n int, flags []string) (*Cluster, error) {
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{
			tb:        tb,
			bin:       bin,
			name:      fmt.Sprintf("m%d", i),
			dir:       tb.TempDir(),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	token := filepath.Base(c.Members[0].dir) // unique to this cluster
	for _, m := range c.Members {
		m.args = append([]string{
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-token=" + token,
			"--logger=zap", "--log-level=warn",
		}, flags...)
		if err := m.Start("new"); err != nil {
			c.Kill()
			return nil, err
		}
	}
	for _, m := range c.Members {
		if err := m.WaitHealthy(); err != nil {
			c.Kill()
			return nil, err
		}
	}
	tb.Cleanup(func() {
		c.Kill()
		if tb.Failed() {
			for _, m := range c.Members {
				m.logTail()
			}
		}
	})
	return c, nil
}

// Endpoints returns the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

func (c *Cluster) Kill() {
	for _, m := range c.Members {
		m.Kill()
	}
}

// Start starts the member's process (state: "new" for a new cluster,
// "existing" to restart on its data dir).
func (m *Member) Start(state string) error {
	args := append([]string{
		"--name=" + m.name,
		"--data-dir=" + filepath.Join(m.dir, "data"),
		"--listen-client-urls=" + m.ClientURL,
		"--advertise-client-urls=" + m.ClientURL,
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

// Kill kills the member's process, if running, and waits for it to exit.
func (m *Member) Kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Name is the member's name in the cluster.
func (m *Member) Name() string { return m.name }

// Running tells whether the member's process runs (not killed).
func (m *Member) Running() bool { return m.cmd != nil }

// Pid is the member's process id while it runs, else 0 (benchmarks read
// its CPU time and memory from /proc).
func (m *Member) Pid() int {
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Restart kills the member and starts it again on its data.
func (m *Member) Restart() {
	m.tb.Helper()
	m.Kill()
	if err := m.Start("existing"); err != nil {
		m.tb.Fatalf("restart %s: %v", m.name, err)
	}
	if err := m.WaitHealthy(); err != nil {
		m.tb.Fatalf("restart %s: %v", m.name, err)
	}
}

// WaitHealthy waits until the member serves /health with a leader.
func (m *Member) WaitHealthy() error {
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-m.exited:
			return fmt.Errorf("%s exited: %s", m.name, m.logLines(5))
		default:
		}
		resp, err := client.Get(m.ClientURL + "/health")
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
func (m *Member) logLines(n int) string {
	b, err := os.ReadFile(filepath.Join(m.dir, "etcd.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (m *Member) logTail() {
	m.tb.Logf("etcd %s log:\n%s", m.name, m.logLines(30))
}

// FreePorts returns n distinct loopback ports that were free just now.
func FreePorts(n int) ([]int, error) {
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
