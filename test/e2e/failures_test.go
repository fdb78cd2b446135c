package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// proc is a process of a lab machine the test kills, stops and restarts.
type proc struct {
	name  string
	args  []string // the command, run in netns
	netns string
	out   *syncBuffer
	cmd   *exec.Cmd
	done  chan struct{}
}

func startProc(t *testing.T, name, netns string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, args: args, netns: netns}
	p.start(t)
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.out = &syncBuffer{}
	p.cmd = inNetNS(p.netns, p.args[0], p.args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM, and SIGKILL after 20 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

// startLabEtcd runs an etcd member on each of machines 0..n-1 of the lab,
// as one cluster, and returns the members and their client URLs.
func startLabEtcd(t *testing.T, l *lab, n int) ([]*proc, string) {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		t.Fatalf("%s: %v; run hack/install-etcd.sh", etcdBinary, err)
	}
	var initial, clients []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("etcd%d=http://%s:2380", i, machineIP(i)))
		clients = append(clients, fmt.Sprintf("http://%s:2379", machineIP(i)))
	}
	var members []*proc
	for i := range n {
		dir := t.TempDir()
		members = append(members, startProc(t, fmt.Sprintf("etcd%d", i), l.machines[i], etcdBinary,
			"--name", fmt.Sprintf("etcd%d", i), "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
			"--listen-peer-urls", fmt.Sprintf("http://%s:2380", machineIP(i)),
			"--initial-advertise-peer-urls", fmt.Sprintf("http://%s:2380", machineIP(i)),
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--log-level", "error", "--logger", "zap"))
	}
	return members, strings.Join(clients, ",")
}

// setLink sets machine i's port on the lab's switch up or down: its cable
// plugged in or pulled.
func (l *lab) setLink(t *testing.T, i int, up bool) {
	t.Helper()
	h, ns := nsHandle(t, filepath.Join(l.dir, "switch"))
	defer ns.Close()
	defer h.Close()
	port, err := h.LinkByName(fmt.Sprintf("port%d", i))
	if err != nil {
		t.Fatal(err)
	}
	if up {
		err = h.LinkSetUp(port)
	} else {
		err = h.LinkSetDown(port)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// nodeReady is the Ready condition's status of each node, by name.
func nodeReady(t *testing.T, m *moorage, v int) map[string]string {
	var list corev1.NodeList
	r := m.kubectl(t, v, "get", "nodes", "-o", "json")
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &list) != nil {
		return nil
	}
	out := map[string]string{}
	for _, n := range list.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				out[n.Name] = string(c.Status)
			}
		}
	}
	return out
}

// checkClaimsBoundOnce: every PV's claimRef names a claim bound to it,
// and no two claims name one volume.
func checkClaimsBoundOnce(t *testing.T, m *moorage, v int) {
	t.Helper()
	var pvs corev1.PersistentVolumeList
	var pvcs corev1.PersistentVolumeClaimList
	m.getJSON(t, v, &pvs, "pv")
	m.getJSON(t, v, &pvcs, "pvc", "-A")
	byVolume := map[string]string{}
	for _, c := range pvcs.Items {
		if c.Spec.VolumeName == "" {
			continue
		}
		if other, ok := byVolume[c.Spec.VolumeName]; ok {
			t.Errorf("claims %s and %s/%s both name volume %s", other, c.Namespace, c.Name, c.Spec.VolumeName)
		}
		byVolume[c.Spec.VolumeName] = c.Namespace + "/" + c.Name
	}
	for _, pv := range pvs.Items {
		if ref := pv.Spec.ClaimRef; ref != nil && pv.Status.Phase == corev1.VolumeBound && byVolume[pv.Name] != ref.Namespace+"/"+ref.Name {
			t.Errorf("volume %s is Bound to %s/%s, but that claim names %q", pv.Name, ref.Namespace, ref.Name, byVolume[pv.Name])
		}
	}
}

