package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// resizeManifests: an xfs class of the built-in driver that allows volume
// expansion (xfs grows online; the driver's smallest xfs volume is 300Mi),
// a claim of it and a pod that mounts it.
const resizeManifests = `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-xfs
provisioner: local.csi.moorage.io
parameters:
  fsType: xfs
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: grow
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-xfs
  resources:
    requests:
      storage: 300Mi
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
      claimName: grow
`

// TestCSIVolumeExpansion: `kubectl patch` raises a mounted claim's request;
// the resizer grows the volume (ControllerExpandVolume) and hands it to
// the node, the agent grows the file system in the running pod
// (NodeExpandVolume), and the claim shows the new capacity with no resize
// condition left — with upstream's events. Inside the pod, df shows the
// bigger file system and a write larger than the old size succeeds.
func TestCSIVolumeExpansion(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startMoorage(t)
	m.hostImage(t, "busybox")
	node := m.firstNode(t, v)

	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "resize.yaml", resizeManifests)),
		"storageclass.storage.k8s.io/local-xfs created", "persistentvolumeclaim/grow created", "pod/writer created")
	waitPodRow(t, m, v, "default", "writer", "1/1", "Running")
	r := m.kubectl(t, v, "get", "sc", "local-xfs")
	checkCol(t, r, "ALLOWVOLUMEEXPANSION", "true", "local-xfs")
	var pvc corev1.PersistentVolumeClaim
	m.getJSON(t, v, &pvc, "pvc", "grow")
	pvName := pvc.Spec.VolumeName
	checkCol(t, m.kubectl(t, v, "get", "pvc", "grow"), "CAPACITY", "300Mi", "grow")
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "grep", " /data ", "/proc/mounts"), " xfs ")
	before := dfKiB(t, m, v)
	// 310 MiB do not fit yet (xfs keeps some of the 300Mi for itself).
	r = m.kubectl(t, v, "exec", "writer", "--", "dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=310")
	if r.Code == 0 || !strings.Contains(r.Stderr, "No space left on device") {
		t.Errorf("a 310 MiB write to the 300Mi volume: want a failure with ENOSPC\n%s", r)
	}
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "rm", "/data/big"))

	expectOK(t, m.kubectl(t, v, "patch", "pvc", "grow", "-p", `{"spec":{"resources":{"requests":{"storage":"400Mi"}}}}`),
		"persistentvolumeclaim/grow patched")
	if !eventually(podTimeout, func() bool {
		r = m.kubectl(t, v, "get", "pvc", "grow")
		got, _ := columnValue(r.Stdout, "CAPACITY", "grow")
		return got == "400Mi"
	}) {
		t.Fatalf("claim never reached 400Mi\n%s\n%s\nmoorage output:\n%s", r, m.kubectl(t, v, "describe", "pvc", "grow"), m.Output())
	}
	m.getJSON(t, v, &pvc, "pvc", "grow")
	if len(pvc.Status.Conditions) != 0 || pvc.Status.AllocatedResourceStatuses != nil {
		t.Errorf("claim status after the resize: conditions %+v, allocatedResourceStatuses %v; want none", pvc.Status.Conditions, pvc.Status.AllocatedResourceStatuses)
	}
	if got := pvc.Status.AllocatedResources[corev1.ResourceStorage]; got.String() != "400Mi" {
		t.Errorf("allocatedResources %v, want storage 400Mi", pvc.Status.AllocatedResources)
	}
	checkCol(t, m.kubectl(t, v, "get", "pv", pvName), "CAPACITY", "400Mi", pvName)
	var pv corev1.PersistentVolume
	m.getJSON(t, v, &pv, "pv", pvName)
	if a, ok := pv.Annotations["volume.alpha.kubernetes.io/pre-resize-capacity"]; ok {
		t.Errorf("PV keeps pre-resize-capacity=%s after the node finished", a)
	}

	// The file system in the running pod grew, and now holds more than
	// the old claim's size.
	after := dfKiB(t, m, v)
	if after < before+80*1024 {
		t.Errorf("df /data: %d KiB before, %d KiB after; want ~100Mi more", before, after)
	}
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=310"))
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "ls", "-l", "/data/big"), strconv.Itoa(310<<20))

	// Upstream's events: the resizer's on the claim, the kubelet's on the
	// claim and the pod.
	resizer := regexp.QuoteMeta("external-resizer " + csiDriverName)
	nodeMsg := regexp.QuoteMeta(`MountVolume.NodeExpandVolume succeeded for volume "` + pvName + `" ` + node)
	expectDescribeEventually(t, m, v, 10*time.Second, []string{"pvc", "grow"},
		`(?m)^Capacity:\s+400Mi$`,
		`(?m)^\s+Normal\s+Resizing\s+.*\s+`+resizer+`\s+`+regexp.QuoteMeta("External resizer is resizing volume "+pvName),
		`(?m)^\s+Normal\s+FileSystemResizeRequired\s+.*\s+`+resizer+`\s+Require file system resize of volume on node$`,
		`(?m)^\s+Normal\s+FileSystemResizeSuccessful\s+.*\s+kubelet.*\s+`+nodeMsg+`$`)
	expectDescribeEventually(t, m, v, 10*time.Second, []string{"pod", "writer"},
		`(?m)^\s+Normal\s+FileSystemResizeSuccessful\s+.*\s+kubelet.*\s+`+nodeMsg+`$`)

	// Pod, then claim: the volume goes.
	expectOK(t, m.kubectl(t, v, "delete", "pod", "writer"), `pod "writer" deleted`)
	expectOK(t, m.kubectl(t, v, "delete", "pvc", "grow"), `persistentvolumeclaim "grow" deleted`)
	if !eventually(podTimeout, func() bool {
		r := m.kubectl(t, v, "get", "pv", pvName)
		return r.Code != 0 && strings.Contains(r.Stderr, "(NotFound)")
	}) {
		t.Fatalf("PV %s never deleted\n%s", pvName, m.kubectl(t, v, "describe", "pv", pvName))
	}

	// ext4 (the driver's default) cannot grow while mounted on this
	// machine (no CAP_SYS_RESOURCE): the driver says FAILED_PRECONDITION,
	// the claim shows it and waits, the pod goes on; the file system grows
	// when the volume is next staged, for a new pod.
	ext4 := strings.NewReplacer("local-xfs", "local-ext4", "  fsType: xfs\n", "  fs: ext4\n", "300Mi", "64Mi").Replace(resizeManifests)
	ext4 = strings.Replace(ext4, "parameters:\n  fs: ext4\n", "", 1)
	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "resize-ext4.yaml", ext4)), "pod/writer created")
	waitPodRow(t, m, v, "default", "writer", "1/1", "Running")
	m.getJSON(t, v, &pvc, "pvc", "grow")
	pvName = pvc.Spec.VolumeName
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "grep", " /data ", "/proc/mounts"), " ext4 ")
	before = dfKiB(t, m, v)
	expectOK(t, m.kubectl(t, v, "patch", "pvc", "grow", "-p", `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`))
	var nodeErr string
	if !eventually(podTimeout, func() bool {
		m.getJSON(t, v, &pvc, "pvc", "grow")
		for _, c := range pvc.Status.Conditions {
			if c.Type == corev1.PersistentVolumeClaimNodeResizeError {
				nodeErr = c.Message
			}
		}
		return nodeErr != ""
	}) {
		t.Fatalf("no NodeResizeError on the ext4 claim\n%s\nmoorage output:\n%s", m.kubectl(t, v, "get", "pvc", "grow", "-o", "yaml"), m.Output())
	}
	if !strings.HasPrefix(nodeErr, "failed to expand pvc with Expander.NodeExpand failed to expand the volume : rpc error: code = FailedPrecondition desc = ") {
		t.Errorf("NodeResizeError message %q", nodeErr)
	}
	if st := pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage]; st != corev1.PersistentVolumeClaimNodeResizeInProgress {
		t.Errorf("allocatedResourceStatuses %v, want storage NodeResizeInProgress", pvc.Status.AllocatedResourceStatuses)
	}
	checkCol(t, m.kubectl(t, v, "get", "pvc", "grow"), "CAPACITY", "64Mi", "grow")
	checkCol(t, m.kubectl(t, v, "get", "pv", pvName), "CAPACITY", "128Mi", pvName)
	checkCol(t, m.kubectl(t, v, "get", "pod", "writer"), "STATUS", "Running", "writer")

	// A new pod: staged again, grown, and the claim finished.
	expectOK(t, m.kubectl(t, v, "delete", "pod", "writer"), `pod "writer" deleted`)
	docs := strings.Split(ext4, "---\n")
	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "resize-pod.yaml", docs[len(docs)-1])), "pod/writer created")
	waitPodRow(t, m, v, "default", "writer", "1/1", "Running")
	if !eventually(podTimeout, func() bool {
		m.getJSON(t, v, &pvc, "pvc", "grow")
		got := pvc.Status.Capacity[corev1.ResourceStorage]
		return got.String() == "128Mi" && len(pvc.Status.Conditions) == 0 && pvc.Status.AllocatedResourceStatuses == nil
	}) {
		t.Fatalf("the ext4 claim never finished its resize\n%s", m.kubectl(t, v, "get", "pvc", "grow", "-o", "yaml"))
	}
	if after := dfKiB(t, m, v); after < before+48*1024 {
		t.Errorf("df /data (ext4): %d KiB before, %d KiB after; want ~64Mi more", before, after)
	}
}

// dfKiB is the size of the pod's /data file system as df in the pod
// reports it, in KiB.
func dfKiB(t *testing.T, m *moorage, v int) int {
	t.Helper()
	r := m.kubectl(t, v, "exec", "writer", "--", "df", "-k", "/data")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if r.Code != 0 || len(lines) < 2 {
		t.Fatalf("df in the pod\n%s", r)
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 2 {
		t.Fatalf("df in the pod\n%s", r)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("df in the pod: %v\n%s", err, r)
	}
	return n
}
