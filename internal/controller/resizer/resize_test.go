package resizer

import (
	"context"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	gi     = int64(1) << 30
	source = " [external-resizer " + testDriver + "]"
)

func storage(l corev1.ResourceList) string {
	q, ok := l[corev1.ResourceStorage]
	if !ok {
		return "<none>"
	}
	return q.String()
}

func resizeStatus(c *corev1.PersistentVolumeClaim) corev1.ClaimResourceStatus {
	return c.Status.AllocatedResourceStatuses[corev1.ResourceStorage]
}

// conditions are the claim's condition types, each with its message.
func conditions(c *corev1.PersistentVolumeClaim) map[corev1.PersistentVolumeClaimConditionType]string {
	out := map[corev1.PersistentVolumeClaimConditionType]string{}
	for _, cond := range c.Status.Conditions {
		if cond.Status == corev1.ConditionTrue {
			out[cond.Type] = cond.Message
		}
	}
	return out
}

// The driver grows the volume and asks for the node: the PV has the new
// size (and the claim's old one in the pre-resize annotation), the claim
// waits for the node with upstream's condition, status and events. Once
// the node is done (the claim's capacity caught up), the annotation goes.
func TestResizeNodeExpansionRequired(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{}
	e.run(d, Options{})
	e.bound("data", nil)
	e.request("data", "2Gi")

	var c *corev1.PersistentVolumeClaim
	e.eventually("NodeResizePending", func() bool {
		c = e.claim("data")
		return resizeStatus(c) == corev1.PersistentVolumeClaimNodeResizePending
	})
	if got := storage(c.Status.AllocatedResources); got != "2Gi" {
		t.Errorf("allocatedResources = %s, want 2Gi", got)
	}
	if got := storage(c.Status.Capacity); got != "1Gi" {
		t.Errorf("capacity = %s before the node expanded, want 1Gi", got)
	}
	conds := conditions(c)
	if msg, ok := conds[corev1.PersistentVolumeClaimFileSystemResizePending]; !ok || msg != "Waiting for user to (re-)start a pod to finish file system resize of volume on node." {
		t.Errorf("conditions %v: want FileSystemResizePending with upstream's message", conds)
	}
	if _, ok := conds[corev1.PersistentVolumeClaimResizing]; !ok {
		t.Errorf("conditions %v: the Resizing condition stays until the node is done, as upstream", conds)
	}
	pv := e.pv("pv-data")
	if got := storage(pv.Spec.Capacity); got != "2Gi" {
		t.Errorf("PV capacity = %s, want 2Gi", got)
	}
	if got := pv.Annotations["volume.alpha.kubernetes.io/pre-resize-capacity"]; got != "1Gi" {
		t.Errorf("PV pre-resize-capacity = %q, want 1Gi", got)
	}
	reqs := d.expandRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d ControllerExpandVolume calls, want 1", len(reqs))
	}
	r := reqs[0]
	if r.VolumeId != "vol-data" || r.GetCapacityRange().GetRequiredBytes() != 2*gi || r.GetCapacityRange().GetLimitBytes() != 0 {
		t.Errorf("request %v", r)
	}
	if m := r.GetVolumeCapability().GetMount(); m == nil || m.FsType != "ext4" ||
		r.GetVolumeCapability().GetAccessMode().GetMode() != csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
		t.Errorf("capability %v", r.GetVolumeCapability())
	}
	e.waitEvent("data", "Resizing", "Normal External resizer is resizing volume pv-data"+source)
	e.waitEvent("data", "FileSystemResizeRequired", "Normal Require file system resize of volume on node"+source)

	// The node finishes (the kubelet's MarkFSResizeFinished).
	c.Status.Capacity[corev1.ResourceStorage] = resource.MustParse("2Gi")
	c.Status.Conditions, c.Status.AllocatedResourceStatuses = nil, nil
	if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").UpdateStatus(context.Background(), c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("pre-resize-capacity removed", func() bool {
		_, ok := e.pv("pv-data").Annotations["volume.alpha.kubernetes.io/pre-resize-capacity"]
		return !ok
	})
	if n := len(d.expandRequests()); n != 1 {
		t.Errorf("%d ControllerExpandVolume calls after the node finished, want 1", n)
	}
}

