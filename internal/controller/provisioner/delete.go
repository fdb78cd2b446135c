package provisioner

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	volumehelpers "k8s.io/component-helpers/storage/volume"
)

// syncVolume is sig-storage-lib-external-provisioner's syncVolume for the
// PVs this driver provisioned: keep the HonorPVReclaimPolicy finalizer in
// step with the reclaim policy, and delete a Released volume whose policy
// is Delete — the backend first, exactly once, then the PV.
func (c *Controller) syncVolume(ctx context.Context, name string) (err error) {
	pv, err := c.pvLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if c.volumeSynced != nil {
		defer func() { c.volumeSynced(pv, err) }()
	}
	if pv.Annotations[annProvisionedBy] != c.driver || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != c.driver {
		return nil
	}
	if c.opts.Mode == NodeLocal {
		// Only the node that holds the volume deletes it.
		self, err := c.nodes.Get(c.opts.NodeName)
		if err != nil {
			return err
		}
		if pv.Spec.NodeAffinity == nil || volumehelpers.CheckNodeAffinity(pv, self.Labels) != nil {
			return nil
		}
	}
	if pv, err = c.keepFinalizer(ctx, pv); err != nil {
		return err
	}
	if !shouldDelete(pv) {
		return nil
	}
	return c.deleteVolume(ctx, pv)
}

// keepFinalizer is the lib's handleProtectionFinalizer: a Bound PV with
// policy Delete gets the finalizer; one with Retain or Recycle loses it.
func (c *Controller) keepFinalizer(ctx context.Context, pv *corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
	policy := pv.Spec.PersistentVolumeReclaimPolicy
	has := slices.Contains(pv.Finalizers, finalizerPV)
	var want bool
	switch {
	case policy == corev1.PersistentVolumeReclaimDelete && pv.DeletionTimestamp == nil && pv.Status.Phase == corev1.VolumeBound:
		want = true
	case policy == corev1.PersistentVolumeReclaimRetain || policy == corev1.PersistentVolumeReclaimRecycle:
		want = false
	default:
		return pv, nil
	}
	if want == has {
		return pv, nil
	}
	updated := pv.DeepCopy()
	if want {
		updated.Finalizers = append(updated.Finalizers, finalizerPV)
	} else {
		updated.Finalizers = slices.DeleteFunc(updated.Finalizers, func(f string) bool { return f == finalizerPV })
	}
	return c.client.CoreV1().PersistentVolumes().Update(ctx, updated, metav1.UpdateOptions{})
}

// shouldDelete is the lib's shouldDelete with finalizers on: Released, policy
// Delete, and not already deleted (a PV being deleted without our
// finalizer has had its volume deleted).
func shouldDelete(pv *corev1.PersistentVolume) bool {
	if pv.DeletionTimestamp != nil && !slices.Contains(pv.Finalizers, finalizerPV) {
		return false
	}
	return pv.Status.Phase == corev1.VolumeReleased && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete
}

// deleteVolume is the lib's deleteVolumeOperation: DeleteVolume (skipped
// when it already succeeded for this PV), the PV's deletion, then its
// finalizer's removal.
func (c *Controller) deleteVolume(ctx context.Context, pv *corev1.PersistentVolume) error {
	c.mu.Lock()
	done := c.deleted[pv.UID]
	c.mu.Unlock()
	if !done {
		var secrets map[string]string
		if ref := deletionSecret(pv); ref != nil {
			var err error
			if secrets, err = readSecret(ctx, c.client, ref); err != nil {
				// As upstream: the secret may be gone already; try anyway.
				c.log.Info("deleting volume without its secret", "pv", pv.Name, "err", err)
			}
		}
		if err := c.csi.DeleteVolume(ctx, pv.Spec.CSI.VolumeHandle, secrets); err != nil {
			c.recorder.Event(pv, corev1.EventTypeWarning, "VolumeFailedDelete", rpcText(err))
			return err
		}
		c.mu.Lock()
		c.deleted[pv.UID] = true
		c.mu.Unlock()
		c.log.Info("volume deleted", "pv", pv.Name, "volumeID", pv.Spec.CSI.VolumeHandle)
	}
	uid := pv.UID
	err := c.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or another PV of that name now
	} else if err != nil {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live, err := c.client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && (live.UID != uid || !slices.Contains(live.Finalizers, finalizerPV))) {
			return nil
		} else if err != nil {
			return err
		}
		live.Finalizers = slices.DeleteFunc(live.Finalizers, func(f string) bool { return f == finalizerPV })
		_, err = c.client.CoreV1().PersistentVolumes().Update(ctx, live, metav1.UpdateOptions{})
		return ignoreNotFound(err)
	})
}

// deletionSecret is the provisioner secret recorded on the PV, if any.
func deletionSecret(pv *corev1.PersistentVolume) *secretRef {
	name, ns := pv.Annotations[annDeletionSecretName], pv.Annotations[annDeletionSecretNS]
	if name == "" || ns == "" {
		return nil
	}
	return &secretRef{Namespace: ns, Name: name}
}
