package provisioner

// The provisioner against csi-test's driver harness
// (github.com/kubernetes-csi/csi-test/v5/driver): gomock identity and
// controller servers on a real unix socket, with every request scripted
// field by field and in order, and a real API server (newEnv). A call the
// script does not expect fails the test, so "exactly one CreateVolume" is
// what gomock's Times(1) says.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"github.com/kubernetes-csi/csi-test/v5/driver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/moorage/moorage/internal/csi"
)

// harness is csi-test's mock driver on a socket, and a client of it.
type harness struct {
	identity   *driver.MockIdentityServer
	controller *driver.MockControllerServer
	client     *csi.Client

	mu      sync.Mutex
	arrived map[string][]time.Time // CreateVolume arrivals, by volume name
}

// startHarness serves fresh mocks until the test ends. Call it before
// env.run, so that the provisioner stops before the mocks check that every
// expected call was made.
func startHarness(t *testing.T) *harness {
	t.Helper()
	ctrl := gomock.NewController(t)
	h := &harness{
		identity:   driver.NewMockIdentityServer(ctrl),
		controller: driver.NewMockControllerServer(ctrl),
		arrived:    map[string][]time.Time{},
	}
	drv := driver.NewMockCSIDriver(&driver.MockCSIDriverServers{
		Identity:   h.identity,
		Controller: h.controller,
		Node:       driver.NewMockNodeServer(ctrl),
	})
	sock := filepath.Join(t.TempDir(), "csi.sock")
	if err := drv.StartOnAddress("unix", sock); err != nil {
		t.Fatalf("start the harness: %v", err)
	}
	t.Cleanup(drv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := csi.Dial(ctx, "unix://"+sock, csi.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h.client = c
	return h
}

// expectDescribe scripts what Run asks first, in external-provisioner's
// order: GetPluginInfo, GetPluginCapabilities, ControllerGetCapabilities,
// each once (the client caches the capabilities). It returns the last call,
// for the calls that must follow it.
func (h *harness) expectDescribe(topology bool) *gomock.Call {
	plugin := []*csipb.PluginCapability{{Type: &csipb.PluginCapability_Service_{
		Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}}}}
	if topology {
		plugin = append(plugin, &csipb.PluginCapability{Type: &csipb.PluginCapability_Service_{
			Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS}}})
	}
	last := h.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), protoIs(&csipb.ControllerGetCapabilitiesRequest{})).
		Return(&csipb.ControllerGetCapabilitiesResponse{Capabilities: []*csipb.ControllerServiceCapability{{
			Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{
				Type: csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}}}}}, nil)
	gomock.InOrder(
		h.identity.EXPECT().GetPluginInfo(gomock.Any(), protoIs(&csipb.GetPluginInfoRequest{})).
			Return(&csipb.GetPluginInfoResponse{Name: testDriver, VendorVersion: "harness"}, nil),
		h.identity.EXPECT().GetPluginCapabilities(gomock.Any(), protoIs(&csipb.GetPluginCapabilitiesRequest{})).
			Return(&csipb.GetPluginCapabilitiesResponse{Capabilities: plugin}, nil),
		last,
	)
	return last
}

// expectCreate scripts one CreateVolume with exactly want, answered with
// code (or, for OK, with vol), and records when it arrived.
func (h *harness) expectCreate(want *csipb.CreateVolumeRequest, code codes.Code, vol *csipb.Volume) *gomock.Call {
	return h.controller.EXPECT().CreateVolume(gomock.Any(), protoIs(want)).
		DoAndReturn(func(_ context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
			h.mu.Lock()
			h.arrived[req.Name] = append(h.arrived[req.Name], time.Now())
			h.mu.Unlock()
			if code != codes.OK {
				return nil, status.Error(code, "scripted "+code.String())
			}
			return &csipb.CreateVolumeResponse{Volume: vol}, nil
		})
}

func (h *harness) arrivals(name string) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.arrived[name])
}

