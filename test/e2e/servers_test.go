package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fast leader election for tests: a dead leader is replaced within about
// 3 s instead of upstream's 15 s.
var fastElection = []string{"--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms"}

// startServer runs `moorage server` (no agent) with flags in a fresh data
// dir on 127.0.0.1:0; the test's cleanup stops it, and a server the test
// killed on purpose may have any exit code.
func startServer(t *testing.T, flags ...string) *moorage {
	t.Helper()
	requireE2E(t)
	dir := t.TempDir()
	m, err := launchCommand("", "server", dir, nil, flags...)
	if err != nil {
		t.Fatalf("moorage server: %v", err)
	}
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			if code, err := m.Stop(); err != nil || code != 0 {
				t.Errorf("stopping moorage server: exit %d, %v\noutput:\n%s", code, err, m.Output())
			}
		}
		os.RemoveAll(m.tmp)
	})
	return m
}

var leadingLine = regexp.MustCompile(`leading: running the controllers.*identity=(\S+)`)

// leaderIdentity is the identity in m's "leading" log line, "" if m has
// not led.
func (m *moorage) leaderIdentity() string {
	if r := leadingLine.FindStringSubmatch(m.Output()); r != nil {
		return r[1]
	}
	return ""
}

// leaseHolder is the holderIdentity of the leader Lease, read through m.
func (m *moorage) leaseHolder(t *testing.T, v int) string {
	r := m.kubectl(t, v, "get", "lease", "-n", "kube-system", "moorage-controllers", "-o", "jsonpath={.spec.holderIdentity}")
	if r.Code != 0 {
		return ""
	}
	return strings.TrimSpace(r.Stdout)
}

// boundPair applies a hostPath PV and a claim for it named name, through
// m, and waits until the claim is Bound: the binder runs somewhere.
func boundPair(t *testing.T, m *moorage, v int, name string) {
	t.Helper()
	manifest := fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: %[1]s
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /tmp/%[1]s}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: %[1]s
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {requests: {storage: 1Gi}}
`, name)
	expectOK(t, m.kubectlStdin(t, v, manifest, "apply", "-f", "-"), "persistentvolume/"+name+" created")
	waitCells(t, m, v, bindTimeout, []string{"get", "pvc"}, []string{name}, map[string]string{"STATUS": "Bound", "VOLUME": name})
}

// TestSeveralServers runs two `moorage server`s on one etcd: they share the
// CA and the admin token (one kubeconfig works against both), one of them
// leads (the Lease kube-system/moorage-controllers) and runs the
// controllers, the other takes over within seconds when the leader is
// killed, at once when it is stopped, and Service IPs handed out by both
// never collide.
func TestSeveralServers(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	endpoint := startEtcd(t)
	flags := append([]string{"--etcd-endpoints", endpoint}, fastElection...)
	a := startServer(t, flags...)
	b := startServer(t, flags...)

	// Shared secrets: the same CA and token in both data dirs; a's
	// kubeconfig works against b.
	for _, f := range []string{"tls/ca.crt", "tls/ca.key", "tls/sa.key", "token"} {
		da, _ := os.ReadFile(filepath.Join(a.DataDir, f))
		db, _ := os.ReadFile(filepath.Join(b.DataDir, f))
		if len(da) == 0 || string(da) != string(db) {
			t.Errorf("%s differs between the two servers' data dirs", f)
		}
	}
	expectOK(t, a.kubectl(t, v, "--server", b.URL, "get", "ns", "kube-system"), "kube-system")

	// One leader, named in the Lease.
	var leader, follower *moorage
	if !eventually(20*time.Second, func() bool {
		switch holder := a.leaseHolder(t, v); {
		case holder != "" && holder == a.leaderIdentity():
			leader, follower = a, b
		case holder != "" && holder == b.leaderIdentity():
			leader, follower = b, a
		}
		return leader != nil
	}) {
		t.Fatalf("no server leads: lease holder %q\nserver a:\n%s\nserver b:\n%s", a.leaseHolder(t, v), a.Output(), b.Output())
	}
	if follower.leaderIdentity() != "" {
		t.Fatalf("both servers say they lead\nfollower:\n%s", follower.Output())
	}
	boundPair(t, follower, v, "through-the-follower")

	// Service IPs from both servers at once never collide.
	var wg sync.WaitGroup
	for i := range 10 {
		for j, m := range []*moorage{a, b} {
			wg.Go(func() {
				expectOK(t, m.kubectl(t, v, "create", "service", "clusterip", fmt.Sprintf("svc-%d-%d", i, j), "--tcp", "80:80"))
			})
		}
	}
	wg.Wait()
	ips := nonEmptyLines(a.mustKubectl(t, v, "get", "svc", "-o", "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}"))
	seen := map[string]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Errorf("cluster IP %s given to two Services: %v", ip, ips)
		}
		seen[ip] = true
	}

	// Kill the leader: the follower leads within seconds and binds.
	killed := time.Now()
	leader.kill()
	if !eventually(30*time.Second, func() bool { return follower.leaderIdentity() != "" }) {
		t.Fatalf("the follower did not take over within 30 s of the leader's death\n%s", follower.Output())
	}
	t.Logf("failover after the leader was killed: %v", time.Since(killed).Round(100*time.Millisecond))
	if h := follower.leaseHolder(t, v); h != follower.leaderIdentity() {
		t.Errorf("the Lease names %q, want the new leader %q", h, follower.leaderIdentity())
	}
	boundPair(t, follower, v, "after-failover")

	// The killed server comes back as a follower; stopping the leader
	// hands the lease over at once (it gives it up).
	back, err := launchCommand("", "server", leader.DataDir, nil, flags...)
	if err != nil {
		t.Fatalf("restarting the killed server: %v", err)
	}
	t.Cleanup(func() { back.Stop(); os.RemoveAll(back.tmp) })
	time.Sleep(time.Second)
	if back.leaderIdentity() != "" {
		t.Fatalf("the restarted server leads although the other holds the lease\n%s", back.Output())
	}
	stopped := time.Now()
	if code, err := follower.Stop(); err != nil || code != 0 {
		t.Fatalf("stopping the leader: exit %d, %v\n%s", code, err, follower.Output())
	}
	if !eventually(10*time.Second, func() bool { return back.leaderIdentity() != "" }) {
		t.Fatalf("the restarted server did not take over within 10 s of the leader's stop\n%s", back.Output())
	}
	t.Logf("handover after the leader stopped: %v", time.Since(stopped).Round(100*time.Millisecond))
	boundPair(t, back, v, "after-handover")
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
