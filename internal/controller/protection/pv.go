package protection

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// pvChanged queues a volume that needs the finalizer or may lose it.
func (c *Controller) pvChanged(obj any) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return
	}
	if needsFinalizer(pv, PVFinalizer) || isDeletionCandidate(pv, PVFinalizer) {
		c.pvQueue.Add(pv.Name)
	}
}

func (c *Controller) processNextPV(ctx context.Context) bool {
	name, quit := c.pvQueue.Get()
	if quit {
		return false
	}
	defer c.pvQueue.Done(name)
	if err := c.syncPV(ctx, name); err != nil {
		logFailure(ctx, c.pvLog, "protecting volume failed", "volume", name, err)
		c.pvQueue.AddRateLimited(name)
		return true
	}
	c.pvQueue.Forget(name)
	return true
}

// syncPV removes the finalizer of a volume being deleted unless it is
// Bound (the phase the binder sets: a volume bound to a claim is in use),
// and adds it to a volume that lacks it.
func (c *Controller) syncPV(ctx context.Context, name string) error {
	pv, err := c.pvs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case isDeletionCandidate(pv, PVFinalizer):
		if pv.Status.Phase == corev1.VolumeBound {
			c.pvLog.Debug("keeping volume: it is bound", "volume", name)
			return nil
		}
		pv = pv.DeepCopy()
		pv.Finalizers = without(pv.Finalizers, PVFinalizer)
	case needsFinalizer(pv, PVFinalizer):
		pv = pv.DeepCopy()
		pv.Finalizers = append(pv.Finalizers, PVFinalizer)
	default:
		return nil
	}
	_, err = c.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		c.pvLog.Debug("volume finalizers updated", "volume", name, "finalizers", pv.Finalizers)
	}
	return err
}
