package provisioner

import (
	"context"
	"slices"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// seen collects the PVs the controller finished syncing without error, so
// that a test can wait for "the controller has looked at this state" instead
// of sleeping.
type seen struct {
	mu  sync.Mutex
	pvs []*corev1.PersistentVolume
}

func (s *seen) hook(c *Controller, _ context.CancelFunc) {
	c.volumeSynced = func(pv *corev1.PersistentVolume, err error) {
		if err == nil {
			s.mu.Lock()
			s.pvs = append(s.pvs, pv)
			s.mu.Unlock()
		}
	}
}

func (s *seen) any(match func(*corev1.PersistentVolume) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.pvs, match)
}

func TestDeleteReclaimDeletesTheVolumeOnce(t *testing.T) {
	e := newEnv(t)
	// The first DeleteVolume fails: an event, then a retry.
	drv := &fakeDriver{deleteErr: func(n int, _ *csipb.DeleteVolumeRequest) error {
		if n == 1 {
			return status.Error(codes.Internal, "volume is busy")
		}
		return nil
	}}
	e.run(drv.serve(t), Options{}, nil)
	e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil), claim("data", "fast", "1Gi"))
	_, pv := e.waitBound("data")

	e.deleteClaim("data")
	e.eventually("PV deleted", func() bool { return e.pv(pv.Name) == nil })
	e.waitEvent(pv.Name, "VolumeFailedDelete", "Warning rpc error: code = Internal desc = volume is busy")
	dels := drv.deleteRequests()
	if len(dels) != 2 || dels[0].VolumeId != "vol-1" || dels[1].VolumeId != "vol-1" {
		t.Errorf("DeleteVolume calls = %v, want a failed one and a successful one for vol-1", dels)
	}
	if drv.volumes() != 0 {
		t.Errorf("driver still has %d volumes", drv.volumes())
	}
}

func TestRetainKeepsTheVolume(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{}
	var s seen
	e.run(drv.serve(t), Options{}, s.hook)
	e.create(class("keep", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimRetain, nil), claim("data", "keep", "1Gi"))
	_, pv := e.waitBound("data")
	if slices.Contains(pv.Finalizers, finalizerPV) || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("Retain PV: finalizers %v, policy %s", pv.Finalizers, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	e.deleteClaim("data")
	e.eventually("the provisioner saw the Released PV", func() bool {
		return s.any(func(p *corev1.PersistentVolume) bool {
			return p.Name == pv.Name && p.Status.Phase == corev1.VolumeReleased
		})
	})
	if n := len(drv.deleteRequests()); n != 0 || drv.volumes() != 1 {
		t.Errorf("DeleteVolume called %d times, driver has %d volumes; want 0 and 1", n, drv.volumes())
	}
	if got := e.pv(pv.Name); got == nil || got.Status.Phase != corev1.VolumeReleased {
		t.Errorf("PV = %v, want it kept, Released", got)
	}
}

// A PV deleted while Bound stays, with its volume, until its claim goes
// (HonorPVReclaimPolicy); then the volume is deleted.
func TestDeletingABoundPVWaitsForTheClaim(t *testing.T) {
	e := newEnv(t)
	drv := &fakeDriver{}
	var s seen
	e.run(drv.serve(t), Options{}, s.hook)
	e.create(class("fast", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil), claim("data", "fast", "1Gi"))
	_, pv := e.waitBound("data")

	if err := e.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the provisioner saw the PV being deleted", func() bool {
		return s.any(func(p *corev1.PersistentVolume) bool { return p.Name == pv.Name && p.DeletionTimestamp != nil })
	})
	if got := e.pv(pv.Name); got == nil || !slices.Contains(got.Finalizers, finalizerPV) || len(drv.deleteRequests()) != 0 {
		t.Fatalf("PV %v, %d DeleteVolume calls; want the PV kept by its finalizer and no call", got, len(drv.deleteRequests()))
	}

	e.deleteClaim("data")
	e.eventually("PV gone", func() bool { return e.pv(pv.Name) == nil })
	if dels := drv.deleteRequests(); len(dels) != 1 || dels[0].VolumeId != "vol-1" {
		t.Errorf("DeleteVolume calls = %v, want one for vol-1", dels)
	}
}