// The driver finishes the resize itself: the claim gets the size it
// reports, nothing of the resize stays in its status; the PV's
// controller-expand secret reaches the driver.
func TestResizeFinishedByController(t *testing.T) {
	e := newEnv(t)
	if _, err := e.kube.CoreV1().Secrets("default").Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "expand", Namespace: "default"},
		Data:       map[string][]byte{"token": []byte("s3cret")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := &fakeDriver{expand: func(_ int, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
		// Rounded up to whole GiB, as cloud disks are.
		return &csipb.ControllerExpandVolumeResponse{CapacityBytes: 3 * gi}, nil
	}}
	e.run(d, Options{})
	e.bound("data", func(pv *corev1.PersistentVolume) {
		pv.Spec.CSI.ControllerExpandSecretRef = &corev1.SecretReference{Name: "expand", Namespace: "default"}
	})
	e.request("data", "2500Mi")

	var c *corev1.PersistentVolumeClaim
	e.eventually("capacity 3Gi", func() bool {
		c = e.claim("data")
		return storage(c.Status.Capacity) == "3Gi"
	})
	if len(c.Status.Conditions) != 0 || c.Status.AllocatedResourceStatuses != nil {
		t.Errorf("conditions %v, allocatedResourceStatuses %v: want none after a finished resize", c.Status.Conditions, c.Status.AllocatedResourceStatuses)
	}
	if got := storage(c.Status.AllocatedResources); got != "2500Mi" {
		t.Errorf("allocatedResources = %s, want the size asked (2500Mi)", got)
	}
	pv := e.pv("pv-data")
	if got := storage(pv.Spec.Capacity); got != "3Gi" {
		t.Errorf("PV capacity = %s, want 3Gi", got)
	}
	if _, ok := pv.Annotations["volume.alpha.kubernetes.io/pre-resize-capacity"]; ok {
		t.Errorf("PV annotations %v: no pre-resize-capacity without node expansion", pv.Annotations)
	}
	if reqs := d.expandRequests(); len(reqs) != 1 || reqs[0].Secrets["token"] != "s3cret" {
		t.Errorf("ControllerExpandVolume requests %v: want one, with the secret", reqs)
	}
	e.waitEvent("data", "VolumeResizeSuccessful", "Normal Resize volume succeeded"+source)
}

// A size the driver cannot make (OUT_OF_RANGE): ControllerResizeInfeasible
// with the ControllerResizeError condition; the same size is tried again
// only slowly; a lower request is tried at once and succeeds, clearing
// the error.
func TestResizeInfeasible(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{expand: func(_ int, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
		if req.GetCapacityRange().GetRequiredBytes() > 3*gi {
			return nil, status.Error(codes.OutOfRange, "at most 3Gi")
		}
		return &csipb.ControllerExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes()}, nil
	}}
	e.run(d, Options{RetryStart: 20 * time.Millisecond, RetryMax: 2 * time.Second})
	e.bound("data", nil)
	e.request("data", "4Gi")

	var c *corev1.PersistentVolumeClaim
	e.eventually("ControllerResizeInfeasible", func() bool {
		c = e.claim("data")
		return resizeStatus(c) == corev1.PersistentVolumeClaimControllerResizeInfeasible
	})
	want := "failed to expand pvc with rpc error: code = OutOfRange desc = at most 3Gi"
	if got := conditions(c)[corev1.PersistentVolumeClaimControllerResizeError]; got != want {
		t.Errorf("ControllerResizeError condition %q, want %q", got, want)
	}
	if got := storage(e.pv("pv-data").Spec.Capacity); got != "1Gi" {
		t.Errorf("PV capacity %s after a failed resize, want 1Gi", got)
	}
	e.waitEvent("data", "VolumeResizeFailed", `Warning resize volume "pv-data" by resizer "fake.csi.moorage.io" failed: rpc error: code = OutOfRange desc = at most 3Gi`+source)
	// With a 20 ms back-off, a normal failure would be retried tens of
	// times in a second; an infeasible one waits for RetryMax.
	time.Sleep(time.Second)
	if n := len(d.expandRequests()); n > 3 {
		t.Errorf("%d ControllerExpandVolume calls within a second of an infeasible answer; want it retried slowly", n)
	}

	// Recovery: the user asks for less, which the driver can make.
	e.request("data", "3Gi")
	e.eventually("capacity 3Gi", func() bool {
		c = e.claim("data")
		return storage(c.Status.Capacity) == "3Gi"
	})
	if len(c.Status.Conditions) != 0 || c.Status.AllocatedResourceStatuses != nil {
		t.Errorf("after recovery: conditions %v, statuses %v; want none", c.Status.Conditions, c.Status.AllocatedResourceStatuses)
	}
	reqs := d.expandRequests()
	if last := reqs[len(reqs)-1]; last.GetCapacityRange().GetRequiredBytes() != 3*gi {
		t.Errorf("last request asked %d bytes, want 3Gi", last.GetCapacityRange().GetRequiredBytes())
	}
}

