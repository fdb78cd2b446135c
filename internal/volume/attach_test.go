package volume

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"github.com/kubernetes-csi/csi-test/v5/driver"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/csi"
)

const attachDriver = "attach.csi.test"

// attachNode is csi-test's gomock CSI driver on a real unix socket, whose
// node service really mounts (a tmpfs staged, bound at each target) and
// records what NodeStage and NodePublish receive.
type attachNode struct {
	nv *csi.NodeVolumes

	mu       sync.Mutex
	stages   []*csipb.NodeStageVolumeRequest
	publishs []*csipb.NodePublishVolumeRequest
}

func newAttachNode(t *testing.T) *attachNode {
	t.Helper()
	requireRoot(t)
	n := &attachNode{}
	ctrl := gomock.NewController(t)
	node := driver.NewMockNodeServer(ctrl)
	node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(&csipb.NodeGetCapabilitiesResponse{Capabilities: []*csipb.NodeServiceCapability{{
		Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}},
	}}}, nil).AnyTimes()
	node.EXPECT().NodeStageVolume(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, req *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
		n.mu.Lock()
		n.stages = append(n.stages, req)
		n.mu.Unlock()
		return &csipb.NodeStageVolumeResponse{}, unix.Mount("tmpfs", req.StagingTargetPath, "tmpfs", 0, "size=1m")
	}).AnyTimes()
	node.EXPECT().NodePublishVolume(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
		n.mu.Lock()
		n.publishs = append(n.publishs, req)
		n.mu.Unlock()
		if err := os.MkdirAll(req.TargetPath, 0o750); err != nil {
			return nil, err
		}
		return &csipb.NodePublishVolumeResponse{}, unix.Mount(req.StagingTargetPath, req.TargetPath, "", unix.MS_BIND, "")
	}).AnyTimes()
	node.EXPECT().NodeUnpublishVolume(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
		if err := unix.Unmount(req.TargetPath, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return nil, err
		}
		return &csipb.NodeUnpublishVolumeResponse{}, os.Remove(req.TargetPath)
	}).AnyTimes()
	node.EXPECT().NodeUnstageVolume(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, req *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
		if err := unix.Unmount(req.StagingTargetPath, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return nil, err
		}
		return &csipb.NodeUnstageVolumeResponse{}, nil
	}).AnyTimes()
	drv := driver.NewMockCSIDriver(&driver.MockCSIDriverServers{
		Identity: driver.NewMockIdentityServer(ctrl), Controller: driver.NewMockControllerServer(ctrl), Node: node,
	})
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	if err := drv.StartOnAddress("unix", sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := csi.Dial(ctx, "unix://"+sock, csi.WithTimeout(5*time.Second), csi.WithNodeTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if n.nv, err = csi.OpenNodeVolumes(filepath.Join(dir, "state"), c); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *attachNode) drivers(name string) (*csi.NodeVolumes, bool) {
	return n.nv, name == attachDriver
}

func (n *attachNode) calls() (stages []*csipb.NodeStageVolumeRequest, publishes []*csipb.NodePublishVolumeRequest) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.stages), slices.Clone(n.publishs)
}

// apiState stands in for the API objects the attach path reads: the
// driver's CSIDriver and the VolumeAttachments; reads are counted.
type apiState struct {
	mu             sync.Mutex
	attachRequired *bool // nil: no CSIDriver object
	vas            map[string]*storagev1.VolumeAttachment
	vaReads        int
}

func (s *apiState) csiDriver(_ context.Context, name string) (*storagev1.CSIDriver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attachRequired == nil {
		return nil, apierrors.NewNotFound(storagev1.Resource("csidrivers"), name)
	}
	return &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: storagev1.CSIDriverSpec{
		AttachRequired: s.attachRequired,
		FSGroupPolicy:  ptr(storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy), // the API's default
	}}, nil
}

func (s *apiState) volumeAttachment(_ context.Context, name string) (*storagev1.VolumeAttachment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vaReads++
	if va, ok := s.vas[name]; ok {
		return va.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(storagev1.Resource("volumeattachments"), name)
}

func (s *apiState) setAttachment(name string, st storagev1.VolumeAttachmentStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vas[name] = &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: st}
}

