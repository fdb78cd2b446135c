package volume

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/moorage/moorage/internal/csi"
)

// expansionHook is Options.NodeExpand recording what it is handed, and
// expanding (or failing with err).
type expansionHook struct {
	mu     sync.Mutex
	got    []*NodeExpansion
	sizes  []int64
	errs   []error
	expand bool
	err    error
}

func (h *expansionHook) hook(ctx context.Context, e *NodeExpansion) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, e)
	if h.err != nil {
		return h.err
	}
	if h.expand {
		size, err := e.Expand(ctx)
		h.sizes, h.errs = append(h.sizes, size), append(h.errs, err)
	}
	return nil
}

func (h *expansionHook) calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// grow makes the volume bigger as the resizer does: ControllerExpandVolume,
// the PV's new capacity, and the claim handed to the node.
func grow(t *testing.T, f *csiFixture, g *fakeGetter, claimName, pvName, id string, size int64) {
	t.Helper()
	if _, err := f.client.ControllerExpand(context.Background(), csi.ExpandRequest{VolumeID: id, RequiredBytes: size}); err != nil {
		t.Fatalf("ControllerExpand: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.volumes[pvName].Spec.Capacity[corev1.ResourceStorage] = *resource.NewQuantity(size, resource.BinarySI)
	c := g.claims["default/"+claimName]
	c.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}
	c.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimNodeResizePending}
}

func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

// boundCSI creates a volume of the built-in driver and a claim bound to
// it, with the claim's capacity the volume's.
func boundCSI(t *testing.T, f *csiFixture, g *fakeGetter, name, fsType string, size int64) (id string) {
	t.Helper()
	v, err := f.client.CreateVolume(context.Background(), csi.CreateVolumeRequest{Name: name, RequiredBytes: size,
		Capability: csi.VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, FSType: fsType}})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	f.mu.Lock()
	f.volumes = append(f.volumes, v.ID)
	f.mu.Unlock()
	pv := csiPV("pv-"+name, v.ID, fsType, corev1.PersistentVolumeFilesystem)
	pv.Spec.Capacity[corev1.ResourceStorage] = *resource.NewQuantity(size, resource.BinarySI)
	c := claim(name)
	c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}
	g.bind(c, pv)
	return v.ID
}

// An xfs volume in use grows online: SetUp hands the published volume to
// the hook only once the resizer asked the node, and NodeExpansion.Expand
// grows its file system at the pod's target.
func TestCSINodeExpansionOnline(t *testing.T) {
	f := newCSIFixture(t)
	h := &expansionHook{expand: true}
	e := newEnv(t, Options{NodeName: "node-1", CSIDrivers: f.drivers, NodeExpand: h.hook})
	const mi = int64(1) << 20
	id := boundCSI(t, f, e.get, "xfs", "xfs", 300*mi)
	pod := newPod("a", claimVolume("v", "xfs", false))
	target := mustSetUp(t, e.m, pod)["v"].HostPath
	if n := h.calls(); n != 0 {
		t.Fatalf("the hook was called %d times for a volume with nothing to expand", n)
	}
	before := fsSize(t, target)

	grow(t, f, e.get, "xfs", "pv-xfs", id, 400*mi)
	mustSetUp(t, e.m, pod)
	if n := h.calls(); n != 1 {
		t.Fatalf("the hook was called %d times, want 1", n)
	}
	x := h.got[0]
	if x.Volume != "v" || x.PV.Name != "pv-xfs" || x.Claim.Name != "xfs" || x.Pod != pod || x.ReadOnly {
		t.Errorf("NodeExpansion %+v", x)
	}
	if h.errs[0] != nil || h.sizes[0] < 400*mi {
		t.Fatalf("Expand = %d, %v; want at least %d", h.sizes[0], h.errs[0], 400*mi)
	}
	if after := fsSize(t, target); after <= before+50*mi {
		t.Errorf("file system at the target: %d bytes before, %d after; want it grown by ~100Mi", before, after)
	}

	// Read-only users are handed over as such; hook errors fail SetUp
	// with the kubelet's words.
	h.expand, h.err = false, errors.New("boom")
	ro := newPod("b", claimVolume("v", "xfs", true))
	_, err := e.m.SetUp(context.Background(), ro)
	want := `MountVolume.Setup failed while expanding volume for volume "pv-xfs" : boom`
	if err == nil || err.Error() != want || EventReason(err) != "FailedMount" {
		t.Errorf("SetUp with a failing hook: %v (reason %s), want %s", err, EventReason(err), want)
	}
	if last := h.got[len(h.got)-1]; !last.ReadOnly {
		t.Errorf("read-only pod's NodeExpansion has ReadOnly false")
	}
	h.err = nil
	mustTearDown(t, e.m, ro)
	mustTearDown(t, e.m, pod)
}

