package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/csi/local"
)

// csiFixture is the built-in driver serving on a socket in a temporary
// directory (with its data directory there), a client of it, and the
// NodeVolumes the Manager uses. Its cleanup, which runs after the test
// env's (create the fixture first), unpublishes and unstages whatever is
// still recorded, deletes every volume the test created, and fails the
// test if a mount or a loop device of the driver is left (removing it).
type csiFixture struct {
	t        *testing.T
	dir      string
	dataDir  string
	stateDir string
	client   *csi.Client

	mu         sync.Mutex
	nv         *csi.NodeVolumes
	registered bool
	volumes    []string
}

func newCSIFixture(t *testing.T) *csiFixture {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices here: %v", err)
	}
	dir := t.TempDir()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	f := &csiFixture{t: t, dir: dir, dataDir: filepath.Join(dir, "driver"), stateDir: filepath.Join(dir, "state", local.DriverName), registered: true}
	sock := filepath.Join(dir, "csi.sock")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- local.Serve(ctx, "unix://"+sock, local.Options{NodeID: "node-1", DataDir: f.dataDir, Version: "test"})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("driver: %v", err)
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-served:
			t.Fatalf("driver stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if i > 500 {
			t.Fatal("the driver's socket did not appear")
		}
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	c, err := csi.Dial(dctx, "unix://"+sock, csi.WithTimeout(30*time.Second), csi.WithNodeTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.client = c
	f.reopen()
	t.Cleanup(f.cleanup)
	return f
}

// reopen replaces the NodeVolumes with one loaded from disk, as an agent
// restart does.
func (f *csiFixture) reopen() *csi.NodeVolumes {
	f.t.Helper()
	nv, err := csi.OpenNodeVolumes(f.stateDir, f.client)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.nv = nv
	f.mu.Unlock()
	return nv
}

// drivers is Options.CSIDrivers: the built-in driver, while registered.
func (f *csiFixture) drivers(name string) (*csi.NodeVolumes, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != local.DriverName || !f.registered {
		return nil, false
	}
	return f.nv, true
}

func (f *csiFixture) setRegistered(ok bool) {
	f.mu.Lock()
	f.registered = ok
	f.mu.Unlock()
}

// createVolume makes a volume through the client, as the provisioner does.
func (f *csiFixture) createVolume(name string, size int64, block bool) string {
	f.t.Helper()
	capability := csi.VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, Block: block}
	if !block {
		capability.FSType = "ext4"
	}
	v, err := f.client.CreateVolume(context.Background(), csi.CreateVolumeRequest{Name: name, RequiredBytes: size, Capability: capability})
	if err != nil {
		f.t.Fatalf("CreateVolume: %v", err)
	}
	f.mu.Lock()
	f.volumes = append(f.volumes, v.ID)
	f.mu.Unlock()
	return v.ID
}

func (f *csiFixture) cleanup() {
	t, ctx := f.t, context.Background()
	f.mu.Lock()
	nv, volumes := f.nv, f.volumes
	f.mu.Unlock()
	for _, st := range nv.Volumes() {
		t.Errorf("volume %s still recorded at the end: %+v", st.VolumeID, st)
		for target := range st.Targets {
			_ = nv.Unpublish(ctx, st.VolumeID, target)
		}
		_ = nv.Unstage(ctx, st.VolumeID)
	}
	for _, id := range volumes {
		if err := f.client.DeleteVolume(ctx, id, nil); err != nil {
			t.Errorf("DeleteVolume %s: %v", id, err)
		}
	}
	if left := mountsBelow(t, f.dir); len(left) > 0 {
		t.Errorf("mounts left under %s: %v", f.dir, left)
		for i := len(left) - 1; i >= 0; i-- {
			_ = unix.Unmount(left[i], unix.MNT_DETACH)
		}
	}
	for _, dev := range loopsBackedBy(t, f.dataDir) {
		t.Errorf("loop device %s still attached", dev)
		if d, err := os.OpenFile(dev, os.O_RDWR, 0); err == nil {
			_ = unix.IoctlSetInt(int(d.Fd()), unix.LOOP_CLR_FD, 0)
			d.Close()
		}
	}
}

// loopsBackedBy lists the loop devices whose backing file is under dir,
// from sysfs.
func loopsBackedBy(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(string(b), dir+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}

func csiPV(name, handle, fsType string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")},
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		VolumeMode:  &mode,
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
			Driver: local.DriverName, VolumeHandle: handle, FSType: fsType,
		}},
	}}
}