func (s *apiState) reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vaReads
}

func secretOf(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// A volume whose driver requires attach is staged only once it is reported
// in use and its VolumeAttachment is attached, with the kubelet's errors
// until then; its publish context and node stage/publish secrets reach
// NodeStage and NodePublish; a missing secret fails the mount with the
// kubelet's message. Once set up, a SetUp reads nothing more.
func TestCSIAttachAndSecrets(t *testing.T) {
	n := newAttachNode(t)
	api := &apiState{vas: map[string]*storagev1.VolumeAttachment{}}
	var e *testEnv
	var reporting, asked sync.Mutex
	askedN := 0
	report := func() {
		asked.Lock()
		askedN++
		asked.Unlock()
		go func() { // the agent's heartbeat, writing the node status
			reporting.Lock()
			defer reporting.Unlock()
			e.m.MarkVolumesReportedInUse(e.m.VolumesInUse(context.Background()))
		}()
	}
	reporting.Lock() // the agent does not report yet
	e = newEnv(t, Options{
		NodeName: "node-1", CSIDrivers: n.drivers, CSIDriver: api.csiDriver,
		VolumeAttachment: api.volumeAttachment, ReportVolumesInUse: report, AttachWait: 200 * time.Millisecond,
	})
	ctx := context.Background()
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-a"}, Spec: corev1.PersistentVolumeSpec{
		Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
			Driver: attachDriver, VolumeHandle: "vol-1", VolumeAttributes: map[string]string{"pool": "fast"},
			NodeStageSecretRef:   &corev1.SecretReference{Namespace: "default", Name: "stage"},
			NodePublishSecretRef: &corev1.SecretReference{Namespace: "default", Name: "publish"},
		}},
	}}
	e.get.bind(claim("data"), pv)
	p := newPod("p", claimVolume("v", "data", false))
	va := attachmentName("vol-1", attachDriver, "node-1")
	unique := corev1.UniqueVolumeName("kubernetes.io/csi/attach.csi.test^vol-1")

	// Not reported in use yet: the agent is asked to, once per SetUp.
	if got, want := setUpErr(t, e.m, p), `volume "v": Volume has not been added to the list of VolumesInUse in the node's volume status`; got != want {
		t.Fatalf("before the report:\n got %s\nwant %s", got, want)
	}
	if askedN != 1 {
		t.Errorf("the agent was asked %d times to report, want 1", askedN)
	}
	if got := e.m.VolumesInUse(ctx); !slices.Equal(got, []corev1.UniqueVolumeName{unique}) {
		t.Fatalf("VolumesInUse = %v, want %s (recorded before staging)", got, unique)
	}
	reporting.Unlock()

	// Reported; the attachment does not exist, then fails, then waits.
	for _, tc := range []struct {
		status *storagev1.VolumeAttachmentStatus
		want   string
	}{
		{nil, `MountVolume.WaitForAttach failed for volume "pv-a" : volume vol-1 has GET error for volume attachment ` + va + `: volumeattachments.storage.k8s.io "` + va + `" not found`},
		{&storagev1.VolumeAttachmentStatus{AttachError: &storagev1.VolumeError{Message: "rpc error: code = Internal desc = the array is busy"}},
			`MountVolume.WaitForAttach failed for volume "pv-a" : rpc error: code = Internal desc = the array is busy`},
		{&storagev1.VolumeAttachmentStatus{}, `MountVolume.WaitForAttach failed for volume "pv-a" : volume vol-1 is not attached for volume attachment ` + va},
	} {
		if tc.status != nil {
			api.setAttachment(va, *tc.status)
		}
		if got := setUpErr(t, e.m, p); got != tc.want {
			t.Errorf("attachment %+v:\n got %s\nwant %s", tc.status, got, tc.want)
		}
	}
	if stages, _ := n.calls(); len(stages) != 0 {
		t.Fatalf("staged before the attachment: %v", stages)
	}

	// Attached: the secrets are read, the stage one first.
	api.setAttachment(va, storagev1.VolumeAttachmentStatus{Attached: true, AttachmentMetadata: map[string]string{"devicePath": "/dev/sdz"}})
	want := `MountVolume.MountDevice failed for volume "pv-a" : fetching NodeStageSecretRef default/stage failed: kubernetes.io/csi: failed to find the secret stage in the namespace default with error: secrets "stage" not found`
	if got := setUpErr(t, e.m, p); got != want {
		t.Errorf("no stage secret:\n got %s\nwant %s", got, want)
	}
	e.get.putSecret(secretOf("stage", map[string]string{"chap": "stage-secret"}))
	want = `MountVolume.SetUp failed for volume "pv-a" : fetching NodePublishSecretRef default/publish failed: kubernetes.io/csi: failed to find the secret publish in the namespace default with error: secrets "publish" not found`
	if got := setUpErr(t, e.m, p); got != want {
		t.Errorf("no publish secret:\n got %s\nwant %s", got, want)
	}
	e.get.putSecret(secretOf("publish", map[string]string{"token": "publish-secret"}))
	got := mustSetUp(t, e.m, p)["v"]
	if mountLine(t, got.HostPath) == "" {
		t.Fatalf("%s is not mounted", got.HostPath)
	}
	stages, publishes := n.calls()
	if len(stages) != 1 || len(publishes) != 1 {
		t.Fatalf("%d NodeStage and %d NodePublish calls, want 1 each", len(stages), len(publishes))
	}
	ctxWant := map[string]string{"devicePath": "/dev/sdz"}
	if s := stages[0]; !maps.Equal(s.PublishContext, ctxWant) || !maps.Equal(s.Secrets, map[string]string{"chap": "stage-secret"}) || s.VolumeContext["pool"] != "fast" {
		t.Errorf("NodeStageVolume request = %v", s)
	}
	if p := publishes[0]; !maps.Equal(p.PublishContext, ctxWant) || !maps.Equal(p.Secrets, map[string]string{"token": "publish-secret"}) || p.VolumeContext["pool"] != "fast" {
		t.Errorf("NodePublishVolume request = %v", p)
	}

	// Set up: the next SetUp reads no attachment and sends nothing.
	before := api.reads()
	mustSetUp(t, e.m, p)
	if api.reads() != before {
		t.Error("a SetUp of a volume already set up read its VolumeAttachment")
	}
	if s, p := n.calls(); len(s) != 1 || len(p) != 1 {
		t.Errorf("a second SetUp called the driver: %d stages, %d publishes", len(s), len(p))
	}
	mustTearDown(t, e.m, p)
	if got := e.m.VolumesInUse(ctx); len(got) != 0 {
		t.Errorf("VolumesInUse after TearDown = %v", got)
	}
}

