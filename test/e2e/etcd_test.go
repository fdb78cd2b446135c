package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// etcdBinary is Debian's etcd-server (hack/install-etcd.sh installs it).
const etcdBinary = "/usr/bin/etcd"

// startEtcd runs a one-member etcd on loopback ports of its own and returns
// its client URL; the test's cleanup stops it.
func startEtcd(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		t.Fatalf("%s: %v; run hack/install-etcd.sh", etcdBinary, err)
	}
	client, peer := "http://"+freeLoopbackAddr(t), "http://"+freeLoopbackAddr(t)
	dir := t.TempDir()
	cmd := exec.Command(etcdBinary, "--name=e2e", "--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer, "--log-level=error", "--logger=zap")
	out, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
	})
	if !eventually(10*time.Second, func() bool {
		c, err := net.Dial("tcp", client[len("http://"):])
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		log, _ := os.ReadFile(out.Name())
		t.Fatalf("etcd does not listen on %s:\n%s", client, log)
	}
	return client
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestEtcdBackend runs moorage on etcd (--etcd-endpoints): seed 001's
// task-pv pair binds, nothing is kept in the data dir's embedded store, and
// after a restart on the same etcd the objects are there and binding goes
// on; a second server with another --etcd-prefix on the same etcd sees none
// of them.
func TestEtcdBackend(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	endpoint := startEtcd(t)
	dir := t.TempDir()
	m := startMoorageWith(t, dir, "--etcd-endpoints", endpoint)
	expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("seed001-task-pv-volume.yaml"), "-f", testdata("seed001-task-pv-claim.yaml")),
		"persistentvolume/task-pv-volume created", "persistentvolumeclaim/task-pv-claim created")
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc"}, []string{"task-pv-claim"}, map[string]string{"STATUS": "Bound", "VOLUME": "task-pv-volume"})
	if _, err := os.Stat(filepath.Join(dir, "state.db")); !os.IsNotExist(err) {
		t.Errorf("the data dir has an embedded store (state.db: %v); objects should be in etcd only", err)
	}

	if code, err := m.Stop(); err != nil || code != 0 {
		t.Fatalf("stopping moorage: exit %d, %v\n%s", code, err, m.Output())
	}
	m = startMoorageWith(t, dir, "--etcd-servers", endpoint) // kube-apiserver's name for the flag
	waitCells(t, m, v, bindTimeout, []string{"get", "pv"}, []string{"task-pv-volume"}, map[string]string{"STATUS": "Bound", "CLAIM": "default/task-pv-claim"})
	pv := fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: after-restart
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: %s}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: after-restart
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: after-restart
  resources: {requests: {storage: 1Gi}}
`, t.TempDir())
	expectOK(t, m.kubectlStdin(t, v, pv, "apply", "-f", "-"), "persistentvolume/after-restart created")
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc"}, []string{"after-restart"}, map[string]string{"STATUS": "Bound", "VOLUME": "after-restart"})

	other := startMoorageWith(t, t.TempDir(), "--etcd-endpoints", endpoint, "--etcd-prefix", "/other")
	r := other.kubectl(t, v, "get", "pv")
	expectOK(t, r)
	if r.Stdout != "" {
		t.Errorf("a server with another prefix sees the first one's volumes:\n%s", r)
	}

	out, err := exec.Command(moorageBin, "server", "--data-dir", t.TempDir(), "--etcd-cafile", "/nonexistent").CombinedOutput()
	if want := "--etcd-cafile, --etcd-certfile and --etcd-keyfile need --etcd-endpoints"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("moorage server --etcd-cafile without endpoints: %v\n%s\nwant an error saying %q", err, out, want)
	}
}