func blockPod(name, claimName string) *corev1.Pod {
	p := newPod(name)
	p.Spec.Volumes = []corev1.Volume{claimVolume("data", claimName, false)}
	p.Spec.Containers[0].VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
	return p
}

func mustTearDown(t *testing.T, m *Manager, p *corev1.Pod) {
	t.Helper()
	if err := m.TearDown(context.Background(), p.UID); err != nil {
		t.Fatalf("TearDown(%s): %v", p.Name, err)
	}
	if _, err := os.Lstat(m.podDir(p.UID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod directory of %s left after TearDown (%v)", p.Name, err)
	}
}

// fill writes up to size bytes to a new file and returns the write error.
func fill(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

// A Filesystem CSI volume of the built-in driver, through the client and
// NodeVolumes as the agent will use them: staged once, published for two
// pods (one read-only), its size enforced, kept while its driver is gone,
// torn down after an agent restart, its data kept.
func TestCSIFilesystemVolume(t *testing.T) {
	f := newCSIFixture(t)
	e := newEnv(t, Options{NodeName: "node-1", CSIDrivers: f.drivers})
	ctx := context.Background()
	id := f.createVolume("pvc-fs", 64<<20, false)
	e.get.bind(claim("data"), csiPV("pv-fs", id, "ext4", corev1.PersistentVolumeFilesystem))
	staging := csi.StagingPath(e.m.root, local.DriverName, id)

	// Until the driver registers: the kubelet's error, and a later SetUp
	// (the agent's next sync) succeeds.
	f.setRegistered(false)
	a := newPod("a", claimVolume("v", "data", false))
	_, err := e.m.SetUp(ctx, a)
	want := `MountVolume.MountDevice failed for volume "pv-fs" : kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name local.csi.moorage.io not found in the list of registered CSI drivers`
	if err == nil || err.Error() != want || EventReason(err) != "FailedMount" {
		t.Fatalf("unregistered driver: %v (reason %s), want %s", err, EventReason(err), want)
	}
	f.setRegistered(true)
	gotA := mustSetUp(t, e.m, a)["v"]
	target := filepath.Join(e.m.root, "pods", string(a.UID), "volumes", "kubernetes.io~csi", "pv-fs", "mount")
	if gotA != (Mounted{HostPath: target}) {
		t.Fatalf("SetUp = %+v, want the publish target %s", gotA, target)
	}
	for _, p := range []string{staging, target} {
		if line := mountLine(t, p); !strings.Contains(line, " ext4 /dev/loop") {
			t.Fatalf("%s is not an ext4 mount of a loop device: %q", p, line)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "hello"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustSetUp(t, e.m, a) // idempotent
	if n := len(mountsBelow(t, target)); n != 1 {
		t.Errorf("%d mounts at %s after a second SetUp, want 1", n, target)
	}
	// A publication unmounted behind the driver's back is published
	// again, not handed to the pod as an empty directory.
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	if mustSetUp(t, e.m, a); mountLine(t, target) == "" || readFile(t, filepath.Join(target, "hello")) != "hello" {
		t.Fatal("a target unmounted behind the driver's back was not published again")
	}

	// A second pod shares the staged volume, read-only.
	b := newPod("b", claimVolume("v", "data", true))
	gotB := mustSetUp(t, e.m, b)["v"]
	if !gotB.ReadOnly || readFile(t, filepath.Join(gotB.HostPath, "hello")) != "hello" {
		t.Fatalf("second pod: %+v", gotB)
	}
	if err := os.WriteFile(filepath.Join(gotB.HostPath, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write through a read-only claim: %v, want EROFS", err)
	}
	if n := len(mountsBelow(t, staging)); n != 1 {
		t.Errorf("%d mounts at the staging path, want 1", n)
	}

	// The volume holds 64Mi, not more.
	big := filepath.Join(target, "big")
	if err := fill(big, 128<<20); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("writing 128Mi to a 64Mi volume: %v, want ENOSPC", err)
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}

	// Without its driver, a published volume is kept, mounted, with the
	// pod's directory.
	f.setRegistered(false)
	err = e.m.TearDown(ctx, a.UID)
	if err == nil || !strings.Contains(err.Error(), "driver name local.csi.moorage.io not found in the list of registered CSI drivers") {
		t.Fatalf("TearDown without the driver: %v", err)
	}
	if mountLine(t, target) == "" || readFile(t, filepath.Join(target, "hello")) != "hello" {
		t.Fatal("TearDown without the driver unmounted or removed the volume")
	}
	f.setRegistered(true)
	mustTearDown(t, e.m, a)
	if mountLine(t, target) != "" || mountLine(t, staging) == "" {
		t.Fatal("after the first pod's TearDown, its target must be unpublished and the staging kept for the second pod")
	}

	// After an agent restart (a new Manager and NodeVolumes from disk),
	// TearDown of the last pod unpublishes and unstages.
	m2 := NewManager(e.root, e.get, Options{NodeName: "node-1", CSIDrivers: f.drivers})
	nv := f.reopen()
	mustTearDown(t, m2, b)
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left after the last pod: %v", left)
	}
	if loops := loopsBackedBy(t, f.dataDir); len(loops) != 0 {
		t.Fatalf("loop devices still attached after the last pod: %v", loops)
	}
	if st, ok := nv.Volume(id); ok {
		t.Fatalf("volume still recorded: %+v", st)
	}
	if _, err := os.Lstat(filepath.Dir(staging)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging directory left: %v", err)
	}
	mustTearDown(t, m2, b) // idempotent

	// The data stayed on the volume.
	c := newPod("c", claimVolume("v", "data", false))
	if got := mustSetUp(t, m2, c)["v"]; readFile(t, filepath.Join(got.HostPath, "hello")) != "hello" {
		t.Error("the file did not survive unstaging")
	}
	mustTearDown(t, m2, c)
}

// A Block CSI volume: published as a device file at the kubelet's per-pod
// publish path, linked from the pod's volumeDevices, released with the pod.
func TestCSIBlockVolume(t *testing.T) {
	f := newCSIFixture(t)
	e := newEnv(t, Options{NodeName: "node-1", CSIDrivers: f.drivers})
	ctx := context.Background()
	id := f.createVolume("pvc-blk", 16<<20, true)
	e.get.bind(claim("raw"), csiPV("pv-blk", id, "", corev1.PersistentVolumeBlock))

	p := blockPod("p", "raw")
	got := mustSetUp(t, e.m, p)["data"]
	devices := filepath.Join(e.m.root, "plugins", "kubernetes.io", "csi", "volumeDevices")
	publish := filepath.Join(devices, "publish", "pv-blk", string(p.UID))
	if got != (Mounted{HostPath: publish, Block: true}) {
		t.Fatalf("SetUp = %+v, want the block publish path %s", got, publish)
	}
	if ok, err := isBlockDevice(publish); err != nil || !ok {
		t.Fatalf("%s is not a block device (%v)", publish, err)
	}
	link := filepath.Join(e.m.root, "pods", string(p.UID), "volumeDevices", "kubernetes.io~csi", "pv-blk")
	if dest, err := os.Readlink(link); err != nil || dest != publish {
		t.Errorf("pod device link %s → %q (%v), want %s", link, dest, err, publish)
	}
	dev, err := os.OpenFile(publish, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt([]byte("raw block"), 4096); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	if _, err := dev.ReadAt(buf, 4096); err != nil || string(buf) != "raw block" {
		t.Errorf("read back %q (%v)", buf, err)
	}
	dev.Close()
	mustSetUp(t, e.m, p) // idempotent

	mustTearDown(t, e.m, p)
	if left := mountsBelow(t, e.m.root); len(left) != 0 {
		t.Fatalf("mounts left: %v", left)
	}
	if loops := loopsBackedBy(t, f.dataDir); len(loops) != 0 {
		t.Fatalf("loop devices still attached: %v", loops)
	}
	for _, gone := range []string{filepath.Join(devices, "publish", "pv-blk"), filepath.Join(devices, "staging", "pv-blk"), filepath.Join(devices, "pv-blk")} {
		if _, err := os.Lstat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after TearDown (%v)", gone, err)
		}
	}

	// An unregistered driver, for a block volume.
	f.setRegistered(false)
	q := blockPod("q", "raw")
	_, err = e.m.SetUp(ctx, q)
	want := `MapVolume.SetUpDevice failed for volume "pv-blk" : kubernetes.io/csi: blockMapper.SetUpDevice failed to get CSI client: driver name local.csi.moorage.io not found in the list of registered CSI drivers`
	if err == nil || err.Error() != want || EventReason(err) != "FailedMapVolume" {
		t.Errorf("unregistered driver: %v (reason %s), want %s", err, EventReason(err), want)
	}
	if err := e.m.TearDown(ctx, q.UID); err != nil {
		t.Errorf("TearDown of a pod whose volume never set up: %v", err)
	}
}

// The pod's fsGroup goes to a CSI volume as the CSIDriver's fsGroupPolicy
// says.
func TestCSIFSGroupPolicy(t *testing.T) {
	f := newCSIFixture(t)
	var policy *storagev1.FSGroupPolicy
	var policyErr error
	e := newEnv(t, Options{NodeName: "node-1", CSIDrivers: f.drivers,
		CSIDriver: func(_ context.Context, name string) (*storagev1.CSIDriver, error) {
			if policyErr != nil {
				return nil, policyErr
			}
			if policy == nil {
				return nil, apierrors.NewNotFound(storagev1.Resource("csidrivers"), name)
			}
			return &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: storagev1.CSIDriverSpec{FSGroupPolicy: policy}}, nil
		}})
	id := f.createVolume("pvc-fsgroup", 64<<20, false)
	e.get.bind(claim("g"), csiPV("pv-g", id, "ext4", corev1.PersistentVolumeFilesystem))

	for i, tc := range []struct {
		policy   *storagev1.FSGroupPolicy // nil: no CSIDriver object
		fsType   string
		readOnly bool
		gid      int64
		wantGid  uint32
	}{
		{ptr(storagev1.FileFSGroupPolicy), "ext4", false, 5000, 5000},
		{ptr(storagev1.NoneFSGroupPolicy), "ext4", false, 6000, 5000},
		{nil, "", false, 7000, 5000}, // ReadWriteOnceWithFSType without an fsType
		{nil, "ext4", false, 8000, 8000},
		{ptr(storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy), "ext4", true, 9000, 8000}, // read-only
	} {
		policy = tc.policy
		e.get.mu.Lock()
		e.get.volumes["pv-g"].Spec.CSI.FSType = tc.fsType
		e.get.mu.Unlock()
		p := newPod(fmt.Sprintf("p%d", i), claimVolume("v", "g", tc.readOnly))
		p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(tc.gid)}
		got := mustSetUp(t, e.m, p)["v"]
		for _, path := range []string{got.HostPath, filepath.Join(got.HostPath, "lost+found")} {
			if fi, st := statT(t, path); st.Gid != tc.wantGid || (tc.wantGid == uint32(tc.gid) && fi.Mode()&os.ModeSetgid == 0) {
				t.Errorf("case %d (policy %s, fsType %q, readOnly %v): %s has gid %d mode %v, want gid %d", i, policyName(tc.policy), tc.fsType, tc.readOnly, path, st.Gid, fi.Mode(), tc.wantGid)
			}
		}
		mustTearDown(t, e.m, p)
	}

	// The CSIDriver cannot be read: the kubelet's error, nothing staged.
	policyErr = errors.New("etcdserver: request timed out")
	p := newPod("p", claimVolume("v", "g", false))
	want := `MountVolume.SetUp failed for volume "pv-g" : kubernetes.io/csi: mounter.SetupAt failed to check fsGroup policy: etcdserver: request timed out`
	if got := setUpErr(t, e.m, p); got != want {
		t.Errorf("CSIDriver read error:\n got %s\nwant %s", got, want)
	}
	mustTearDown(t, e.m, p)
}

func policyName(p *storagev1.FSGroupPolicy) string {
	if p == nil {
		return "(no CSIDriver)"
	}
	return string(*p)
}

func TestCSIAppliesFSGroup(t *testing.T) {
	rwo := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	for _, tc := range []struct {
		policy   storagev1.FSGroupPolicy
		fsType   string
		modes    []corev1.PersistentVolumeAccessMode
		readOnly bool
		want     bool
	}{
		{storagev1.FileFSGroupPolicy, "", []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, false, true},
		{storagev1.FileFSGroupPolicy, "ext4", rwo, true, false},
		{storagev1.NoneFSGroupPolicy, "ext4", rwo, false, false},
		{storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, "ext4", rwo, false, true},
		{storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, "ext4", []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}, false, true},
		{storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, "ext4", []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany, corev1.ReadWriteMany}, false, false},
		{storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, "", rwo, false, false},
		{storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy, "ext4", nil, false, false},
	} {
		if got := csiAppliesFSGroup(tc.policy, tc.fsType, tc.modes, tc.readOnly); got != tc.want {
			t.Errorf("%+v: %v", tc, got)
		}
	}
}
