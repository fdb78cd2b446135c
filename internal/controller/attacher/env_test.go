package attacher

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"github.com/kubernetes-csi/csi-test/v5/driver"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/testserver"
)

const testDriver = "fake.csi.moorage.io"

// env is a real moorage server and helpers to drive attachers against it.
// Its nodes are not managed by the attach/detach controller (no
// controller-managed-attach-detach annotation), so the tests alone create
// and delete VolumeAttachments.
type env struct {
	t    *testing.T
	cfg  *rest.Config
	kube kubernetes.Interface
	ctx  context.Context
}

func newEnv(t *testing.T) *env {
	srv := testserver.Start(t)
	return &env{t: t, cfg: srv.Loopback, kube: testserver.Client(t, srv), ctx: context.Background()}
}

// run starts an attacher on client until the test ends.
func (e *env) run(client *csi.Client, opts Options) *Controller {
	e.t.Helper()
	if opts.RetryStart == 0 {
		opts.RetryStart = 50 * time.Millisecond
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 500 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("ATTACHER_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	c, err := New(e.cfg, client, log, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	return c
}

// eventually polls cond until it holds, for 10 s at most.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// node creates a node and its CSINode, listing the driver with nodeID
// unless it is "".
func (e *env) node(name, nodeID string) {
	e.t.Helper()
	if _, err := e.kube.CoreV1().Nodes().Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	cn := &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{}}}
	if nodeID != "" {
		cn.Spec.Drivers = append(cn.Spec.Drivers, storagev1.CSINodeDriver{Name: testDriver, NodeID: nodeID})
	}
	if _, err := e.kube.StorageV1().CSINodes().Create(e.ctx, cn, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// volume creates a CSI PersistentVolume of the test driver; edit may change
// it first.
func (e *env) volume(name, handle string, edit func(*corev1.PersistentVolume)) {
	e.t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: testDriver, VolumeHandle: handle,
			}},
		},
	}
	if edit != nil {
		edit(pv)
	}
	if _, err := e.kube.CoreV1().PersistentVolumes().Create(e.ctx, pv, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) attach(name, pv, node string) {
	e.t.Helper()
	if _, err := e.kube.StorageV1().VolumeAttachments().Create(e.ctx, &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: storagev1.VolumeAttachmentSpec{
			Attacher: testDriver, NodeName: node,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To(pv)},
		},
	}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) secret(name string, data map[string]string) {
	e.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	if _, err := e.kube.CoreV1().Secrets("default").Create(e.ctx, s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) va(name string) *storagev1.VolumeAttachment {
	e.t.Helper()
	va, err := e.kube.StorageV1().VolumeAttachments().Get(e.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	return va
}

func (e *env) pv(name string) *corev1.PersistentVolume {
	e.t.Helper()
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(e.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	return pv
}

func (e *env) deleteVA(name string) {
	e.t.Helper()
	if err := e.kube.StorageV1().VolumeAttachments().Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// waitAttached waits until the VolumeAttachment reports attached.
func (e *env) waitAttached(name string) *storagev1.VolumeAttachment {
	e.t.Helper()
	var va *storagev1.VolumeAttachment
	e.eventually(name+" attached", func() bool { va = e.va(name); return va != nil && va.Status.Attached })
	return va
}

// fakeDriver is csi-test's gomock CSI driver on a real unix socket, with a
// controller that records ControllerPublish/Unpublish requests and answers
// as the test says.
type fakeDriver struct {
	publish  bool // PUBLISH_UNPUBLISH_VOLUME
	readonly bool // PUBLISH_READONLY
	// publishErr and unpublishErr, when set, answer the n-th call (from 1)
	// before it does anything.
	publishErr, unpublishErr func(n int) error
	// context is the publish context of a successful ControllerPublish.
	context map[string]string

	mu          sync.Mutex
	publishes   []*csipb.ControllerPublishVolumeRequest
	unpublishes []*csipb.ControllerUnpublishVolumeRequest
}

func (d *fakeDriver) serve(t *testing.T) *csi.Client {
	t.Helper()
	ctrl := gomock.NewController(t)
	identity := driver.NewMockIdentityServer(ctrl)
	controller := driver.NewMockControllerServer(ctrl)
	identity.EXPECT().GetPluginInfo(gomock.Any(), gomock.Any()).
		Return(&csipb.GetPluginInfoResponse{Name: testDriver, VendorVersion: "test"}, nil).AnyTimes()
	identity.EXPECT().GetPluginCapabilities(gomock.Any(), gomock.Any()).
		Return(&csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{{
			Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}},
		}}}, nil).AnyTimes()
	rpc := func(t csipb.ControllerServiceCapability_RPC_Type) *csipb.ControllerServiceCapability {
		return &csipb.ControllerServiceCapability{Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}}}
	}
	caps := []*csipb.ControllerServiceCapability{rpc(csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME)}
	if d.publish {
		caps = append(caps, rpc(csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME))
	}
	if d.readonly {
		caps = append(caps, rpc(csipb.ControllerServiceCapability_RPC_PUBLISH_READONLY))
	}
	controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).
		Return(&csipb.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil).AnyTimes()
	controller.EXPECT().ControllerPublishVolume(gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, req *csipb.ControllerPublishVolumeRequest) (*csipb.ControllerPublishVolumeResponse, error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.publishes = append(d.publishes, req)
			if d.publishErr != nil {
				if err := d.publishErr(len(d.publishes)); err != nil {
					return nil, err
				}
			}
			return &csipb.ControllerPublishVolumeResponse{PublishContext: d.context}, nil
		}).AnyTimes()
	controller.EXPECT().ControllerUnpublishVolume(gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, req *csipb.ControllerUnpublishVolumeRequest) (*csipb.ControllerUnpublishVolumeResponse, error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.unpublishes = append(d.unpublishes, req)
			if d.unpublishErr != nil {
				if err := d.unpublishErr(len(d.unpublishes)); err != nil {
					return nil, err
				}
			}
			return &csipb.ControllerUnpublishVolumeResponse{}, nil
		}).AnyTimes()
	drv := driver.NewMockCSIDriver(&driver.MockCSIDriverServers{Identity: identity, Controller: controller, Node: driver.NewMockNodeServer(ctrl)})
	sock := filepath.Join(t.TempDir(), "csi.sock")
	if err := drv.StartOnAddress("unix", sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := csi.Dial(ctx, "unix://"+sock, csi.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (d *fakeDriver) published() []*csipb.ControllerPublishVolumeRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*csipb.ControllerPublishVolumeRequest(nil), d.publishes...)
}

func (d *fakeDriver) unpublished() []*csipb.ControllerUnpublishVolumeRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*csipb.ControllerUnpublishVolumeRequest(nil), d.unpublishes...)
}