// protoIs matches a request by proto.Equal (gomock's reflect.DeepEqual
// would compare protobuf internals).
type protoMatcher struct{ want proto.Message }

func protoIs(m proto.Message) gomock.Matcher { return protoMatcher{m} }

func (m protoMatcher) Matches(x any) bool {
	got, ok := x.(proto.Message)
	return ok && proto.Equal(got, m.want)
}

func (m protoMatcher) String() string {
	return fmt.Sprintf("is %T{%s}", m.want, prototext.Format(m.want))
}

func mountCapability(fsType string, flags ...string) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// A claim gets exactly one CreateVolume with upstream's request — name
// pvc-<uid>, the claim's size as required_bytes, one capability per access
// mode with the class's fstype and mount options, the class's parameters
// without the csi.storage.k8s.io/ keys, the provisioner secret's data —
// sent while the journal holds it; then the PV. The Released PV (policy
// Delete) gets exactly one DeleteVolume with the volume ID and the same
// secret, then goes.
func TestHarnessProvisionAndDelete(t *testing.T) {
	e := newEnv(t)
	sc := class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, map[string]string{
		"type":                      "ssd",
		"replicas":                  "3",
		"csi.storage.k8s.io/fstype": "xfs",
		"csi.storage.k8s.io/provisioner-secret-name":      "${pvc.name}-creds",
		"csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
		"csi.storage.k8s.io/node-stage-secret-name":       "stage",
		"csi.storage.k8s.io/node-stage-secret-namespace":  "kube-system",
	})
	sc.MountOptions = []string{"noatime"}
	pvc := claim("data", "fast", "1Gi")
	e.create(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "data-creds", Namespace: "default"}, Data: map[string][]byte{"password": []byte("s3cret")}},
		sc, pvc,
	)
	name := "pvc-" + string(pvc.UID)
	secrets := map[string]string{"password": "s3cret"}

	h := startHarness(t)
	dir := t.TempDir()
	var (
		mu        sync.Mutex
		journaled []string // journal files while CreateVolume ran
	)
	describe := h.expectDescribe(false)
	create := h.controller.EXPECT().CreateVolume(gomock.Any(), protoIs(&csipb.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csipb.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: []*csipb.VolumeCapability{mountCapability("xfs", "noatime")},
		Parameters:         map[string]string{"type": "ssd", "replicas": "3"},
		Secrets:            secrets,
	})).DoAndReturn(func(context.Context, *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
		entries, _ := os.ReadDir(dir)
		mu.Lock()
		for _, de := range entries {
			journaled = append(journaled, de.Name())
		}
		mu.Unlock()
		return &csipb.CreateVolumeResponse{Volume: &csipb.Volume{
			VolumeId: "vol-0001", CapacityBytes: 1 << 30, VolumeContext: map[string]string{"pool": "a"},
		}}, nil
	}).After(describe)
	e.run(h.client, Options{JournalDir: dir}, nil)

	_, pv := e.waitBound("data")
	mu.Lock()
	if !slices.Equal(journaled, []string{name + journalSuffix}) {
		t.Errorf("journal during CreateVolume = %v, want the record of %s", journaled, name)
	}
	mu.Unlock()
	journalEmpty(t, dir)
	src := pv.Spec.CSI
	if pv.Name != name || src == nil || src.Driver != testDriver || src.VolumeHandle != "vol-0001" || src.FSType != "xfs" ||
		src.VolumeAttributes["pool"] != "a" || src.VolumeAttributes[attrIdentity] == "" ||
		src.NodeStageSecretRef == nil || *src.NodeStageSecretRef != (corev1.SecretReference{Name: "stage", Namespace: "kube-system"}) {
		t.Errorf("PV %s csi = %+v", pv.Name, src)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("1Gi")) != 0 ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		!slices.Equal(pv.Spec.MountOptions, []string{"noatime"}) || !slices.Contains(pv.Finalizers, finalizerPV) ||
		pv.Annotations[annDeletionSecretName] != "data-creds" || pv.Annotations[annDeletionSecretNS] != "default" {
		t.Errorf("PV = %+v", pv)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.UID != pvc.UID || ref.Name != "data" || ref.Namespace != "default" {
		t.Errorf("PV claimRef = %+v", ref)
	}

	h.controller.EXPECT().DeleteVolume(gomock.Any(), protoIs(&csipb.DeleteVolumeRequest{VolumeId: "vol-0001", Secrets: secrets})).
		Return(&csipb.DeleteVolumeResponse{}, nil).After(create)
	e.deleteClaim("data")
	e.eventually("PV deleted", func() bool { return e.pv(name) == nil })
}

