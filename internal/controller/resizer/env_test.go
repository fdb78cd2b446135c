package resizer

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/testserver"
)

const testDriver = "fake.csi.moorage.io"

// fakeDriver is a CSI identity, controller and node service on a real unix
// socket, with ControllerExpandVolume answering what the test says; every
// expand request is recorded.
type fakeDriver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedControllerServer
	csipb.UnimplementedNodeServer

	noControllerService bool // no CONTROLLER_SERVICE plugin capability
	noControllerExpand  bool // no controller EXPAND_VOLUME
	noNodeExpand        bool // no node EXPAND_VOLUME

	mu      sync.Mutex
	expands []*csipb.ControllerExpandVolumeRequest
	// expand answers the n-th ControllerExpandVolume (from 1); nil: the
	// volume grows to what was asked and the node must expand it.
	expand func(n int, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error)
}

func (d *fakeDriver) serve(t *testing.T) *csi.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "csi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csipb.RegisterIdentityServer(srv, d)
	csipb.RegisterControllerServer(srv, d)
	csipb.RegisterNodeServer(srv, d)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := csi.Dial(ctx, "unix://"+sock, csi.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (d *fakeDriver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: testDriver, VendorVersion: "test"}, nil
}

func (d *fakeDriver) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	resp := &csipb.GetPluginCapabilitiesResponse{}
	if !d.noControllerService {
		resp.Capabilities = append(resp.Capabilities, &csipb.PluginCapability{Type: &csipb.PluginCapability_Service_{
			Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}}})
	}
	return resp, nil
}

func (d *fakeDriver) ControllerGetCapabilities(context.Context, *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	rpc := func(t csipb.ControllerServiceCapability_RPC_Type) *csipb.ControllerServiceCapability {
		return &csipb.ControllerServiceCapability{Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}}}
	}
	resp := &csipb.ControllerGetCapabilitiesResponse{Capabilities: []*csipb.ControllerServiceCapability{rpc(csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME)}}
	if !d.noControllerExpand {
		resp.Capabilities = append(resp.Capabilities, rpc(csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME))
	}
	return resp, nil
}

func (d *fakeDriver) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	resp := &csipb.NodeGetCapabilitiesResponse{}
	if !d.noNodeExpand {
		resp.Capabilities = append(resp.Capabilities, &csipb.NodeServiceCapability{Type: &csipb.NodeServiceCapability_Rpc{
			Rpc: &csipb.NodeServiceCapability_RPC{Type: csipb.NodeServiceCapability_RPC_EXPAND_VOLUME}}})
	}
	return resp, nil
}

func (d *fakeDriver) ControllerExpandVolume(_ context.Context, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
	d.mu.Lock()
	d.expands = append(d.expands, req)
	n, answer := len(d.expands), d.expand
	d.mu.Unlock()
	if answer != nil {
		return answer(n, req)
	}
	return &csipb.ControllerExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes(), NodeExpansionRequired: true}, nil
}

func (d *fakeDriver) expandRequests() []*csipb.ControllerExpandVolumeRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*csipb.ControllerExpandVolumeRequest(nil), d.expands...)
}

// env is a real moorage server (with the binder) and a resizer of the
// fake driver against it.
type env struct {
	t    *testing.T
	cfg  *rest.Config
	kube kubernetes.Interface
}

func newEnv(t *testing.T) *env {
	srv := testserver.Start(t)
	return &env{t: t, cfg: srv.Loopback, kube: testserver.Client(t, srv)}
}

// run starts a resizer on the driver; it stops at the test's end.
func (e *env) run(d *fakeDriver, opts Options) *Controller {
	e.t.Helper()
	client := d.serve(e.t)
	if opts.RetryStart == 0 {
		opts.RetryStart = 50 * time.Millisecond
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 500 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("RESIZER_TEST_LOG") != "" {
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

// bound creates an expandable class, a 1Gi PV of the fake driver
// pre-bound to a 1Gi claim (mutate, if set, changes the PV before it is
// created), and waits until the binder has bound them.
func (e *env) bound(name string, mutate func(*corev1.PersistentVolume)) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	e.t.Helper()
	ctx := context.Background()
	allow := true
	if _, err := e.kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "expandable"}, Provisioner: testDriver, AllowVolumeExpansion: &allow,
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
	class := "expandable"
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-" + name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "default", Name: name},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: testDriver, VolumeHandle: "vol-" + name, FSType: "ext4",
			}},
		},
	}
	if mutate != nil {
		mutate(pv)
	}
	if _, err := e.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	_, err := e.kube.CoreV1().PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			VolumeName:       "pv-" + name,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var c *corev1.PersistentVolumeClaim
	e.eventually("claim "+name+" Bound", func() bool {
		c, pv = e.claim(name), e.pv("pv-"+name)
		return c.Status.Phase == corev1.ClaimBound && pv.Status.Phase == corev1.VolumeBound
	})
	return c, pv
}

// request raises the claim's storage request, as `kubectl patch` does.
func (e *env) request(name, size string) {
	e.t.Helper()
	patch := `{"spec":{"resources":{"requests":{"storage":"` + size + `"}}}}`
	if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) claim(name string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	c, err := e.kube.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) pv(name string) *corev1.PersistentVolume {
	e.t.Helper()
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return pv
}

// events are "<type> <message>" of the events about an object with a
// reason, with their source component.
func (e *env) events(object, reason string) []string {
	list, err := e.kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.InvolvedObject.Name == object && ev.Reason == reason {
			out = append(out, ev.Type+" "+ev.Message+" ["+ev.Source.Component+"]")
		}
	}
	return out
}

func (e *env) waitEvent(object, reason, want string) {
	e.t.Helper()
	e.eventually(reason+" event "+want, func() bool {
		for _, m := range e.events(object, reason) {
			if m == want {
				return true
			}
		}
		return false
	})
}