// TestFailures is issue 7's cluster on one host: a 3-member etcd (machines
// 0-2), two servers (machines 0 and 1) and three agents (machines 2-4)
// joined to both servers. Seed 002's StatefulSet web keeps what it wrote
// on its local volumes, and claims are bound once, after each of: the
// leading server killed (the other leads, the agents stay Ready through
// it), an etcd member killed, a node's network cut (the node goes
// NotReady and its pods not Ready; a Deployment's pod is replaced on
// another node, a StatefulSet pod pinned there by its local volume waits),
// and everything stopped and started again.
func TestFailures(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	l := newLab(t, 5)
	etcds, endpoints := startLabEtcd(t, l, 3)
	serverFlags := append([]string{"--etcd-endpoints", endpoints, "--node-monitor-grace-period", "20s"}, fastElection...)
	servers := make([]*moorage, 2)
	serverDirs := []string{t.TempDir(), t.TempDir()}
	startServerOn := func(i int) {
		t.Helper()
		m, err := launchCommand(l.machines[i], "server", serverDirs[i], nil, append([]string{"--listen", machineIP(i) + ":6443"}, serverFlags...)...)
		if err != nil {
			t.Fatalf("moorage server on machine %d: %v", i, err)
		}
		servers[i] = m
	}
	startServerOn(0)
	startServerOn(1)
	t.Cleanup(func() {
		for _, m := range servers {
			m.Stop()
			os.RemoveAll(m.tmp)
		}
	})
	a := servers[0]
	out, err := inNetNS(a.netns, moorageBin, "token", "create", "--data-dir", a.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("moorage token create: %v\n%s", err, out)
	}
	token := strings.TrimSpace(string(out))
	both := servers[0].URL + "," + servers[1].URL
	nodes := []string{"kube-node-1", "kube-node-2", "kube-node-3"}
	var agents []*proc
	for n, name := range nodes {
		i := n + 2
		dir := t.TempDir()
		hostNginxSlim(t, dir)
		// Cleanups run last first: the node is cleaned up (killall) after its
		// agent has stopped, so that no running agent mounts a pod's volumes
		// again behind killall's back (the data dir could not be removed).
		t.Cleanup(func() {
			if b, err := exec.Command(moorageBin, "killall", "--data-dir", dir).CombinedOutput(); err != nil {
				t.Errorf("moorage killall: %v\n%s", err, b)
			}
		})
		p := startProc(t, name, l.machines[i], moorageBin, "agent", "--server", both, "--token", token, "--data-dir", dir,
			"--node-name", name, "--listen", machineIP(i)+":10250")
		agents = append(agents, p)
		// A restart must not join again (the token may be gone by then).
		p.args = []string{moorageBin, "agent", "--data-dir", dir, "--node-name", name, "--listen", machineIP(i) + ":10250"}
	}
	allReady := func(m *moorage, timeout time.Duration) {
		t.Helper()
		if !eventually(timeout, func() bool {
			r := nodeReady(t, m, v)
			return r["kube-node-1"] == "True" && r["kube-node-2"] == "True" && r["kube-node-3"] == "True"
		}) {
			t.Fatalf("nodes not all Ready:\n%s\nagents:\n%s\n%s\n%s", m.kubectl(t, v, "get", "nodes"), agents[0].out, agents[1].out, agents[2].out)
		}
	}
	allReady(a, podTimeout)

	// Seed 002's web on local volumes of kube-node-1 and kube-node-2.
	expectOK(t, a.kubectl(t, v, "create", "-f", testdata("seed002-local-storage.yaml")))
	for i, node := range []string{"kube-node-1", "kube-node-2"} {
		dir := filepath.Join(t.TempDir(), node)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pv := strings.Replace(readTestdata(fmt.Sprintf("seed002-local-pv%d.yaml", i+1)), "path: /tmp", "path: "+dir, 1)
		expectOK(t, a.kubectlStdin(t, v, pv, "create", "-f", "-"))
	}
	expectOK(t, a.kubectl(t, v, "create", "-f", testdata("seed002-nginx.yaml"), "-f", testdata("seed002-web.yaml")))
	waitPodRow(t, a, v, "default", "web-0", "1/1", "Running")
	waitPodRow(t, a, v, "default", "web-1", "1/1", "Running")
	for _, p := range []string{"web-0", "web-1"} {
		a.mustKubectl(t, v, "exec", p, "--", "sh", "-c", "echo kept by "+p+" > /usr/share/nginx/html/index.html")
	}
	// web keeps its data: read through m from the other pod, by name.
	webKeeps := func(m *moorage, timeout time.Duration) {
		t.Helper()
		for _, p := range []string{"web-0", "web-1"} {
			waitPodRow(t, m, v, "default", p, "1/1", "Running")
		}
		for _, pair := range [][2]string{{"web-0", "web-1"}, {"web-1", "web-0"}} {
			var last result
			if !eventually(timeout, func() bool {
				last = m.kubectl(t, v, "exec", pair[0], "--", "busybox", "wget", "-qO-", "http://"+pair[1]+".nginx/")
				return strings.Contains(last.Stdout, "kept by "+pair[1])
			}) {
				t.Fatalf("%s's data, read from %s:\n%s", pair[1], pair[0], last)
			}
		}
		checkClaimsBoundOnce(t, m, v)
	}
	webKeeps(a, 30*time.Second)

	// 1. Kill the leading server.
	leader := -1
	if !eventually(20*time.Second, func() bool {
		holder := a.leaseHolder(t, v)
		for i, m := range servers {
			if holder != "" && holder == m.leaderIdentity() {
				leader = i
			}
		}
		return leader >= 0
	}) {
		t.Fatalf("no leader: lease holder %q", a.leaseHolder(t, v))
	}
	other := servers[1-leader]
	servers[leader].kill()
	if !eventually(30*time.Second, func() bool { return other.leaderIdentity() != "" }) {
		t.Fatalf("the other server did not take over\n%s", other.Output())
	}
	boundPair(t, other, v, "after-server-killed")
	// The agents went over to the other server: they stay (or are again) Ready.
	time.Sleep(25 * time.Second) // more than the grace period
	allReady(other, 30*time.Second)
	webKeeps(other, 30*time.Second)
	startServerOn(leader)

	// 2. Kill an etcd member: the other two have a quorum.
	etcds[0].kill()
	boundPair(t, other, v, "after-etcd-member-killed")
	webKeeps(other, 30*time.Second)
	etcds[0].start(t)

	// 3. Cut the network of the node that runs a Deployment's pod, which
	// tolerates an unreachable node for 2 s only.
	m := servers[1]
	expectOK(t, m.kubectlStdin(t, v, `apiVersion: apps/v1
kind: Deployment
metadata: {name: spare}
spec:
  replicas: 1
  selector: {matchLabels: {app: spare}}
  template:
    metadata: {labels: {app: spare}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: c, image: busybox, command: [sleep, "3600"]}
`, "apply", "-f", "-"))
	var first corev1.Pod
	if !eventually(podTimeout, func() bool {
		var pods corev1.PodList
		m.getJSON(t, v, &pods, "pods", "-l", "app=spare")
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				first = p
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the Deployment's pod does not run:\n%s", m.kubectl(t, v, "get", "pods", "-o", "wide"))
	}
	cut := -1
	for n, name := range nodes {
		if name == first.Spec.NodeName {
			cut = n + 2
		}
	}
	web := m.pod(t, v, "default", "web-0")
	pinned := "web-0"
	if web.Spec.NodeName != first.Spec.NodeName {
		pinned = "web-1"
	}
	pinnedHere := m.pod(t, v, "default", pinned).Spec.NodeName == first.Spec.NodeName
	t.Logf("cutting the network of machine %d (node %s, which runs %s; %s pinned there: %v)", cut, first.Spec.NodeName, first.Name, pinned, pinnedHere)
	l.setLink(t, cut, false)
	if !eventually(60*time.Second, func() bool { return nodeReady(t, m, v)[first.Spec.NodeName] == "Unknown" }) {
		t.Fatalf("node %s not NotReady after its network was cut:\n%s", first.Spec.NodeName, m.kubectl(t, v, "get", "nodes"))
	}
	expectOK(t, m.kubectl(t, v, "get", "nodes"), "NotReady")
	// Replaced on another node.
	var replacement corev1.Pod
	if !eventually(podTimeout, func() bool {
		var pods corev1.PodList
		m.getJSON(t, v, &pods, "pods", "-l", "app=spare")
		for _, p := range pods.Items {
			if p.Name != first.Name && p.Status.Phase == corev1.PodRunning {
				replacement = p
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the Deployment's pod was not replaced:\n%s", m.kubectl(t, v, "get", "pods", "-o", "wide"))
	}
	if replacement.Spec.NodeName == first.Spec.NodeName {
		t.Errorf("the replacement runs on the unreachable node %s", first.Spec.NodeName)
	}
	if pinnedHere {
		// The StatefulSet's pod waits: no second web pod elsewhere.
		time.Sleep(5 * time.Second)
		if p := m.pod(t, v, "default", pinned); p != nil && p.Spec.NodeName != first.Spec.NodeName {
			t.Errorf("%s moved to %s, away from its local volume on %s", pinned, p.Spec.NodeName, first.Spec.NodeName)
		}
	}
	l.setLink(t, cut, true)
	allReady(m, 60*time.Second)
	webKeeps(m, 60*time.Second)

	// 4. Restart everything.
	for _, p := range agents {
		p.stop()
	}
	for _, s := range servers {
		s.Stop()
	}
	for _, e := range etcds {
		e.stop()
	}
	for _, e := range etcds {
		e.start(t)
	}
	startServerOn(0)
	startServerOn(1)
	for _, p := range agents {
		p.start(t)
	}
	allReady(servers[0], podTimeout)
	webKeeps(servers[0], 60*time.Second)
	if !regexp.MustCompile(`spare-\S+\s+1/1\s+Running`).MatchString(servers[0].mustKubectl(t, v, "get", "pods")) {
		t.Errorf("the Deployment's pod does not run after the restart:\n%s", servers[0].kubectl(t, v, "get", "pods", "-o", "wide"))
	}
}
