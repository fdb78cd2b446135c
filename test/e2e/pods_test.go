package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// podTimeout bounds a pod's start: image lookup, volumes, runc.
const podTimeout = 60 * time.Second

// hostImage names a host program as an image on m's node
// (`moorage image host`), as a user without a registry does.
func (m *moorage) hostImage(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(moorageBin, append([]string{"image", "host", "--data-dir", m.DataDir, name}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("moorage image host %s: %v\n%s", name, err, out)
	}
}

// pod reads a pod as JSON.
func (m *moorage) pod(t *testing.T, v int, ns, name string) *corev1.Pod {
	t.Helper()
	r := m.kubectl(t, v, "get", "pod", name, "-n", ns, "-o", "json")
	if r.Code != 0 {
		return nil
	}
	var p corev1.Pod
	if err := json.Unmarshal([]byte(r.Stdout), &p); err != nil {
		t.Fatalf("decoding pod: %v", err)
	}
	return &p
}

// waitPodRow waits until `kubectl get pod NAME` shows the READY and STATUS
// values given.
func waitPodRow(t *testing.T, m *moorage, v int, ns, name, ready, status string) {
	t.Helper()
	var last result
	if !eventually(podTimeout, func() bool {
		last = m.kubectl(t, v, "get", "pod", name, "-n", ns)
		r, ok1 := columnValue(last.Stdout, "READY", name)
		s, ok2 := columnValue(last.Stdout, "STATUS", name)
		return ok1 && ok2 && (ready == "" || r == ready) && s == status
	}) {
		t.Fatalf("pod %s never showed READY %s STATUS %s\n%s\n%s", name, ready, status, last, m.kubectl(t, v, "describe", "pod", name, "-n", ns).Stdout)
	}
}

// TestPodSeedEmptyDir runs seed 000's hue-scheduler as written: what one
// container writes into the shared emptyDir the other reads; then the
// `medium: Memory` variant, which is a tmpfs.
func TestPodSeedEmptyDir(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "the_g1g1/hue-global-listener", "--entrypoint", "sh", "--cmd", "-c", "--cmd",
		"echo notification-42 > /notifications/msg; grep ' /notifications ' /proc/mounts; exec sleep 3600")
	m.hostImage(t, "the_g1g1/hue-job-scheduler", "--entrypoint", "sh", "--cmd", "-c", "--cmd",
		"until cat /incoming/msg 2>/dev/null; do sleep 0.1; done; exec sleep 3600")

	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("pods/seed000-hue-scheduler.yaml")), "pod/hue-scheduler created")
	waitPodRow(t, m, v, "default", "hue-scheduler", "2/2", "Running")
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "logs", "hue-scheduler", "-c", "hue-job-scheduler").Stdout, "notification-42")
	}) {
		t.Fatalf("the job scheduler never read the listener's notification\n%s", m.kubectl(t, v, "logs", "hue-scheduler", "-c", "hue-job-scheduler"))
	}
	// The events a kubectl user expects, in the kubelet's words.
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "hue-scheduler"},
		`(?m)^Node:\s+\S+/\S+$`, `(?m)^Status:\s+Running$`,
		`Normal\s+Scheduled\s+.*default-scheduler\s+Successfully assigned default/hue-scheduler to `,
		`Normal\s+Created\s+.*kubelet\s+Created container: hue-global-listener`,
		`Normal\s+Started\s+.*kubelet\s+Started container hue-job-scheduler`)

	// medium: Memory: the listener sees a tmpfs.
	mem := strings.Replace(readFile(t, testdata("pods/seed000-hue-scheduler.yaml")), "emptyDir: {}", "emptyDir:\n      medium: Memory", 1)
	mem = strings.Replace(mem, "name: hue-scheduler", "name: hue-scheduler-mem", 1)
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "mem.yaml", mem)), "pod/hue-scheduler-mem created")
	waitPodRow(t, m, v, "default", "hue-scheduler-mem", "2/2", "Running")
	if !eventually(podTimeout, func() bool {
		return regexp.MustCompile(`(?m)^tmpfs /notifications tmpfs `).MatchString(m.kubectl(t, v, "logs", "hue-scheduler-mem", "-c", "hue-global-listener").Stdout)
	}) {
		t.Errorf("medium Memory is not a tmpfs in the container\n%s", m.kubectl(t, v, "logs", "hue-scheduler-mem", "-c", "hue-global-listener"))
	}

	// Deleting a pod stops its containers: SIGTERM, which sleep as PID 1
	// ignores (as under upstream), then SIGKILL after the grace period.
	start := time.Now()
	expectOK(t, m.kubectl(t, v, "delete", "pod", "hue-scheduler", "hue-scheduler-mem", "--grace-period=2"), `pod "hue-scheduler" deleted`)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("deleting the pods took %v", d)
	}
	m.expectNotFound(t, v, "pod", "hue-scheduler")
}