// Errors that may leave the expansion running (UNAVAILABLE) write nothing
// and repeat the same call; other final errors (INTERNAL) add the
// ControllerResizeError condition but stay in progress and are retried.
// Both end in success, with the errors gone.
func TestResizeRetries(t *testing.T) {
	e := newEnv(t)
	seen := make(chan *corev1.PersistentVolumeClaim, 10)
	d := &fakeDriver{}
	d.expand = func(n int, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
		c, err := e.kube.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), "data", metav1.GetOptions{})
		if err == nil {
			seen <- c
		}
		switch n {
		case 1:
			return nil, status.Error(codes.Unavailable, "driver restarting")
		case 2:
			return nil, status.Error(codes.Internal, "disk busy")
		}
		return &csipb.ControllerExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes()}, nil
	}
	e.run(d, Options{})
	e.bound("data", nil)
	e.request("data", "2Gi")
	var c *corev1.PersistentVolumeClaim
	e.eventually("capacity 2Gi", func() bool {
		c = e.claim("data")
		return storage(c.Status.Capacity) == "2Gi"
	})
	if len(c.Status.Conditions) != 0 || c.Status.AllocatedResourceStatuses != nil {
		t.Errorf("conditions %v, statuses %v: want none after success", c.Status.Conditions, c.Status.AllocatedResourceStatuses)
	}
	reqs := d.expandRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d ControllerExpandVolume calls, want 3", len(reqs))
	}
	for _, r := range reqs {
		if r.GetCapacityRange().GetRequiredBytes() != 2*gi {
			t.Errorf("a retry asked %d bytes, want the same 2Gi", r.GetCapacityRange().GetRequiredBytes())
		}
	}
	// What the claim looked like at each call.
	first, second, third := <-seen, <-seen, <-seen
	for i, c := range []*corev1.PersistentVolumeClaim{first, second, third} {
		if resizeStatus(c) != corev1.PersistentVolumeClaimControllerResizeInProgress || storage(c.Status.AllocatedResources) != "2Gi" {
			t.Errorf("call %d: status %q, allocated %s; want ControllerResizeInProgress, 2Gi", i+1, resizeStatus(c), storage(c.Status.AllocatedResources))
		}
		if _, ok := conditions(c)[corev1.PersistentVolumeClaimResizing]; !ok {
			t.Errorf("call %d: conditions %v lack Resizing", i+1, conditions(c))
		}
	}
	if _, ok := conditions(second)[corev1.PersistentVolumeClaimControllerResizeError]; ok {
		t.Errorf("after UNAVAILABLE: conditions %v; an operation that may be running writes no error", conditions(second))
	}
	if got := conditions(third)[corev1.PersistentVolumeClaimControllerResizeError]; got != "failed to expand pvc with rpc error: code = Internal desc = disk busy" {
		t.Errorf("after INTERNAL: ControllerResizeError %q", got)
	}
	e.waitEvent("data", "VolumeResizeFailed", `Warning resize volume "pv-data" by resizer "fake.csi.moorage.io" failed: rpc error: code = Unavailable desc = driver restarting`+source)
	e.waitEvent("data", "VolumeResizeFailed", `Warning resize volume "pv-data" by resizer "fake.csi.moorage.io" failed: rpc error: code = Internal desc = disk busy`+source)
}

// A driver that expands on the node only (no controller EXPAND_VOLUME):
// no RPC, the PV takes the requested size and the node is asked to
// expand, as upstream's trivial resizer does.
func TestResizeNodeOnlyDriver(t *testing.T) {
	e := newEnv(t)
	d := &fakeDriver{noControllerExpand: true}
	e.run(d, Options{})
	e.bound("data", nil)
	e.request("data", "2Gi")
	var c *corev1.PersistentVolumeClaim
	e.eventually("NodeResizePending", func() bool {
		c = e.claim("data")
		return resizeStatus(c) == corev1.PersistentVolumeClaimNodeResizePending
	})
	if _, ok := conditions(c)[corev1.PersistentVolumeClaimFileSystemResizePending]; !ok {
		t.Errorf("conditions %v lack FileSystemResizePending", conditions(c))
	}
	if got := storage(e.pv("pv-data").Spec.Capacity); got != "2Gi" {
		t.Errorf("PV capacity = %s, want 2Gi", got)
	}
	if n := len(d.expandRequests()); n != 0 {
		t.Errorf("%d ControllerExpandVolume calls to a driver without the capability", n)
	}
	e.waitEvent("data", "FileSystemResizeRequired", "Normal Require file system resize of volume on node"+source)
}

// A driver that can expand nothing: the resizer does not run (as the
// sidecar refuses to start).
func TestResizeUnsupportedDriver(t *testing.T) {
	for name, d := range map[string]*fakeDriver{
		"no controller service": {noControllerService: true},
		"no expansion":          {noControllerExpand: true, noNodeExpand: true},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			c, err := New(e.cfg, d.serve(t), nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); c.Run(context.Background()) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return for a driver that cannot expand")
			}
		})
	}
}

