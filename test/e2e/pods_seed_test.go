package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPodSeedCouponHunter: seed 000's privileged hue-coupon-hunter writes
// into its hostPath volume (a private directory here, not the seed's
// /etc/hue/data/coupons); the file is on the host.
func TestPodSeedCouponHunter(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "the_g1g1/hue-coupon-hunter", "--entrypoint", "sh", "--cmd", "-c", "--cmd", "echo 50-percent-off > /coupons/coupon-1; exec sleep 3600")
	dir := filepath.Join(t.TempDir(), "coupons")
	pod := strings.Replace(readFile(t, testdata("pods/seed000-hue-coupon-hunter.yaml")), "/etc/hue/data/coupons", dir, 1)
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "coupons.yaml", pod)), "pod/hue-coupon-hunter created")
	waitPodRow(t, m, v, "default", "hue-coupon-hunter", "1/1", "Running")
	if !eventually(podTimeout, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "coupon-1"))
		return err == nil && string(b) == "50-percent-off\n"
	}) {
		t.Fatalf("the coupon written in the container is not in the host directory %s", dir)
	}
	// Privileged: every capability of the node, e.g. to mount.
	expectOK(t, m.kubectl(t, v, "exec", "hue-coupon-hunter", "--", "sh", "-c", "mkdir -p /mnt/x && mount -t tmpfs t /mnt/x && echo mounted"), "mounted")
	m.mustKubectl(t, v, "delete", "pod", "hue-coupon-hunter", "--grace-period=1")
}

// TestPodSeedTaskPVPod: seed 001's task-pv-volume (hostPath; a private
// directory here, not /mnt/data), task-pv-claim and task-pv-pod as written:
// the page on the host is what the container serves from.
func TestPodSeedTaskPVPod(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	// nginx stands in without its network (pods share the node's until the
	// StatefulSet work gives each its own): the volume is what matters here.
	m.hostImage(t, "nginx", "--entrypoint", "sleep", "--cmd", "3600")
	dir := t.TempDir()
	pv := strings.Replace(readFile(t, testdata("seed001-task-pv-volume.yaml")), `"/mnt/data"`, `"`+dir+`"`, 1)
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "pv.yaml", pv)), "persistentvolume/task-pv-volume created")
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed001-task-pv-claim.yaml")), "persistentvolumeclaim/task-pv-claim created")
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("pods/seed001-task-pv-pod.yaml")), "pod/task-pv-pod created")
	waitPodRow(t, m, v, "default", "task-pv-pod", "1/1", "Running")
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("Hello from Kubernetes storage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expectOK(t, m.kubectl(t, v, "exec", "task-pv-pod", "--", "cat", "/usr/share/nginx/html/index.html"), "Hello from Kubernetes storage")
	// The claim in use: describe says by whom; deleting it waits for the pod.
	expectDescribe(t, m, v, []string{"pvc", "task-pv-claim"}, `(?m)^Used By:\s+task-pv-pod$`)
	m.mustKubectl(t, v, "delete", "pvc", "task-pv-claim", "--wait=false")
	checkCol(t, m.kubectl(t, v, "get", "pvc", "task-pv-claim"), "STATUS", "Terminating", "task-pv-claim")
	m.mustKubectl(t, v, "delete", "pod", "task-pv-pod", "--grace-period=1")
	if !eventually(podTimeout, func() bool { return m.kubectl(t, v, "get", "pvc", "task-pv-claim").Code != 0 }) {
		t.Errorf("the claim outlived its last pod")
	}
}

