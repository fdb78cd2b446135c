package scale

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// etcdProcess is a one-member etcd started by a benchmark.
type etcdProcess struct {
	endpoint string
	cmd      *exec.Cmd
}

// startEtcd runs Debian's etcd (hack/install-etcd.sh) with its production
// settings (every commit fsync'd) on loopback ports of its own, its data in
// a temporary directory; it is killed when tb ends. Without the binary the
// benchmark skips.
func startEtcd(tb testing.TB) *etcdProcess {
	tb.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/etcd"); serr != nil {
			tb.Skip("etcd not found: run hack/install-etcd.sh (as root) to measure the etcd backend")
		}
		bin = "/usr/bin/etcd"
	}
	dir := tb.TempDir()
	client, peer := "http://"+freeAddr(tb), "http://"+freeAddr(tb)
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "--name=scale", "--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=scale="+peer, "--logger=zap", "--log-level=error")
	cmd.Stdout, cmd.Stderr = log, log
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") { // they would conflict with the flags
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", strings.TrimPrefix(client, "http://"))
		if err == nil {
			c.Close()
			return &etcdProcess{endpoint: client, cmd: cmd}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			tb.Fatalf("etcd does not listen on %s: %v\n%s", client, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