// TestPodSeedJustAShell is seed 000's end-to-end demo: a hostPath volume
// (persistent-volume-1, here on a private directory rather than the seed's
// shared /tmp/data), its claim, and the two-container pod just-a-shell; a
// file made on the host is seen in both containers, and one made in a
// container in the other (kubectl exec).
func TestPodSeedJustAShell(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "ubuntu")
	hostDir := t.TempDir()
	pv := strings.Replace(readFile(t, testdata("seed000-persistent-volume-1.yaml")), `path: "/tmp/data"`, `path: "`+hostDir+`"`, 1)
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("binding/dir-class.yaml")), "storageclass.storage.k8s.io/dir created")
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "pv.yaml", pv)), "persistentvolume/persistent-volume-1 created")
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed000-persistent-volume-claim.yaml")), "persistentvolumeclaim/persistent-volume-claim created")
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("pods/seed000-shell-pod.yaml")), "pod/just-a-shell created")
	waitPodRow(t, m, v, "default", "just-a-shell", "2/2", "Running")
	expectHeader(t, m.kubectl(t, v, "get", "pods"), "NAME", "READY", "STATUS", "RESTARTS", "AGE")

	if err := os.WriteFile(filepath.Join(hostDir, "1.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	expectOK(t, m.kubectl(t, v, "exec", "just-a-shell", "-c", "a-shell", "--", "ls", "/data"), "1.txt")
	expectOK(t, m.kubectl(t, 27, "exec", "just-a-shell", "-c", "a-shell", "--", "ls", "/data"), "1.txt") // SPDY
	expectOK(t, m.kubectl(t, v, "exec", "just-a-shell", "-c", "a-shell", "--", "touch", "/data/2.txt"))
	r := m.kubectl(t, v, "exec", "just-a-shell", "-c", "another-shell", "--", "ls", "/data")
	expectOK(t, r, "1.txt", "2.txt")
	if _, err := os.Stat(filepath.Join(hostDir, "2.txt")); err != nil {
		t.Errorf("2.txt made in the container is not on the host: %v", err)
	}
	// The container's hostname is the pod's; exit codes come back.
	expectOK(t, m.kubectl(t, v, "exec", "just-a-shell", "-c", "a-shell", "--", "hostname"), "just-a-shell")
	r = m.kubectl(t, v, "exec", "just-a-shell", "-c", "a-shell", "--", "sh", "-c", "exit 3")
	if r.Code != 3 {
		t.Errorf("kubectl exec of `exit 3` exited %d, want 3\n%s", r.Code, r)
	}
	// kubectl cp (tar through exec), both ways.
	local := m.writeFile(t, "from-laptop.txt", "copied in\n")
	expectOK(t, m.kubectl(t, v, "cp", local, "just-a-shell:/data/from-laptop.txt", "-c", "a-shell"))
	if got := readFile(t, filepath.Join(hostDir, "from-laptop.txt")); got != "copied in\n" {
		t.Errorf("kubectl cp into the pod: the volume holds %q", got)
	}
	expectOK(t, m.kubectl(t, v, "exec", "just-a-shell", "-c", "another-shell", "--", "sh", "-c", "echo made inside > /tmp/inside.txt"))
	out := filepath.Join(t.TempDir(), "inside.txt")
	expectOK(t, m.kubectl(t, 27, "cp", "just-a-shell:/tmp/inside.txt", out, "-c", "another-shell"))
	if got := readFile(t, out); got != "made inside\n" {
		t.Errorf("kubectl cp out of the pod: got %q", got)
	}
	expectOK(t, m.kubectl(t, v, "delete", "pod", "just-a-shell", "--grace-period=1"), `pod "just-a-shell" deleted`)
	if _, err := os.Stat(filepath.Join(hostDir, "1.txt")); err != nil {
		t.Errorf("deleting the pod touched the hostPath data: %v", err)
	}
}

// TestPodLifecycle: restart policies, CrashLoopBackOff with its back-off,
// logs of the previous instance, a missing image, a hostPath type that does
// not hold, and an unschedulable pod, each as upstream words it.
func TestPodLifecycle(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	pod := func(name, policy, script string) string {
		return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
spec:
  restartPolicy: ` + policy + `
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", ` + strconvQuote(script) + `]
`
	}
	apply := func(name, yaml string) {
		t.Helper()
		expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, name+".yaml", yaml)), "pod/"+name+" created")
	}
	apply("once", pod("once", "Never", "echo out; echo err >&2; exit 1"))
	apply("done", pod("done", "OnFailure", "echo finished"))
	apply("crash", pod("crash", "Always", "echo attempt; exit 2"))

	waitPodRow(t, m, v, "default", "once", "0/1", "Error")
	// stdout and stderr are two pipes: their lines may interleave either way.
	expectOK(t, m.kubectl(t, v, "logs", "once"), "out\n", "err\n")
	if p := m.pod(t, v, "default", "once"); p == nil || p.Status.Phase != corev1.PodFailed ||
		p.Status.ContainerStatuses[0].State.Terminated == nil || p.Status.ContainerStatuses[0].State.Terminated.ExitCode != 1 {
		t.Errorf("once: want phase Failed, terminated with exit code 1: %+v", p.Status)
	}
	waitPodRow(t, m, v, "default", "done", "0/1", "Completed")
	if p := m.pod(t, v, "default", "done"); p == nil || p.Status.Phase != corev1.PodSucceeded {
		t.Errorf("done: want phase Succeeded")
	}
	// kubectl logs -f follows a running container; --tail keeps the end.
	apply("ticker", pod("ticker", "Always", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"))
	waitPodRow(t, m, v, "default", "ticker", "1/1", "Running")
	follow := m.kubectlBackground(t, v, "logs", "-f", "ticker")
	if _, ok := follow.WaitLine(podTimeout, func(l string) bool { return l == "tick-10" }); !ok {
		t.Errorf("kubectl logs -f never showed tick-10:\n%s", follow.Output())
	}
	follow.Stop()
	if r := m.kubectl(t, v, "logs", "ticker", "--tail=1"); r.Code != 0 || strings.Count(r.Stdout, "\n") != 1 || !strings.HasPrefix(r.Stdout, "tick-") {
		t.Errorf("kubectl logs --tail=1:\n%s", r)
	}
	waitPodRow(t, m, v, "default", "crash", "0/1", "CrashLoopBackOff")
	expectOK(t, m.kubectl(t, v, "logs", "crash", "--previous"), "attempt")
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "crash"},
		`(?m)^\s+State:\s+Waiting$`, `(?m)^\s+Reason:\s+CrashLoopBackOff$`,
		`(?m)^\s+Last State:\s+Terminated$`, `(?m)^\s+Exit Code:\s+2$`,
		`Warning\s+BackOff\s+.*kubelet\s+Back-off restarting failed container main in pod crash_default\(`)

	// An image the node lacks, with no registry: upstream's reasons, and a
	// message that says what to do.
	missing := strings.Replace(pod("missing", "Always", "true"), "image: busybox", "image: registry.example/nothing:1.0", 1)
	apply("missing", missing)
	waitPodRow(t, m, v, "default", "missing", "0/1", "ImagePullBackOff")
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "missing"},
		`Warning\s+Failed\s+.*kubelet\s+Failed to pull image "registry.example/nothing:1.0": .*moorage image import`)

	// A hostPath whose type does not hold: FailedMount, the pod waits.
	badPath := filepath.Join(t.TempDir(), "absent")
	apply("badpath", pod("badpath", "Always", "true")+`    volumeMounts:
    - {name: h, mountPath: /h}
  volumes:
  - name: h
    hostPath: {path: `+badPath+`, type: Directory}
`)
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "badpath"},
		`Warning\s+FailedMount\s+.*kubelet\s+MountVolume.SetUp failed for volume "h" : hostPath type check failed: `+regexp.QuoteMeta(badPath)+` is not a directory`)
	checkCol(t, m.kubectl(t, v, "get", "pod", "badpath"), "STATUS", "ContainerCreating", "badpath")

	// No node fits: FailedScheduling with upstream's message; the pod stays Pending.
	apply("nowhere", pod("nowhere", "Always", "true")+`  nodeSelector:
    disktype: ssd
`)
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "nowhere"},
		regexp.QuoteMeta(`0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.`))
	checkCol(t, m.kubectl(t, v, "get", "pod", "nowhere"), "STATUS", "Pending", "nowhere")
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
