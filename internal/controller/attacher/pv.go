package attacher

import (
	"context"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// syncPV removes the finalizer from a PersistentVolume being deleted once
// no VolumeAttachment names it (upstream's
// SyncNewOrUpdatedPersistentVolume): until then the volume may be attached
// somewhere, and its spec is needed to detach it.
func (c *Controller) syncPV(ctx context.Context, name string) error {
	pv, err := c.pvLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	i := slices.Index(pv.Finalizers, c.finalizer)
	if pv.DeletionTimestamp == nil || i < 0 {
		return nil
	}
	vas, err := c.vaLister.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, va := range vas {
		if n := va.Spec.Source.PersistentVolumeName; n != nil && *n == pv.Name {
			return nil // its deletion queues the volume again
		}
	}
	body, err := removeAt(i, c.finalizer)
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.JSONPatchType, body, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		c.log.Info("removed the finalizer of a deleted PersistentVolume", "pv", pv.Name)
	}
	return err
}
