package binder

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// syncVolume is upstream's syncVolume: a volume's phase follows its claim.
func (c *Controller) syncVolume(ctx context.Context, name string) error {
	pv := c.latest.volume(name)
	if pv == nil {
		return nil // deleted
	}
	ref := pv.Spec.ClaimRef
	if ref == nil || ref.UID == "" {
		// OBSERVATION: free, or reserved by the user for a claim (uid not
		// yet known): Available.
		_, err := c.setVolumePhase(ctx, pv, corev1.VolumeAvailable, "")
		return err
	}
	claim, err := c.claimFor(ctx, ref, pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed)
	if err != nil {
		return err
	}
	switch {
	case claim == nil:
		// OBSERVATION: the claim is gone: the volume is Released, then
		// reclaimed by its policy.
		if pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed {
			if pv, err = c.setVolumePhase(ctx, pv, corev1.VolumeReleased, ""); err != nil {
				return err
			}
		}
		return c.reclaimVolume(ctx, pv)
	case claim.Spec.VolumeName == "":
		// OBSERVATION: mid-bind (the claim's side is not written yet), or a
		// claim whose volume mode does not fit.
		if volumeModeOf(pv.Spec.VolumeMode) != volumeModeOf(claim.Spec.VolumeMode) {
			c.recorder.Eventf(pv, corev1.EventTypeWarning, "VolumeMismatch", "Cannot bind PersistentVolume to requested PersistentVolumeClaim %q due to incompatible volumeMode.", claim.Name)
			c.recorder.Eventf(claim, corev1.EventTypeWarning, "VolumeMismatch", "Cannot bind PersistentVolume %q to requested PersistentVolumeClaim due to incompatible volumeMode.", pv.Name)
			return nil
		}
		c.claims.Add(claimKey(claim))
		return nil
	case claim.Spec.VolumeName == pv.Name:
		// OBSERVATION: bound both ways.
		_, err := c.setVolumePhase(ctx, pv, corev1.VolumeBound, "")
		return err
	default:
		// OBSERVATION: the claim is bound to another volume.
		if _, provisioned := pv.Annotations[annProvisionedBy]; provisioned && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
			if pv.Status.Phase != corev1.VolumeReleased && pv.Status.Phase != corev1.VolumeFailed {
				if pv, err = c.setVolumePhase(ctx, pv, corev1.VolumeReleased, ""); err != nil {
					return err
				}
			}
			return c.reclaimVolume(ctx, pv)
		}
		return c.unbindVolume(ctx, pv)
	}
}

// claimFor finds the claim a claimRef names, by uid: a claim of that name
// with another uid is a new claim, and the old one is gone. With askAPI, a
// claim missing from the cache is looked up in the API before it is called
// gone (upstream skips that for volumes already Released or Failed).
func (c *Controller) claimFor(ctx context.Context, ref *corev1.ObjectReference, askAPI bool) (*corev1.PersistentVolumeClaim, error) {
	claim := c.latest.claim(ref.Namespace + "/" + ref.Name)
	if claim != nil && claim.UID == ref.UID {
		return claim, nil
	}
	if !askAPI {
		return nil, nil
	}
	// The cache may lag: ask the API before calling the claim gone.
	live, err := c.client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case isNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case live.UID != ref.UID:
		return nil, nil
	}
	c.latest.put(live)
	return live, nil
}

// reclaimVolume applies a Released volume's reclaim policy, as upstream.
func (c *Controller) reclaimVolume(ctx context.Context, pv *corev1.PersistentVolume) error {
	switch pv.Spec.PersistentVolumeReclaimPolicy {
	case corev1.PersistentVolumeReclaimRetain:
		// OBSERVATION: kept, with its data and claimRef, for the admin.
		return nil
	case corev1.PersistentVolumeReclaimRecycle:
		return c.recycleVolume(ctx, pv)
	case corev1.PersistentVolumeReclaimDelete:
		return c.deleteVolume(ctx, pv)
	default:
		_, err := c.setVolumePhaseWithEvent(ctx, pv, corev1.VolumeFailed, corev1.EventTypeWarning, "VolumeUnknownReclaimPolicy", "Volume has unrecognized PersistentVolumeReclaimPolicy")
		return err
	}
}

// recycleVolume scrubs a Released volume's data and makes it Available again.
func (c *Controller) recycleVolume(ctx context.Context, pv *corev1.PersistentVolume) error {
	if users := c.podsUsing(pv.Spec.ClaimRef); len(users) > 0 {
		c.recorder.Eventf(pv, corev1.EventTypeNormal, "VolumeFailedRecycle", "Volume is used by pods: %v", users)
		return errors.New("volume is still used by pods")
	}
	err := c.reclaim.Recycle(ctx, pv)
	var noPlugin *NoPluginError
	switch {
	case errors.As(err, &noPlugin):
		_, err = c.setVolumePhaseWithEvent(ctx, pv, corev1.VolumeFailed, corev1.EventTypeWarning, "VolumeFailedRecycle", "No recycler plugin found for the volume!")
		return err
	case err != nil:
		msg := fmt.Sprintf("Recycle failed: %v", err)
		_, werr := c.setVolumePhaseWithEvent(ctx, pv, corev1.VolumeFailed, corev1.EventTypeWarning, "VolumeFailedRecycle", msg)
		return errors.Join(err, werr) // retried, as upstream, until it succeeds
	}
	c.recorder.Event(pv, corev1.EventTypeNormal, "VolumeRecycled", "Volume recycled")
	return c.unbindVolume(ctx, pv)
}

// deleteVolume deletes a Released volume's backend, then its object.
func (c *Controller) deleteVolume(ctx context.Context, pv *corev1.PersistentVolume) error {
	if prov, ok := pv.Annotations[annProvisionedBy]; ok && !isInTree(prov) {
		return nil // an external provisioner deletes what it provisioned
	}
	if err := c.reclaim.Delete(ctx, pv); err != nil {
		_, werr := c.setVolumePhaseWithEvent(ctx, pv, corev1.VolumeFailed, corev1.EventTypeWarning, "VolumeFailedDelete", err.Error())
		return errors.Join(err, werr)
	}
	uid := pv.UID
	err := c.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if isNotFound(err) {
		return nil
	}
	return err
}

// podsUsing lists the non-terminated pods that use a claim.
func (c *Controller) podsUsing(ref *corev1.ObjectReference) []string {
	if ref == nil {
		return nil
	}
	pods, err := c.podLister.Pods(ref.Namespace).List(everything)
	if err != nil {
		return nil
	}
	var out []string
	for _, pod := range pods {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == ref.Name {
				out = append(out, pod.Name)
			}
		}
	}
	return out
}

func isInTree(provisioner string) bool {
	return len(provisioner) > len("kubernetes.io/") && provisioner[:len("kubernetes.io/")] == "kubernetes.io/"
}