// A mounted ext4 cannot grow here (no CAP_SYS_RESOURCE): the driver says
// FAILED_PRECONDITION, which Expand passes on, worded as the kubelet.
func TestCSINodeExpansionExt4InUse(t *testing.T) {
	f := newCSIFixture(t)
	h := &expansionHook{expand: true}
	e := newEnv(t, Options{NodeName: "node-1", CSIDrivers: f.drivers, NodeExpand: h.hook})
	const mi = int64(1) << 20
	id := boundCSI(t, f, e.get, "ext", "ext4", 64*mi)
	pod := newPod("a", claimVolume("v", "ext", false))
	mustSetUp(t, e.m, pod)
	grow(t, f, e.get, "ext", "pv-ext", id, 128*mi)
	mustSetUp(t, e.m, pod)
	if h.calls() != 1 {
		t.Fatalf("the hook was called %d times, want 1", h.calls())
	}
	err := h.errs[0]
	if err == nil {
		t.Skip("this machine grows mounted ext4 file systems (CAP_SYS_RESOURCE)")
	}
	if status.Code(err) != codes.FailedPrecondition || csi.Classify(err) != csi.Final ||
		!strings.HasPrefix(err.Error(), "Expander.NodeExpand failed to expand the volume : rpc error: code = FailedPrecondition desc = ") {
		t.Errorf("Expand: %v (code %s, kind %s)", err, status.Code(err), csi.Classify(err))
	}
	mustTearDown(t, e.m, pod)
}

// The kubelet's test: the PV is bigger than the claim, and the resizer
// handed the resize to the node (or records no status at all).
func TestNodeExpansionPending(t *testing.T) {
	q := resource.MustParse
	for _, tc := range []struct {
		name      string
		pv, have  string
		st        corev1.ClaimResourceStatus
		allocated bool
		want      bool
	}{
		{name: "node pending", pv: "2Gi", have: "1Gi", st: corev1.PersistentVolumeClaimNodeResizePending, allocated: true, want: true},
		{name: "node in progress", pv: "2Gi", have: "1Gi", st: corev1.PersistentVolumeClaimNodeResizeInProgress, allocated: true, want: true},
		{name: "controller still at work", pv: "2Gi", have: "1Gi", st: corev1.PersistentVolumeClaimControllerResizeInProgress, allocated: true},
		{name: "node infeasible", pv: "2Gi", have: "1Gi", st: corev1.PersistentVolumeClaimNodeResizeInfeasible, allocated: true},
		{name: "older resizer", pv: "2Gi", have: "1Gi", want: true},
		{name: "status cleared, allocated kept", pv: "2Gi", have: "1Gi", allocated: true},
		{name: "done", pv: "2Gi", have: "2Gi"},
	} {
		c := &corev1.PersistentVolumeClaim{}
		c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: q(tc.have)}
		if tc.st != "" {
			c.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: tc.st}
		}
		if tc.allocated {
			c.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: q(tc.pv)}
		}
		pv := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: q(tc.pv)}}}
		if got := nodeExpansionPending(c, pv); got != tc.want {
			t.Errorf("%s: pending = %v, want %v", tc.name, got, tc.want)
		}
	}
}
