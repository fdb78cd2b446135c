package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func claim(name string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
}

func hostPathPV(name, path string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptr(corev1.HostPathDirectoryOrCreate)}},
	}}
}

// localPV is a local volume pinned to nodes labelled
// kubernetes.io/hostname=node-1.
func localPV(name, path string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		VolumeMode:             &mode,
		PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
		NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-1"}}},
		}}}},
	}}
}

func claimVolume(name, claimName string, readOnly bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName, ReadOnly: readOnly}}}
}

var node1 = Options{NodeName: "node-1", NodeLabels: func() map[string]string { return map[string]string{"kubernetes.io/hostname": "node-1"} }}

func TestClaimOnHostPathVolume(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	data := filepath.Join(t.TempDir(), "pv-data")
	e.get.bind(claim("task-pv-claim"), hostPathPV("task-pv-volume", data))
	e.get.bind(claim("ro-claim"), hostPathPV("ro-volume", data))
	pod := newPod("task-pv-pod", claimVolume("storage", "task-pv-claim", false), claimVolume("ro", "ro-claim", true))
	got := mustSetUp(t, e.m, pod)
	if got["storage"] != (Mounted{HostPath: data}) || got["ro"] != (Mounted{HostPath: data, ReadOnly: true}) {
		t.Fatalf("SetUp = %+v", got)
	}
	if fi, _ := statT(t, data); !fi.IsDir() {
		t.Fatal("DirectoryOrCreate of the PV did not create the directory")
	}
	if err := os.WriteFile(filepath.Join(data, "index.html"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(data, "index.html")) != "hello" {
		t.Fatal("TearDown touched the PersistentVolume's data")
	}
}

func TestClaimResolutionErrors(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	data := t.TempDir()

	e.get.claims["default/pending"] = claim("pending")
	deleting := claim("deleting")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	e.get.claims["default/deleting"] = deleting
	noRef := claim("no-ref")
	e.get.bind(noRef, hostPathPV("pv-no-ref", data))
	e.get.volumes["pv-no-ref"].Spec.ClaimRef = nil
	other := claim("other")
	e.get.bind(other, hostPathPV("pv-other", data))
	e.get.volumes["pv-other"].Spec.ClaimRef.UID = "someone-else"
	e.get.bind(claim("csi"), &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-csi"}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "hostpath.csi.k8s.io", VolumeHandle: "h"}}}})
	e.get.bind(claim("nfs"), &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-nfs"}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/"}}}})
	far := localPV("pv-far", data, corev1.PersistentVolumeFilesystem)
	far.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values = []string{"node-2"}
	e.get.bind(claim("far"), far)
	e.get.bind(claim("hp-block"), func() *corev1.PersistentVolume {
		pv := hostPathPV("pv-hp-block", data)
		pv.Spec.VolumeMode = ptr(corev1.PersistentVolumeBlock)
		return pv
	}())

	for claimName, want := range map[string]string{
		"missing":  `volume "data": error processing PVC default/missing: failed to fetch PVC from API server: persistentvolumeclaims "missing" not found`,
		"pending":  `volume "data": error processing PVC default/pending: PVC is not bound`,
		"deleting": `volume "data": error processing PVC default/deleting: PVC is being deleted`,
		"no-ref":   `volume "data": error processing PVC default/no-ref: found PV object pv-no-ref but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim`,
		"other":    `volume "data": error processing PVC default/other: found PV object pv-other but its pv.Spec.ClaimRef.UID someone-else does not point to claim.UID uid-other`,
		"csi":      `MountVolume.MountDevice failed for volume "pv-csi" : kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name hostpath.csi.k8s.io not found in the list of registered CSI drivers`,
		"nfs":      `volume "data": PersistentVolume "pv-nfs" is a nfs volume, which moorage cannot mount in-tree (it mounts hostPath and local volumes itself; other storage is reached through a CSI driver)`,
		"far":      `MountVolume.NodeAffinity check failed for volume "pv-far" : no matching NodeSelectorTerms`,
		"hp-block": `volume "data": error processing PVC default/hp-block: volume data has volumeMode Block, but is specified in volumeMounts`,
	} {
		if got := setUpErr(t, e.m, newPod("p", claimVolume("data", claimName, false))); got != want {
			t.Errorf("claim %s:\n got %s\nwant %s", claimName, got, want)
		}
	}
}

