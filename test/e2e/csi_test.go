package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

const (
	csiDriverName  = "local.csi.moorage.io"
	csiTopologyKey = "topology.local.csi.moorage.io/node"
)

// dynamicProvisioning is README's "Dynamic provisioning" example: a class
// of the built-in driver, a 64Mi claim and a pod that mounts it.
const dynamicProvisioning = `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
provisioner: local.csi.moorage.io
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local
  resources:
    requests:
      storage: 64Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
`

// TestCSIDynamicProvisioning: the agent of `moorage up` runs the built-in
// driver and registers it (CSINode, CSIDriver, the node's topology label);
// a WaitForFirstConsumer claim of its class is provisioned on the pod's
// node as pvc-<uid>, mounted in the pod at its real size (32 MiB fit, 128
// MiB do not), and deleting the pod and the claim deletes the PV, the
// volume's image and every mount and loop device.
func TestCSIDynamicProvisioning(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	node := m.firstNode(t, v)

	// Registration, as the kubelet registers a node plugin.
	var cn storagev1.CSINode
	if !eventually(podTimeout, func() bool {
		r := m.kubectl(t, v, "get", "csinode", node, "-o", "json")
		return r.Code == 0 && json.Unmarshal([]byte(r.Stdout), &cn) == nil && len(cn.Spec.Drivers) == 1
	}) {
		t.Fatalf("CSINode %s never listed the driver\n%s\nmoorage output:\n%s", node, m.kubectl(t, v, "get", "csinode", "-o", "yaml"), m.Output())
	}
	if d := cn.Spec.Drivers[0]; d.Name != csiDriverName || d.NodeID != node || strings.Join(d.TopologyKeys, ",") != csiTopologyKey || d.Allocatable != nil {
		t.Errorf("CSINode driver entry = %+v", d)
	}
	if len(cn.OwnerReferences) != 1 || cn.OwnerReferences[0].Kind != "Node" || cn.OwnerReferences[0].Name != node || cn.OwnerReferences[0].UID == "" {
		t.Errorf("CSINode owner references = %+v", cn.OwnerReferences)
	}
	r := m.kubectl(t, v, "get", "csinode")
	expectHeader(t, r, "NAME", "DRIVERS", "AGE")
	checkCol(t, r, "DRIVERS", "1", node)
	r = m.kubectl(t, v, "get", "csidriver")
	expectHeader(t, r, "NAME", "ATTACHREQUIRED", "PODINFOONMOUNT", "STORAGECAPACITY", "TOKENREQUESTS", "REQUIRESREPUBLISH", "MODES", "AGE")
	if !hasRow(r.Stdout, csiDriverName, "false", "false", "false", "<unset>", "false", "Persistent") {
		t.Errorf("kubectl get csidriver\n%s", r)
	}
	var driver storagev1.CSIDriver
	m.getJSON(t, v, &driver, "csidriver", csiDriverName)
	if p := driver.Spec.FSGroupPolicy; p == nil || *p != storagev1.FileFSGroupPolicy {
		t.Errorf("CSIDriver fsGroupPolicy = %v, want File", p)
	}
	var n corev1.Node
	m.getJSON(t, v, &n, "node", node)
	if n.Labels[csiTopologyKey] != node {
		t.Errorf("node labels %v lack %s=%s", n.Labels, csiTopologyKey, node)
	}

	// The claim is provisioned on the pod's node and bound; the pod runs.
	r = m.kubectl(t, v, "apply", "-f", m.writeFile(t, "dynamic.yaml", dynamicProvisioning))
	expectOK(t, r, "storageclass.storage.k8s.io/local created", "persistentvolumeclaim/data created", "pod/writer created")
	waitPodRow(t, m, v, "default", "writer", "1/1", "Running")
	var pvc corev1.PersistentVolumeClaim
	m.getJSON(t, v, &pvc, "pvc", "data")
	pvName := "pvc-" + string(pvc.UID)
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != pvName || pvc.Annotations["volume.kubernetes.io/selected-node"] != node {
		t.Fatalf("claim: phase %s, volume %q (want %s), annotations %v", pvc.Status.Phase, pvc.Spec.VolumeName, pvName, pvc.Annotations)
	}
	for _, kv := range []int{v, 27} {
		r = m.kubectl(t, kv, "get", "pv")
		for col, want := range map[string]string{"CAPACITY": "64Mi", "ACCESS MODES": "RWO", "RECLAIM POLICY": "Delete", "STATUS": "Bound", "CLAIM": "default/data", "STORAGECLASS": "local"} {
			checkCol(t, r, col, want, pvName)
		}
		r = m.kubectl(t, kv, "get", "pvc", "data")
		checkCol(t, r, "STATUS", "Bound", "data")
		checkCol(t, r, "VOLUME", pvName, "data")
		checkCol(t, r, "CAPACITY", "64Mi", "data")
	}
	var pv corev1.PersistentVolume
	m.getJSON(t, v, &pv, "pv", pvName)
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != csiDriverName || pv.Annotations["pv.kubernetes.io/provisioned-by"] != csiDriverName {
		t.Errorf("PV source %+v, annotations %v", pv.Spec.CSI, pv.Annotations)
	}
	if na := pv.Spec.NodeAffinity; na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) != 1 ||
		len(na.Required.NodeSelectorTerms[0].MatchExpressions) != 1 ||
		na.Required.NodeSelectorTerms[0].MatchExpressions[0].Key != csiTopologyKey ||
		strings.Join(na.Required.NodeSelectorTerms[0].MatchExpressions[0].Values, ",") != node {
		t.Errorf("PV node affinity = %+v", na)
	}
	expectDescribeEventually(t, m, v, 10*time.Second, []string{"pvc", "data"},
		`(?m)^Status:\s+Bound$`,
		`(?m)^\s+Normal\s+Provisioning\s+.*\s+`+regexp.QuoteMeta(csiDriverName+"_"+node)+`\s+`+regexp.QuoteMeta(`External provisioner is provisioning volume for claim "default/data"`),
		`(?m)^\s+Normal\s+ProvisioningSucceeded\s+.*\s+`+regexp.QuoteMeta("Successfully provisioned volume "+pvName))
	images := filepath.Join(m.DataDir, "agent", "csi", "local", "volumes", "*.img")
	if got, _ := filepath.Glob(images); len(got) != 1 {
		t.Errorf("driver images %v, want one", got)
	}

	// The volume has its size: 32 MiB fit, 128 MiB more do not (WebSocket
	// exec, then SPDY).
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "dd", "if=/dev/zero", "of=/data/fits", "bs=1M", "count=32"))
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "grep", " /data ", "/proc/mounts"), " ext4 ")
	r = m.kubectl(t, 27, "exec", "writer", "--", "dd", "if=/dev/zero", "of=/data/too-big", "bs=1M", "count=128")
	if r.Code == 0 || !strings.Contains(r.Stderr, "No space left on device") {
		t.Errorf("a 128 MiB write to the 64Mi volume: want a failure with ENOSPC\n%s", r)
	}
	expectOK(t, m.kubectl(t, 27, "exec", "writer", "--", "ls", "-l", "/data/fits"), "33554432")

	// Pod, then claim: the PV goes, and with it the image, the mounts and
	// the loop device.
	expectOK(t, m.kubectl(t, v, "delete", "pod", "writer"), `pod "writer" deleted`)
	expectOK(t, m.kubectl(t, v, "delete", "pvc", "data"), `persistentvolumeclaim "data" deleted`)
	if !eventually(podTimeout, func() bool {
		r := m.kubectl(t, v, "get", "pv", pvName)
		return r.Code != 0 && strings.Contains(r.Stderr, "(NotFound)")
	}) {
		t.Fatalf("PV %s never deleted\n%s\n%s", pvName, m.kubectl(t, v, "describe", "pv", pvName), m.Output())
	}
	if got, _ := filepath.Glob(images); len(got) != 0 {
		t.Errorf("driver images left after the PV was deleted: %v", got)
	}
	var mounts []string
	if !eventually(10*time.Second, func() bool { mounts = mountsUnder(t, m.DataDir); return len(mounts) == 0 }) {
		t.Errorf("still mounted under the data dir: %v", mounts)
	}
	if loops := loopsUnder(t, m.DataDir); len(loops) != 0 {
		t.Errorf("loop devices still backed by the data dir: %v", loops)
	}
	expectOK(t, m.kubectl(t, v, "get", "csinode"), node)
}