// TestPodSeedProjectedAndEnv: seed 000's all-in-one projected volume and
// its configMap as environment (db-config, some-pod), as written.
func TestPodSeedProjectedAndEnv(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox", "--cmd", "sh")
	m.mustKubectl(t, v, "create", "secret", "generic", "the-secret", "--from-literal=username=admin")
	m.mustKubectl(t, v, "create", "configmap", "the-configmap", "--from-literal=config=verbose=true")
	// busybox's default command (sh) would exit at once: keep it alive.
	pod := strings.Replace(readFile(t, testdata("pods/seed000-all-in-one.yaml")), "    image: busybox\n", "    image: busybox\n    command: [\"sleep\", \"3600\"]\n", 1)
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "the-pod.yaml", pod)), "pod/the-pod created")
	waitPodRow(t, m, v, "default", "the-pod", "1/1", "Running")
	expectOK(t, m.kubectl(t, v, "exec", "the-pod", "--", "cat", "/projected-volume/the-group/the-user"), "admin")
	expectOK(t, m.kubectl(t, v, "exec", "the-pod", "--", "cat", "/projected-volume/the-group/the-config"), "verbose=true")
	expectOK(t, m.kubectl(t, v, "exec", "the-pod", "--", "cat", "/projected-volume/cpu_limit"))
	r := m.kubectl(t, v, "exec", "the-pod", "--", "sh", "-c", "echo x > /projected-volume/new")
	if r.Code == 0 {
		t.Errorf("the projected volume is writable\n%s", r)
	}
	// An update of the configMap reaches the running pod (..data swap).
	m.mustKubectl(t, v, "patch", "configmap", "the-configmap", "-p", `{"data":{"config":"verbose=false"}}`)
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "exec", "the-pod", "--", "cat", "/projected-volume/the-group/the-config").Stdout, "verbose=false")
	}) {
		t.Errorf("the configMap update never reached the pod")
	}

	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("seed000-db-config.yaml")), `configmap/db-config created`)
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("pods/seed000-some-pod.yaml")), "pod/some-pod created")
	waitPodRow(t, m, v, "default", "some-pod", "0/1", "Completed")
	logs := m.kubectl(t, v, "logs", "some-pod")
	expectOK(t, logs, "DB_IP_ADDRESSES=1.2.3.4,5.6.7.8\n", "HOSTNAME=some-pod\n", "KUBERNETES_SERVICE_PORT=443\n", "KUBERNETES_PORT=tcp://10.96.0.1:443\n")
}

// TestPodSeedBlockVolume: seed 000's pod-with-block-volume. As written its
// claim binds the seed's Fibre Channel volume, which this machine cannot
// reach: the pod says so. With block-pv as a local loop device instead, the
// container reads and writes the raw device /dev/xvda.
func TestPodSeedBlockVolume(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "fedora:26")
	m.mustKubectl(t, v, "create", "-f", testdata("seed000-block-pv.yaml"))
	m.mustKubectl(t, v, "create", "-f", testdata("seed000-block-pvc.yaml"))
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("pods/seed000-pod-with-block-volume.yaml")), "pod/pod-with-block-volume created")
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "pod-with-block-volume"},
		`Warning\s+FailedMount\s+.*kubelet\s+volume "data": PersistentVolume "block-pv" is a fc volume, which moorage cannot mount in-tree`)
	m.mustKubectl(t, v, "delete", "pod", "pod-with-block-volume", "--grace-period=0", "--force")
	m.mustKubectl(t, v, "delete", "pvc", "block-pvc")
	m.mustKubectl(t, v, "delete", "pv", "block-pv")

	// The same claim on a local block volume: a loop device over a sparse file.
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	node := strings.TrimSpace(m.mustKubectl(t, v, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"))
	localPV := `apiVersion: v1
kind: PersistentVolume
metadata:
  name: block-pv
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  persistentVolumeReclaimPolicy: Retain
  local:
    path: ` + dev + `
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [` + node + `]}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "local-block.yaml", localPV))
	m.mustKubectl(t, v, "create", "-f", testdata("seed000-block-pvc.yaml"))
	expectOK(t, m.kubectl(t, v, "create", "-f", testdata("pods/seed000-pod-with-block-volume.yaml")), "pod/pod-with-block-volume created")
	waitPodRow(t, m, v, "default", "pod-with-block-volume", "1/1", "Running")
	expectOK(t, m.kubectl(t, v, "exec", "pod-with-block-volume", "--", "sh", "-c",
		"test -b /dev/xvda && printf raw-block-bytes | dd of=/dev/xvda bs=512 conv=sync,fsync 2>/dev/null && echo written"), "written")
	b, err := os.ReadFile(img)
	if err != nil || !bytes.HasPrefix(b, []byte("raw-block-bytes")) {
		t.Errorf("the bytes written to /dev/xvda are not on the device's backing file (err %v)", err)
	}
	m.mustKubectl(t, v, "delete", "pod", "pod-with-block-volume", "--grace-period=1")
}

// TestPodInitContainers: init containers run one after the other, each to
// completion, before the main container; kubectl shows Init:N/M meanwhile.
func TestPodInitContainers(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: init-demo
spec:
  initContainers:
  - {name: first, image: busybox, command: ["sh", "-c", "sleep 2; echo first >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  - {name: second, image: busybox, command: ["sh", "-c", "echo second >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "cat /work/order; exec sleep 3600"], volumeMounts: [{name: work, mountPath: /work}]}
  volumes:
  - {name: work, emptyDir: {}}
`
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "init.yaml", pod)), "pod/init-demo created")
	waitPodRow(t, m, v, "default", "init-demo", "0/1", "Init:0/2")
	waitPodRow(t, m, v, "default", "init-demo", "1/1", "Running")
	expectOK(t, m.kubectl(t, v, "logs", "init-demo"), "first\nsecond\n")
	expectDescribe(t, m, v, []string{"pod", "init-demo"}, `(?s)Init Containers:.*first:.*State:\s+Terminated\s+Reason:\s+Completed\s+Exit Code:\s+0`)
	m.mustKubectl(t, v, "delete", "pod", "init-demo", "--grace-period=1")
}