func TestClaimOnLocalDirectory(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	disk := filepath.Join(t.TempDir(), "disk1")
	if err := os.Mkdir(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(disk, "precious"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.get.bind(claim("rw"), localPV("local-pv-1", disk, corev1.PersistentVolumeFilesystem))
	e.get.bind(claim("ro"), localPV("local-pv-2", disk, corev1.PersistentVolumeFilesystem))
	pod := newPod("p", claimVolume("rw", "rw", false), claimVolume("ro", "ro", true))
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(5000))}
	got := mustSetUp(t, e.m, pod)

	rw := filepath.Join(e.m.root, "pods", string(pod.UID), "volumes", "kubernetes.io~local-volume", "local-pv-1")
	if got["rw"] != (Mounted{HostPath: rw}) {
		t.Fatalf("rw = %+v, want a bind at %s", got["rw"], rw)
	}
	if line := mountLine(t, rw); line == "" {
		t.Fatalf("%s is not a mount point", rw)
	}
	if err := os.WriteFile(filepath.Join(rw, "new"), []byte("via the bind"), 0o644); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(disk, "new")) != "via the bind" {
		t.Error("a write through the bind is not in the local volume")
	}
	if _, st := statT(t, filepath.Join(disk, "precious")); st.Gid != 5000 {
		t.Errorf("fsGroup not applied to a writable local volume: gid %d", st.Gid)
	}
	ro := got["ro"]
	if !ro.ReadOnly || !strings.Contains(mountLine(t, ro.HostPath), " ro,") {
		t.Fatalf("read-only claim: %+v, mountinfo %q", ro, mountLine(t, ro.HostPath))
	}
	if err := os.WriteFile(filepath.Join(ro.HostPath, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write through a read-only claim: %v, want EROFS", err)
	}

	mustSetUp(t, e.m, pod) // idempotent: no second bind
	if n := len(mountsBelow(t, rw)); n != 1 {
		t.Errorf("%d mounts at %s after a second SetUp, want 1", n, rw)
	}
	for i := 0; i < 2; i++ {
		if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
			t.Fatal(err)
		}
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left: %v", left)
	}
	if readFile(t, filepath.Join(disk, "precious")) != "data" || readFile(t, filepath.Join(disk, "new")) != "via the bind" {
		t.Fatal("TearDown touched the local volume's data")
	}

	// The old alpha annotation is honoured when it is all there is.
	alpha := localPV("local-alpha", disk, corev1.PersistentVolumeFilesystem)
	alpha.Spec.NodeAffinity = nil
	alpha.Annotations = map[string]string{alphaNodeAffinityAnnotation: `{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"In","values":["node-9"]}]}]}}`}
	e.get.bind(claim("alpha"), alpha)
	if got := setUpErr(t, e.m, newPod("p", claimVolume("a", "alpha", false))); got != `MountVolume.NodeAffinity check failed for volume "local-alpha" : no matching NodeSelectorTerms` {
		t.Errorf("alpha node affinity: %s", got)
	}
}

func TestNodeSelectorMatching(t *testing.T) {
	req := func(key string, op corev1.NodeSelectorOperator, vals ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: op, Values: vals}
	}
	labels := map[string]string{"zone": "a", "disks": "4"}
	for _, tc := range []struct {
		name  string
		terms []corev1.NodeSelectorTerm
		want  bool
	}{
		{"in", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpIn, "a", "b")}}}, true},
		{"not in", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpNotIn, "a")}}}, false},
		{"exists and gt", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpExists), req("disks", corev1.NodeSelectorOpGt, "3")}}}, true},
		{"lt", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("disks", corev1.NodeSelectorOpLt, "3")}}}, false},
		{"does not exist", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("gpu", corev1.NodeSelectorOpDoesNotExist)}}}, true},
		{"field name", []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{req("metadata.name", corev1.NodeSelectorOpIn, "node-1")}}}, true},
		{"field other name", []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{req("metadata.name", corev1.NodeSelectorOpIn, "node-2")}}}, false},
		{"terms are ORed", []corev1.NodeSelectorTerm{
			{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpIn, "z")}},
			{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpIn, "a")}},
		}, true},
		{"an empty term matches nothing", []corev1.NodeSelectorTerm{{}}, false},
	} {
		got, err := matchNodeSelector(&corev1.NodeSelector{NodeSelectorTerms: tc.terms}, "node-1", labels)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
}