// In NodeLocal mode (the built-in driver), only the volumes on this node
// are resized here.
func TestResizeNodeLocal(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"n1", "n2"} {
		if _, err := e.kube.CoreV1().Nodes().Create(context.Background(), &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"kubernetes.io/hostname": n}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d := &fakeDriver{}
	e.run(d, Options{NodeLocal: true, NodeName: "n1"})
	on := func(node string) func(*corev1.PersistentVolume) {
		return func(pv *corev1.PersistentVolume) {
			pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}}
		}
	}
	e.bound("there", on("n2"))
	e.bound("here", on("n1"))
	e.request("there", "2Gi")
	e.request("here", "2Gi")
	e.eventually("the local claim resized", func() bool {
		return resizeStatus(e.claim("here")) == corev1.PersistentVolumeClaimNodeResizePending
	})
	time.Sleep(200 * time.Millisecond)
	if c := e.claim("there"); c.Status.AllocatedResources != nil || storage(e.pv("pv-there").Spec.Capacity) != "1Gi" {
		t.Errorf("the other node's claim was touched: %+v", c.Status)
	}
	for _, r := range d.expandRequests() {
		if r.VolumeId != "vol-here" {
			t.Errorf("ControllerExpandVolume for %s, which is on another node", r.VolumeId)
		}
	}
}

// plan keeps the size under way and takes the request otherwise.
func TestPlan(t *testing.T) {
	q := resource.MustParse
	mk := func(request, capacity, pvSize, allocated string, st corev1.ClaimResourceStatus, conds ...corev1.PersistentVolumeClaimConditionType) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
		c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{UID: types.UID("u")}}
		c.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: q(request)}
		c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: q(capacity)}
		if allocated != "" {
			c.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: q(allocated)}
		}
		if st != "" {
			c.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: st}
		}
		for _, t := range conds {
			c.Status.Conditions = append(c.Status.Conditions, corev1.PersistentVolumeClaimCondition{Type: t, Status: corev1.ConditionTrue})
		}
		pv := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: q(pvSize)}}}
		return c, pv
	}
	for _, tc := range []struct {
		name                         string
		request, capacity, pv, alloc string
		st                           corev1.ClaimResourceStatus
		conds                        []corev1.PersistentVolumeClaimConditionType
		finalErr, controllerExpand   bool
		want                         string // "" = nothing to do
	}{
		{name: "fresh request", request: "2Gi", capacity: "1Gi", pv: "1Gi", want: "2Gi", controllerExpand: true},
		{name: "in progress keeps the size asked", request: "3Gi", capacity: "1Gi", pv: "1Gi", alloc: "2Gi", st: corev1.PersistentVolumeClaimControllerResizeInProgress, want: "2Gi"},
		{name: "after a final error the request wins", request: "3Gi", capacity: "1Gi", pv: "1Gi", alloc: "2Gi", st: corev1.PersistentVolumeClaimControllerResizeInProgress, finalErr: true, want: "3Gi"},
		{name: "infeasible: the new request", request: "3Gi", capacity: "1Gi", pv: "1Gi", alloc: "4Gi", st: corev1.PersistentVolumeClaimControllerResizeInfeasible, want: "3Gi"},
		{name: "node pending on the same size: the node's turn", request: "2Gi", capacity: "1Gi", pv: "2Gi", alloc: "2Gi", st: corev1.PersistentVolumeClaimNodeResizePending},
		{name: "node pending, larger request: wait for the node", request: "3Gi", capacity: "1Gi", pv: "2Gi", alloc: "2Gi", st: corev1.PersistentVolumeClaimNodeResizeInProgress},
		{name: "expanded but not recorded", request: "2Gi", capacity: "1Gi", pv: "2Gi", alloc: "2Gi", st: corev1.PersistentVolumeClaimControllerResizeInProgress, want: "2Gi"},
		{name: "node infeasible, controller expands", request: "2Gi", capacity: "1Gi", pv: "2Gi", alloc: "2Gi", st: corev1.PersistentVolumeClaimNodeResizeInfeasible, controllerExpand: true, want: "2Gi"},
		{name: "legacy pending on the node", request: "2Gi", capacity: "1Gi", pv: "2Gi", conds: []corev1.PersistentVolumeClaimConditionType{corev1.PersistentVolumeClaimFileSystemResizePending}},
		{name: "PV edited to the request", request: "2Gi", capacity: "1Gi", pv: "2Gi", want: "2Gi"},
	} {
		c, pv := mk(tc.request, tc.capacity, tc.pv, tc.alloc, tc.st, tc.conds...)
		size, ok := plan(c, pv, tc.finalErr, tc.controllerExpand)
		got := ""
		if ok {
			got = size.String()
		}
		if got != tc.want {
			t.Errorf("%s: plan = %q, want %q", tc.name, got, tc.want)
		}
	}
}