// TestPodAttacks: what must be refused is refused: a subPath through a
// symlink out of its volume, "../" in configMap items, a claim of another
// namespace, hostPath in a baseline namespace.
func TestPodAttacks(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	// subPath: the init container plants a symlink to /; the main container
	// asks for it as a subPath and must not get the host's root.
	escape := `apiVersion: v1
kind: Pod
metadata:
  name: escape
spec:
  initContainers:
  - {name: plant, image: busybox, command: ["ln", "-s", "/", "/vol/escape"], volumeMounts: [{name: vol, mountPath: /vol}]}
  containers:
  - {name: main, image: busybox, command: ["sleep", "3600"], volumeMounts: [{name: vol, mountPath: /host, subPath: escape}]}
  volumes:
  - {name: vol, emptyDir: {}}
`
	expectOK(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "escape.yaml", escape)), "pod/escape created")
	waitPodRow(t, m, v, "default", "escape", "0/1", "CreateContainerConfigError")
	expectDescribe(t, m, v, []string{"pod", "escape"}, `(?m)^\s+Reason:\s+CreateContainerConfigError$`)

	items := `apiVersion: v1
kind: Pod
metadata:
  name: dotdot
spec:
  containers:
  - {name: main, image: busybox, volumeMounts: [{name: cm, mountPath: /cm}]}
  volumes:
  - name: cm
    configMap: {name: x, items: [{key: k, path: ../../etc/passwd}]}
`
	expectFail(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "dotdot.yaml", items)),
		`spec.volumes[0].configMap.items[0].path: Invalid value: "../../etc/passwd": must not contain '..'`)

	m.mustKubectl(t, v, "create", "namespace", "team-a")
	m.mustKubectl(t, v, "create", "namespace", "team-b")
	claim := `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: secrets, namespace: team-a}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "claim.yaml", claim))
	thief := `apiVersion: v1
kind: Pod
metadata: {name: thief, namespace: team-b}
spec:
  containers:
  - {name: main, image: busybox, volumeMounts: [{name: loot, mountPath: /loot}]}
  volumes:
  - {name: loot, persistentVolumeClaim: {claimName: secrets}}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "thief.yaml", thief))
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "thief", "-n", "team-b"},
		regexp.QuoteMeta(`persistentvolumeclaim "secrets" not found`))
	checkCol(t, m.kubectl(t, v, "get", "pod", "thief", "-n", "team-b"), "STATUS", "Pending", "thief")

	m.mustKubectl(t, v, "label", "namespace", "team-b", "pod-security.kubernetes.io/enforce=baseline")
	hostPath := `apiVersion: v1
kind: Pod
metadata: {name: peek, namespace: team-b}
spec:
  containers:
  - {name: main, image: busybox, volumeMounts: [{name: etc, mountPath: /etc-host}]}
  volumes:
  - {name: etc, hostPath: {path: /etc}}
`
	expectFail(t, m.kubectl(t, v, "create", "-f", m.writeFile(t, "peek.yaml", hostPath)),
		`pods "peek" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "etc")`)
}

// TestPodEmptyDirEviction: a disk emptyDir past its sizeLimit gets the pod
// evicted, as upstream's eviction manager does.
func TestPodEmptyDirEviction(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	pod := `apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "dd if=/dev/zero of=/scratch/big bs=1M count=4; exec sleep 3600"], volumeMounts: [{name: scratch, mountPath: /scratch}]}
  volumes:
  - {name: scratch, emptyDir: {sizeLimit: 1Mi}}
`
	m.mustKubectl(t, v, "create", "-f", m.writeFile(t, "hog.yaml", pod))
	// As under upstream's kubelet, the killed container shows as Error in
	// `kubectl get`; the pod itself is Failed, reason Evicted.
	expectDescribeEventually(t, m, v, podTimeout, []string{"pod", "hog"}, `(?m)^Status:\s+Failed$`, `(?m)^Reason:\s+Evicted$`,
		regexp.QuoteMeta(`Usage of EmptyDir volume "scratch" exceeds the limit "1Mi".`),
		`Warning\s+Evicted\s+.*kubelet\s+Usage of EmptyDir volume "scratch" exceeds the limit "1Mi".`)
}