// attachLoop attaches a small sparse file to a free loop device with
// LOOP_CONFIGURE and detaches it in cleanup. Other tests on this machine
// use loop devices too: a device taken between LOOP_CTL_GET_FREE and
// LOOP_CONFIGURE (EBUSY) means trying the next free one.
func attachLoop(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	backing, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backing.Close() })
	if err := backing.Truncate(size); err != nil {
		t.Fatal(err)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no loop devices here: %v", err)
	}
	defer ctl.Close()
	for attempt := 0; attempt < 50; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			t.Fatalf("LOOP_CTL_GET_FREE: %v", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			time.Sleep(10 * time.Millisecond) // the node may not exist yet
			continue
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		if err := unix.IoctlLoopConfigure(int(f.Fd()), &cfg); err != nil {
			f.Close()
			if errors.Is(err, unix.EBUSY) {
				continue
			}
			t.Fatalf("LOOP_CONFIGURE %s: %v", dev, err)
		}
		t.Cleanup(func() { // runs after the detach below, which the kernel may finish asynchronously
			for i := 0; i < 100; i++ {
				if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", n)); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Errorf("%s still attached after cleanup", dev)
		})
		t.Cleanup(func() {
			for i := 0; i < 100; i++ {
				err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
				if err == nil || errors.Is(err, unix.ENXIO) {
					break
				}
				if !errors.Is(err, unix.EBUSY) {
					t.Errorf("LOOP_CLR_FD %s: %v", dev, err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			f.Close()
		})
		return dev
	}
	t.Fatal("no free loop device after 50 attempts")
	return ""
}

func TestClaimOnLocalBlockDevice(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	dev := attachLoop(t, 8<<20)
	e.get.bind(claim("raw"), localPV("block-pv", dev, corev1.PersistentVolumeBlock))

	pod := newPod("p")
	pod.Spec.Volumes = []corev1.Volume{claimVolume("data", "raw", false)}
	pod.Spec.Containers[0].VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
	got := mustSetUp(t, e.m, pod)
	if got["data"] != (Mounted{HostPath: dev, Block: true}) {
		t.Fatalf("SetUp = %+v, want the device %s as a block volume", got["data"], dev)
	}
	// It is the device itself: what is written there is on the image.
	f, err := os.OpenFile(got["data"].HostPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("raw block"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	mounted := newPod("p")
	mounted.Spec.Volumes = []corev1.Volume{claimVolume("data", "raw", false)}
	want := `volume "data": error processing PVC default/raw: volume data has volumeMode Block, but is specified in volumeMounts`
	mounted.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	if got := setUpErr(t, e.m, mounted); got != want {
		t.Errorf("a block claim in volumeMounts: %s", got)
	}

	e.get.bind(claim("fs"), localPV("fs-on-block", dev, corev1.PersistentVolumeFilesystem))
	// A Block local volume on a directory is refused.
	e.get.bind(claim("dir"), localPV("block-on-dir", t.TempDir(), corev1.PersistentVolumeBlock))
	dirPod := newPod("p")
	dirPod.Spec.Volumes = []corev1.Volume{claimVolume("data", "dir", false)}
	if got := setUpErr(t, e.m, dirPod); !strings.Contains(got, "has volumeMode Block but") || !strings.Contains(got, "is not a block device") {
		t.Errorf("Block on a directory: %s", got)
	}
	// In volumeDevices, a Filesystem claim is refused.
	devPod := newPod("p")
	devPod.Spec.Volumes = []corev1.Volume{claimVolume("data", "fs", false)}
	devPod.Spec.Containers[0].VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
	if got := setUpErr(t, e.m, devPod); !strings.HasSuffix(got, "volume data has volumeMode Filesystem, but is specified in volumeDevices") {
		t.Errorf("a Filesystem claim in volumeDevices: %s", got)
	}
}

func TestEphemeralVolume(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	data := t.TempDir()
	vol := corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{},
	}}}
	pod := newPod("my-app", vol)
	owned := claim("my-app-scratch")
	owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "my-app", UID: pod.UID, Controller: ptr(true)}}
	e.get.bind(owned, hostPathPV("pv-eph", data))
	if got := mustSetUp(t, e.m, pod)["scratch"]; got != (Mounted{HostPath: data}) {
		t.Fatalf("ephemeral = %+v", got)
	}
	stranger := newPod("my-app", vol) // same name, another UID
	want := `volume "scratch": error processing PVC default/my-app-scratch: PVC default/my-app-scratch was not created for pod default/my-app (pod is not owner)`
	if got := setUpErr(t, e.m, stranger); got != want {
		t.Errorf("claim of another pod: %s", got)
	}
}