// A CreateVolume that fails is sent again, the very same request (same
// name), after a ProvisioningFailed event and the back-off: whether the
// driver may still be at work (ABORTED, UNAVAILABLE, DEADLINE_EXCEEDED,
// CANCELLED), failed inside (INTERNAL), or refused (INVALID_ARGUMENT,
// ALREADY_EXISTS, FAILED_PRECONDITION, and RESOURCE_EXHAUSTED for a claim
// that has no selected node to give up). Upstream retries them all with
// back-off; what differs is only whether the request stays journaled.
func TestHarnessCreateVolumeErrorsAreRetried(t *testing.T) {
	const retryStart = 100 * time.Millisecond
	cases := []struct {
		code     codes.Code
		failures int // before the call that succeeds
	}{
		{codes.Aborted, 1},
		{codes.Unavailable, 1},
		{codes.DeadlineExceeded, 1},
		{codes.Canceled, 1},
		{codes.Internal, 1},
		{codes.InvalidArgument, 2},
		{codes.AlreadyExists, 1},
		{codes.FailedPrecondition, 1},
		{codes.ResourceExhausted, 1},
	}
	e := newEnv(t)
	e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, map[string]string{"type": "ssd"}))
	claims := make([]*corev1.PersistentVolumeClaim, len(cases))
	for i, tc := range cases {
		claims[i] = claim("c-"+strings.ToLower(tc.code.String()), "fast", "64Mi")
		e.create(claims[i])
	}

	h := startHarness(t)
	describe := h.expectDescribe(false)
	for i, tc := range cases {
		want := &csipb.CreateVolumeRequest{
			Name:               "pvc-" + string(claims[i].UID),
			CapacityRange:      &csipb.CapacityRange{RequiredBytes: 64 << 20},
			VolumeCapabilities: []*csipb.VolumeCapability{mountCapability("")},
			Parameters:         map[string]string{"type": "ssd"},
		}
		var script []*gomock.Call
		for range tc.failures {
			script = append(script, h.expectCreate(want, tc.code, nil))
		}
		script = append(script, h.expectCreate(want, codes.OK, &csipb.Volume{VolumeId: "vol-" + claims[i].Name, CapacityBytes: 64 << 20}))
		script[0].After(describe)
		gomock.InOrder(script...)
	}
	dir := t.TempDir()
	e.run(h.client, Options{JournalDir: dir, RetryStart: retryStart, RetryMax: time.Second}, nil)

	for i, tc := range cases {
		name := claims[i].Name
		e.waitEvent(name, "ProvisioningFailed", fmt.Sprintf(
			`Warning failed to provision volume with StorageClass "fast": rpc error: code = %s desc = scripted %s`, tc.code, tc.code))
		_, pv := e.waitBound(name)
		if pv.Spec.CSI.VolumeHandle != "vol-"+name {
			t.Errorf("%s: PV of volume %s", tc.code, pv.Spec.CSI.VolumeHandle)
		}
		times := h.arrivals(pv.Name)
		if len(times) != tc.failures+1 {
			t.Fatalf("%s: CreateVolume sent %d times, want %d", tc.code, len(times), tc.failures+1)
		}
		// The per-claim exponential back-off: RetryStart, then twice that
		// (a little slack for the workqueue's timer).
		for j := 1; j < len(times); j++ {
			if gap, least := times[j].Sub(times[j-1]), retryStart<<(j-1)*9/10; gap < least {
				t.Errorf("%s: retry %d came after %v, want at least %v", tc.code, j, gap, least)
			}
		}
	}
	journalEmpty(t, dir)
}