// TestCSIClaimsNobodyProvisions, on a node without the built-in driver
// (--builtin-csi-driver=false): a claim whose provisioner has no driver
// here waits for it, as upstream says; a pod whose claim only a CSI driver
// registered on no node could provision is not scheduled, with upstream's
// message.
func TestCSIClaimsNobodyProvisions(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorageWith(t, t.TempDir(), "--builtin-csi-driver=false")
	m.hostImage(t, "busybox")
	node := m.firstNode(t, v)
	// The node has a CSINode all the same (the kubelet writes one at
	// start), listing no driver; nobody made the built-in driver's
	// CSIDriver object.
	var r result
	if !eventually(podTimeout, func() bool {
		r = m.kubectl(t, v, "get", "csinode")
		got, ok := columnValue(r.Stdout, "DRIVERS", node)
		return ok && got == "0"
	}) {
		t.Errorf("kubectl get csinode: want %s with 0 drivers\n%s", node, r)
	}
	m.expectNotFound(t, v, "csidriver", csiDriverName)
	if _, err := os.Stat(filepath.Join(m.DataDir, "agent", "plugins", csiDriverName)); err == nil {
		t.Errorf("the disabled driver has a socket directory")
	}

	manifests := `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ebs
provisioner: ebs.csi.aws.com
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: elsewhere
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ebs
  resources:
    requests:
      storage: 1Gi
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: absent.csi.example.com
spec:
  attachRequired: false
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: absent
provisioner: absent.csi.example.com
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: nowhere
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: absent
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: nowhere
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: nowhere}
`
	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "nobody.yaml", manifests)),
		"persistentvolumeclaim/elsewhere created", "csidriver.storage.k8s.io/absent.csi.example.com created", "pod/nowhere created")
	expectDescribeEventually(t, m, v, 15*time.Second, []string{"pvc", "elsewhere"},
		`(?m)^Status:\s+Pending$`,
		`(?m)^\s+volume.kubernetes.io/storage-provisioner: ebs.csi.aws.com$`,
		`(?m)^\s+Normal\s+ExternalProvisioning\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta("Waiting for a volume to be created either by the external provisioner 'ebs.csi.aws.com' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."))
	expectDescribeEventually(t, m, v, 15*time.Second, []string{"pod", "nowhere"},
		`(?m)^Status:\s+Pending$`,
		`(?m)^\s+Warning\s+FailedScheduling\s+.*\s+default-scheduler\s+`+regexp.QuoteMeta("0/1 nodes are available: 1 node(s) didn't find available persistent volumes to bind. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."))
	expectDescribeEventually(t, m, v, 40*time.Second, []string{"pvc", "nowhere"},
		`(?m)^Status:\s+Pending$`,
		`(?m)^\s+Normal\s+WaitForPodScheduled\s+.*\s+persistentvolume-controller\s+`+regexp.QuoteMeta("waiting for pod nowhere to be scheduled"))
	for _, kv := range []int{v, 27} {
		r = m.kubectl(t, kv, "get", "pvc")
		checkCol(t, r, "STATUS", "Pending", "elsewhere")
		checkCol(t, r, "STATUS", "Pending", "nowhere")
	}
}

// TestCSIProvisioningOnSecondNode: `moorage agent` runs the built-in
// driver and its provisioner for its own node: a pod placed there gets its
// claim's volume there (the PV's node affinity names that node, the image
// is in that agent's data dir), and it is deleted there.
func TestCSIProvisioningOnSecondNode(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	out, dir := m.startSecondNodeIn(t, "second")
	if !eventually(podTimeout, func() bool {
		r := m.kubectl(t, v, "get", "csinode", "second", "-o", "jsonpath={.spec.drivers[*].name}")
		return r.Code == 0 && r.Stdout == csiDriverName
	}) {
		t.Fatalf("node second never registered the driver\n%s\nagent output:\n%s", m.kubectl(t, v, "get", "csinode"), out.String())
	}
	manifests := strings.Replace(dynamicProvisioning, "spec:\n  terminationGracePeriodSeconds: 1\n",
		"spec:\n  terminationGracePeriodSeconds: 1\n  nodeSelector: {kubernetes.io/hostname: second}\n", 1)
	m.mustKubectl(t, v, "apply", "-f", m.writeFile(t, "second.yaml", manifests))
	waitPodRow(t, m, v, "default", "writer", "1/1", "Running")
	checkCol(t, m.kubectl(t, v, "get", "pod", "writer", "-o", "wide"), "NODE", "second", "writer")
	var pvc corev1.PersistentVolumeClaim
	m.getJSON(t, v, &pvc, "pvc", "data")
	pvName := "pvc-" + string(pvc.UID)
	if pvc.Spec.VolumeName != pvName || pvc.Annotations["volume.kubernetes.io/selected-node"] != "second" {
		t.Fatalf("claim: volume %q (want %s), annotations %v", pvc.Spec.VolumeName, pvName, pvc.Annotations)
	}
	affinity := m.mustKubectl(t, v, "get", "pv", pvName, "-o", "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}")
	if affinity != "second" {
		t.Errorf("PV node affinity names %q, want second", affinity)
	}
	images := filepath.Join(dir, "agent", "csi", "local", "volumes", "*.img")
	if got, _ := filepath.Glob(images); len(got) != 1 {
		t.Errorf("second node's driver images %v, want one", got)
	}
	if got, _ := filepath.Glob(filepath.Join(m.DataDir, "agent", "csi", "local", "volumes", "*.img")); len(got) != 0 {
		t.Errorf("the first node made images too: %v", got)
	}
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "dd", "if=/dev/zero", "of=/data/fits", "bs=1M", "count=32"))
	m.mustKubectl(t, v, "delete", "pod", "writer")
	m.mustKubectl(t, v, "delete", "pvc", "data")
	if !eventually(podTimeout, func() bool {
		r := m.kubectl(t, v, "get", "pv", pvName)
		got, _ := filepath.Glob(images)
		return r.Code != 0 && strings.Contains(r.Stderr, "(NotFound)") && len(got) == 0
	}) {
		t.Fatalf("PV %s or its image never deleted\n%s\nagent output:\n%s", pvName, m.kubectl(t, v, "describe", "pv", pvName), out.String())
	}
}

// firstNode waits for the agent of `moorage up` to register its Node and
// returns its name.
func (m *moorage) firstNode(t *testing.T, v int) string {
	t.Helper()
	var r result
	if !eventually(podTimeout, func() bool {
		r = m.kubectl(t, v, "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
		return r.Code == 0 && strings.TrimSpace(r.Stdout) != ""
	}) {
		t.Fatalf("no node registered\n%s\nmoorage output:\n%s", r, m.Output())
	}
	return strings.Fields(r.Stdout)[0]
}

// mountsUnder lists the mount points under dir that pods and volumes
// leave: not the pod network's node namespace, which a running agent keeps
// (killall removes it).
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") && !strings.HasSuffix(fields[4], "/network/netns/node") {
			out = append(out, fields[4])
		}
	}
	return out
}

// loopsUnder lists the loop devices whose backing file is under dir.
func loopsUnder(t *testing.T, dir string) []string {
	t.Helper()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(string(b), dir+"/") {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(f)))+": "+strings.TrimSpace(string(b)))
		}
	}
	return out
}
