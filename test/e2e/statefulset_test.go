package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// nginxSlim is seed 002's image; here busybox's httpd stands in for it,
// serving /usr/share/nginx/html on port 80 as nginx-slim does, and
// stopping on SIGTERM as nginx does (a shell traps it: httpd as PID 1
// would ignore it and wait out the grace period).
const nginxSlim = "registry.cn-hangzhou.aliyuncs.com/chenshi-kubernetes/nginx-slim:0.8"

func hostNginxSlim(t *testing.T, dataDir string) {
	t.Helper()
	hostImages(t, dataDir,
		[]string{nginxSlim, "--entrypoint", "sh", "--cmd", "-c", "--cmd", "trap 'exit 0' TERM; busybox httpd -f -p 80 -h /usr/share/nginx/html & wait"},
		[]string{"busybox"})
}

// hostImages names host programs as images on the node of dataDir: each
// element is the arguments of one `moorage image host`.
func hostImages(t *testing.T, dataDir string, images ...[]string) {
	t.Helper()
	for _, args := range images {
		cmd := exec.Command(moorageBin, append([]string{"image", "host", "--data-dir", dataDir}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("moorage image host %s: %v\n%s", args[0], err, out)
		}
	}
}

// startLabServer runs `moorage up` as kube-node-1 on machine 0 of the lab,
// with nginx-slim, busybox and the given images (hostImages).
func startLabServer(t *testing.T, l *lab, images ...[]string) *moorage {
	t.Helper()
	dir := t.TempDir()
	hostNginxSlim(t, dir)
	hostImages(t, dir, images...)
	m, err := launchIn(l.machines[0], dir, nil, "--listen", machineIP(0)+":0", "--node-name", "kube-node-1")
	if err != nil {
		t.Fatalf("moorage up on machine 0: %v", err)
	}
	t.Cleanup(func() {
		if code, err := m.Stop(); err != nil || code != 0 {
			t.Errorf("stopping moorage: exit %d, %v\noutput:\n%s", code, err, m.Output())
		}
		if out, err := exec.Command(moorageBin, "killall", "--data-dir", dir).CombinedOutput(); err != nil {
			t.Errorf("moorage killall: %v\n%s", err, out)
		}
		os.RemoveAll(m.tmp)
	})
	return m
}

// joinLabAgent runs `moorage agent` as node name on machine i of the lab,
// joined with a token from `moorage token create`, with the images of
// startLabServer.
func joinLabAgent(t *testing.T, l *lab, m *moorage, i int, name string, images ...[]string) *syncBuffer {
	t.Helper()
	out, err := inNetNS(m.netns, moorageBin, "token", "create", "--data-dir", m.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("moorage token create: %v\n%s", err, out)
	}
	token := strings.TrimSpace(string(out))
	dir := t.TempDir()
	hostNginxSlim(t, dir)
	hostImages(t, dir, images...)
	return runAgent(t, inNetNS(l.machines[i], moorageBin, "agent", "--server", m.URL, "--token", token, "--data-dir", dir,
		"--node-name", name, "--listen", machineIP(i)+":0"), dir)
}

// TestSeed002Lab is seed 002's lab as written, on two nodes (two machines
// of a lab, each with its own address and disk directory): the
// local-storage class, a local PV on each node, the headless nginx Service
// and the StatefulSet web. Claims www-web-0 and www-web-1 are Bound, the
// pods are created in order, each serves what is written on its volume,
// by name from the other node (web-0.nginx.default.svc.cluster.local), and
// what web-0 wrote survives deleting web-0.
func TestSeed002Lab(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	l := newLab(t, 2)
	m := startLabServer(t, l)
	agent := joinLabAgent(t, l, m, 1, "kube-node-2")
	if !eventually(podTimeout, func() bool {
		out := m.kubectl(t, v, "get", "nodes").Stdout
		return regexp.MustCompile(`(?m)^kube-node-1\s+Ready\s`).MatchString(out) && regexp.MustCompile(`(?m)^kube-node-2\s+Ready\s`).MatchString(out)
	}) {
		t.Fatalf("nodes not Ready:\n%s\nagent:\n%s", m.kubectl(t, v, "get", "nodes"), agent)
	}

	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed002-local-storage.yaml")), `storageclass.storage.k8s.io/local-storage created`)
	for i, node := range []string{"kube-node-1", "kube-node-2"} {
		dir := filepath.Join(t.TempDir(), node)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pv := strings.Replace(string(mustRead(t, testdata(fmt.Sprintf("seed002-local-pv%d.yaml", i+1)))), "path: /tmp", "path: "+dir, 1)
		expectOK(t, m.kubectlStdin(t, v, pv, "create", "-f", "-"), fmt.Sprintf("persistentvolume/local-pv%d created", i+1))
	}
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed002-nginx.yaml"), "-f", testdata("seed002-web.yaml")), "service/nginx created", "statefulset.apps/web created")

	waitPodRow(t, m, v, "default", "web-0", "1/1", "Running")
	waitPodRow(t, m, v, "default", "web-1", "1/1", "Running")
	pvc := m.mustKubectl(t, v, "get", "pvc")
	for _, want := range []string{`www-web-0\s+Bound\s+local-pv[12]\s+1Gi\s+RWO\s+local-storage`, `www-web-1\s+Bound\s+local-pv[12]\s+1Gi\s+RWO\s+local-storage`} {
		if !regexp.MustCompile(want).MatchString(pvc) {
			t.Errorf("kubectl get pvc: no line like %q:\n%s", want, pvc)
		}
	}
	expectOK(t, m.kubectl(t, v, "get", "service", "nginx"), "None")

	// In order: web-1 was created once web-0 was Ready.
	web0, web1 := m.pod(t, v, "default", "web-0"), m.pod(t, v, "default", "web-1")
	if ready := readySince(web0); ready.IsZero() || web1.CreationTimestamp.Time.Before(ready.Truncate(time.Second)) {
		t.Errorf("web-1 created at %v, before web-0 was Ready (%v)", web1.CreationTimestamp, ready)
	}
	if web0.Spec.NodeName == web1.Spec.NodeName {
		t.Errorf("both pods on %s; each node has one volume", web0.Spec.NodeName)
	}

	for _, p := range []string{"web-0", "web-1"} {
		m.mustKubectl(t, v, "exec", p, "--", "sh", "-c", "echo hello from "+p+" > /usr/share/nginx/html/index.html")
	}
	// Stable names, across nodes.
	expectOK(t, m.kubectl(t, v, "exec", "web-1", "--", "busybox", "wget", "-qO-", "http://web-0.nginx.default.svc.cluster.local/"), "hello from web-0")
	expectOK(t, m.kubectl(t, v, "exec", "web-0", "--", "busybox", "wget", "-qO-", "http://web-1.nginx/"), "hello from web-1")
	expectOK(t, m.kubectl(t, v, "exec", "web-0", "--", "hostname"), "web-0")

	// web-0 comes back with its own volume.
	m.mustKubectl(t, v, "delete", "pod", "web-0")
	waitPodRow(t, m, v, "default", "web-0", "1/1", "Running")
	expectOK(t, m.kubectl(t, v, "exec", "web-1", "--", "busybox", "wget", "-qO-", "http://web-0.nginx.default.svc.cluster.local/"), "hello from web-0")
}

// readySince is when the pod last became Ready.
func readySince(p *corev1.Pod) time.Time {
	if p == nil {
		return time.Time{}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// webSet is seed 002's StatefulSet web on the built-in CSI driver's class
// (its claims get volumes made for them) with a retention policy.
func webSet(whenDeleted, whenScaled string) string {
	return `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-csi}
provisioner: local.csi.moorage.io
volumeBindingMode: WaitForFirstConsumer
---
` + strings.NewReplacer(
		"storageClassName: local-storage", "storageClassName: local-csi",
		"  replicas: 2\n", "  replicas: 2\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: "+whenDeleted+", whenScaled: "+whenScaled+"}\n",
	).Replace(readTestdata("seed002-web.yaml")) + "---\n" + readTestdata("seed002-nginx.yaml")
}

// claimNames lists the claims of the namespace, sorted.
func (m *moorage) claimNames(t *testing.T, v int) string {
	t.Helper()
	return strings.TrimSpace(m.mustKubectl(t, v, "get", "pvc", "-o", "jsonpath={range .items[*]}{.metadata.name} {end}"))
}

// TestStatefulSetScaleAndRetention scales seed 002's web 2 → 5 → 1 under
// each retention policy: pods come up in order and go in reverse; claims
// stay (Retain) or are deleted with their pods (whenScaled: Delete) or
// with the set (whenDeleted: Delete). kubectl rollout works on it.
func TestStatefulSetScaleAndRetention(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	hostNginxSlim(t, m.DataDir)

	m.mustKubectl(t, v, "apply", "-f", m.writeFile(t, "web.yaml", webSet("Retain", "Retain")))
	waitPodRow(t, m, v, "default", "web-1", "1/1", "Running")
	expectOK(t, m.kubectl(t, v, "scale", "statefulset", "web", "--replicas=5"), "statefulset.apps/web scaled")
	expectOK(t, m.kubectl(t, v, "rollout", "status", "statefulset/web", "--timeout=90s"), "5 new pods have been updated")
	if got := m.claimNames(t, v); got != "www-web-0 www-web-1 www-web-2 www-web-3 www-web-4" {
		t.Fatalf("claims after scaling to 5: %q", got)
	}
	// Pods were created in order: each after the one before was Ready.
	for i := 1; i < 5; i++ {
		prev, cur := m.pod(t, v, "default", fmt.Sprintf("web-%d", i-1)), m.pod(t, v, "default", fmt.Sprintf("web-%d", i))
		if cur.CreationTimestamp.Time.Before(readySince(prev).Truncate(time.Second)) {
			t.Errorf("web-%d created at %v, before web-%d was Ready at %v", i, cur.CreationTimestamp, i-1, readySince(prev))
		}
	}
	m.mustKubectl(t, v, "scale", "statefulset", "web", "--replicas=1")
	if !eventually(podTimeout, func() bool { return !strings.Contains(m.kubectl(t, v, "get", "pods").Stdout, "web-1") }) {
		t.Fatalf("scaled to 1, pods:\n%s", m.kubectl(t, v, "get", "pods"))
	}
	if got := m.claimNames(t, v); got != "www-web-0 www-web-1 www-web-2 www-web-3 www-web-4" {
		t.Errorf("whenScaled Retain kept %q", got)
	}
	// Scale-down went in reverse: the events name web-4 first.
	events := m.mustKubectl(t, v, "get", "events", "--field-selector", "reason=SuccessfulDelete", "--sort-by", ".metadata.creationTimestamp", "-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}")
	if i4, i1 := strings.Index(events, "delete Pod web-4"), strings.Index(events, "delete Pod web-1"); i4 < 0 || i1 < i4 {
		t.Errorf("scale-down order, by the events:\n%s", events)
	}

	// whenScaled: Delete: claims of removed replicas go with them.
	m.mustKubectl(t, v, "patch", "statefulset", "web", "--type=merge", "-p", `{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Delete"}}}`)
	m.mustKubectl(t, v, "scale", "statefulset", "web", "--replicas=3")
	waitPodRow(t, m, v, "default", "web-2", "1/1", "Running")
	m.mustKubectl(t, v, "scale", "statefulset", "web", "--replicas=1")
	if !eventually(podTimeout, func() bool { return m.claimNames(t, v) == "www-web-0 www-web-3 www-web-4" }) {
		t.Errorf("whenScaled Delete: claims %q, want www-web-0 www-web-3 www-web-4 (the claims of web-1 and web-2 deleted)", m.claimNames(t, v))
	}

	// A template change rolls out, and rolls back.
	m.mustKubectl(t, v, "patch", "statefulset", "web", "--type=merge", "-p", `{"spec":{"template":{"metadata":{"labels":{"tier":"front"}}}}}`)
	expectOK(t, m.kubectl(t, v, "rollout", "status", "statefulset/web", "--timeout=90s"), "partitioned roll out complete")
	expectOK(t, m.kubectl(t, v, "rollout", "history", "statefulset/web"), "REVISION", "1 ", "2 ")
	expectOK(t, m.kubectl(t, v, "rollout", "undo", "statefulset/web"), "statefulset.apps/web rolled back")

	// whenDeleted: Delete: the set takes its claims with it.
	m.mustKubectl(t, v, "patch", "statefulset", "web", "--type=merge", "-p", `{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Delete"}}}`)
	waitPodRow(t, m, v, "default", "web-0", "1/1", "Running")
	m.mustKubectl(t, v, "delete", "statefulset", "web")
	if !eventually(podTimeout, func() bool { return m.claimNames(t, v) == "www-web-3 www-web-4" }) {
		t.Errorf("whenDeleted Delete: claims %q, want only www-web-3 www-web-4 (not owned by any replica)", m.claimNames(t, v))
	}
}

func readTestdata(name string) string {
	b, err := os.ReadFile(testdata(name))
	if err != nil {
		panic(err) // the files are part of the test
	}
	return string(b)
}