func TestUnsupportedVolumeTypes(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	pod := newPod("p",
		corev1.Volume{Name: "share", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example", Path: "/"}}},
		corev1.Volume{Name: "disk", VolumeSource: corev1.VolumeSource{ISCSI: &corev1.ISCSIVolumeSource{TargetPortal: "1.2.3.4", IQN: "iqn", Lun: 0}}},
		corev1.Volume{Name: "inline", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d"}}},
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	)
	got, err := e.m.SetUp(context.Background(), pod)
	want := `volume "share": nfs volumes cannot be mounted in-tree by moorage: reach this storage through a CSI driver` + "\n" +
		`volume "disk": iscsi volumes cannot be mounted in-tree by moorage: reach this storage through a CSI driver` + "\n" +
		`volume "inline": inline csi volumes are not supported yet`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
	if _, ok := got["scratch"]; !ok {
		t.Error("the supported volume was not set up")
	}
}

// Mount options: a local directory's bind mount takes the per-mount ones
// (and the beta annotation wins over spec.mountOptions, as upstream); others
// are refused naming the option; hostPath takes none (upstream's
// UnsupportedMountOption).
func TestClaimMountOptions(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := localPV("local-opts", disk, corev1.PersistentVolumeFilesystem)
	opts.Spec.MountOptions = []string{"noexec", "nosuid", "noatime"}
	e.get.bind(claim("opts"), opts)
	annotated := localPV("local-annotated", disk, corev1.PersistentVolumeFilesystem)
	annotated.Spec.MountOptions = []string{"noexec"}
	annotated.Annotations = map[string]string{corev1.MountOptionAnnotation: "ro, nodev"}
	e.get.bind(claim("annotated"), annotated)
	pod := newPod("p", claimVolume("a", "opts", false), claimVolume("b", "annotated", false))
	got := mustSetUp(t, e.m, pod)
	line := mountLine(t, got["a"].HostPath)
	for _, want := range []string{"rw", "nosuid", "noexec", "noatime"} {
		if !strings.Contains(line, " "+want+",") && !strings.Contains(line, ","+want+",") && !strings.Contains(line, ","+want+" ") {
			t.Errorf("mount options: %q lacks %s", line, want)
		}
	}
	line = mountLine(t, got["b"].HostPath)
	if !strings.Contains(line, " ro,") || !strings.Contains(line, "nodev") || strings.Contains(line, "noexec") {
		t.Errorf("annotated volume's mount: %q, want ro,nodev without noexec", line)
	}
	if err := e.m.TearDown(context.Background(), pod.UID); err != nil {
		t.Fatal(err)
	}

	bad := localPV("local-bad", disk, corev1.PersistentVolumeFilesystem)
	bad.Spec.MountOptions = []string{"noexec", "data=ordered"}
	e.get.bind(claim("bad"), bad)
	if got := setUpErr(t, e.m, newPod("p2", claimVolume("v", "bad", false))); !strings.Contains(got, `local volume local-bad: mount option "data=ordered" cannot apply to a bind mount`) {
		t.Errorf("file system option on a local directory: %s", got)
	}

	hp := hostPathPV("hp-opts", filepath.Join(t.TempDir(), "hp"))
	hp.Spec.MountOptions = []string{"ro"}
	e.get.bind(claim("hp"), hp)
	_, err := e.m.SetUp(context.Background(), newPod("p3", claimVolume("v", "hp", false)))
	if err == nil || err.Error() != `Mount options are not supported for this volume type for volume "hp-opts"` || EventReason(err) != "UnsupportedMountOption" {
		t.Errorf("hostPath with mount options: %v (reason %s)", err, EventReason(err))
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left: %v", left)
	}
}

// A local volume on a block device used as a file system: formatted when
// empty (ext4 unless spec.local.fsType says otherwise), mounted once for the
// node with the volume's mount options, bound into each pod, released with
// the last pod; its data survives.
func TestClaimOnLocalBlockDeviceAsFilesystem(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, node1)
	dev := attachLoop(t, 32<<20)
	pv := localPV("disk-pv", dev, corev1.PersistentVolumeFilesystem)
	pv.Spec.MountOptions = []string{"noatime", "data=ordered"}
	e.get.bind(claim("disk"), pv)

	a, b := newPod("a", claimVolume("v", "disk", false)), newPod("b", claimVolume("v", "disk", true))
	gotA, gotB := mustSetUp(t, e.m, a), mustSetUp(t, e.m, b)
	global := filepath.Join(e.m.root, "plugins", "kubernetes.io", "local-volume", "mounts", "disk-pv")
	line := mountLine(t, global)
	if !strings.Contains(line, " ext4 "+dev+" ") || !strings.Contains(line, "noatime") || !strings.Contains(line, "data=ordered") {
		t.Fatalf("global mount of the device: %q", line)
	}
	if err := os.WriteFile(filepath.Join(gotA["v"].HostPath, "f"), []byte("on the disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(gotB["v"].HostPath, "f")) != "on the disk" {
		t.Error("the second pod does not see the first one's file")
	}
	if err := os.WriteFile(filepath.Join(gotB["v"].HostPath, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write through a read-only claim: %v, want EROFS", err)
	}
	if err := e.m.TearDown(context.Background(), a.UID); err != nil {
		t.Fatal(err)
	}
	if mountLine(t, global) == "" {
		t.Fatal("the global mount went while another pod uses it")
	}
	if err := e.m.TearDown(context.Background(), b.UID); err != nil {
		t.Fatal(err)
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left after the last pod: %v", left)
	}
	// Mounted again (no second mkfs): the data is still there.
	c := newPod("c", claimVolume("v", "disk", false))
	if got := mustSetUp(t, e.m, c); readFile(t, filepath.Join(got["v"].HostPath, "f")) != "on the disk" {
		t.Error("the file did not survive unmounting")
	}
	if err := e.m.TearDown(context.Background(), c.UID); err != nil {
		t.Fatal(err)
	}

	// A file system other than spec.local.fsType is not reformatted.
	xfs := localPV("disk-xfs", dev, corev1.PersistentVolumeFilesystem)
	xfs.Spec.Local.FSType = ptr("xfs")
	e.get.bind(claim("xfs"), xfs)
	d := newPod("d", claimVolume("v", "xfs", false))
	if got := setUpErr(t, e.m, d); !strings.Contains(got, `failed to mount the volume as "xfs", it already contains ext4`) {
		t.Errorf("fsType mismatch: %s", got)
	}
	// A file system option the kernel does not know fails the mount.
	bad := localPV("disk-bad", dev, corev1.PersistentVolumeFilesystem)
	bad.Spec.MountOptions = []string{"no-such-option"}
	e.get.bind(claim("bad"), bad)
	ep := newPod("e", claimVolume("v", "bad", false))
	if got := setUpErr(t, e.m, ep); !strings.Contains(got, `options "no-such-option"`) {
		t.Errorf("unknown file system option: %s", got)
	}
	for _, p := range []*corev1.Pod{d, ep} {
		if err := e.m.TearDown(context.Background(), p.UID); err != nil {
			t.Fatal(err)
		}
	}
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left: %v", left)
	}
}