// RESOURCE_EXHAUSTED for a WaitForFirstConsumer claim on its selected node
// of a topology-aware driver: the provisioner gives the node up (the
// selected-node annotation goes, as external-provisioner's reschedule) and
// forgets the request; when the scheduler picks another node, the same
// volume name is asked for there.
func TestHarnessResourceExhaustedReschedules(t *testing.T) {
	const key = "topology.fake/node"
	e := newEnv(t)
	e.create(
		node("n1", map[string]string{key: "n1"}), node("n2", map[string]string{key: "n2"}),
		csiNode("n1", key), csiNode("n2", key),
		class("local", storagev1.VolumeBindingWaitForFirstConsumer, corev1.PersistentVolumeReclaimDelete, nil),
	)
	pvc := claim("data", "local", "1Gi")
	pvc.Annotations = map[string]string{annSelectedNode: "n1"}
	e.create(pvc)
	name := "pvc-" + string(pvc.UID)

	on := func(nodes ...string) []*csipb.Topology {
		var out []*csipb.Topology
		for _, n := range nodes {
			out = append(out, &csipb.Topology{Segments: map[string]string{key: n}})
		}
		return out
	}
	request := func(preferred ...string) *csipb.CreateVolumeRequest {
		return &csipb.CreateVolumeRequest{
			Name:               name,
			CapacityRange:      &csipb.CapacityRange{RequiredBytes: 1 << 30},
			VolumeCapabilities: []*csipb.VolumeCapability{mountCapability("")},
			// Upstream's non-strict topology: every node requisite, the
			// selected one first among the preferred.
			AccessibilityRequirements: &csipb.TopologyRequirement{Requisite: on("n1", "n2"), Preferred: on(preferred...)},
		}
	}
	h := startHarness(t)
	gomock.InOrder(
		h.expectDescribe(true),
		h.expectCreate(request("n1", "n2"), codes.ResourceExhausted, nil),
		h.expectCreate(request("n2", "n1"), codes.OK, &csipb.Volume{VolumeId: "vol-n2", CapacityBytes: 1 << 30, AccessibleTopology: on("n2")}),
	)
	dir := t.TempDir()
	e.run(h.client, Options{JournalDir: dir}, nil)

	e.eventually("selected-node removed", func() bool {
		_, ok := e.claim("data").Annotations[annSelectedNode]
		return !ok
	})
	e.waitEvent("data", "ProvisioningFailed",
		`Warning failed to provision volume with StorageClass "local": rpc error: code = ResourceExhausted desc = scripted ResourceExhausted`)
	journalEmpty(t, dir) // a refused request is not replayed

	// Play the scheduler: another node.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c := e.claim("data")
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[annSelectedNode] = "n2"
		_, err := e.kube.CoreV1().PersistentVolumeClaims("default").Update(context.Background(), c, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, pv := e.waitBound("data")
	var terms []corev1.NodeSelectorTerm
	if a := pv.Spec.NodeAffinity; a != nil && a.Required != nil {
		terms = a.Required.NodeSelectorTerms
	}
	if pv.Spec.CSI.VolumeHandle != "vol-n2" || len(terms) != 1 || len(terms[0].MatchExpressions) != 1 ||
		!slices.Equal(terms[0].MatchExpressions[0].Values, []string{"n2"}) {
		t.Errorf("PV %s of %s, node affinity %+v; want vol-n2 on n2", pv.Name, pv.Spec.CSI.VolumeHandle, pv.Spec.NodeAffinity)
	}
	if n := len(h.arrivals(name)); n != 2 {
		t.Errorf("CreateVolume sent %d times, want 2", n)
	}
	journalEmpty(t, dir)
}