// A driver whose CSIDriver says attachRequired: false is staged without an
// attachment, without publish context, and is never reported in use.
func TestCSINoAttachRequired(t *testing.T) {
	n := newAttachNode(t)
	api := &apiState{vas: map[string]*storagev1.VolumeAttachment{}, attachRequired: ptr(false)}
	asked := 0
	e := newEnv(t, Options{
		NodeName: "node-1", CSIDrivers: n.drivers, CSIDriver: api.csiDriver,
		VolumeAttachment: api.volumeAttachment, ReportVolumesInUse: func() { asked++ },
	})
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-b"}, Spec: corev1.PersistentVolumeSpec{
		Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
			Driver: attachDriver, VolumeHandle: "vol-2",
		}},
	}}
	e.get.bind(claim("data"), pv)
	p := newPod("p", claimVolume("v", "data", false))
	mustSetUp(t, e.m, p)
	stages, publishes := n.calls()
	if len(stages) != 1 || len(publishes) != 1 || stages[0].PublishContext != nil || publishes[0].PublishContext != nil {
		t.Errorf("stages %v, publishes %v: want one each, without publish context", stages, publishes)
	}
	if api.reads() != 0 || asked != 0 {
		t.Errorf("%d VolumeAttachment reads, %d reports asked; want none", api.reads(), asked)
	}
	if got := e.m.VolumesInUse(context.Background()); len(got) != 0 {
		t.Errorf("VolumesInUse = %v, want none", got)
	}
	mustTearDown(t, e.m, p)
}
