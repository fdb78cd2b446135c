package binder

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/pvmatch"
)

// bind is upstream's bind, in upstream's order: the volume's claimRef, the
// volume's phase, the claim's volumeName and annotations, the claim's phase
// and capacity. Each step is skipped when already done, so a bind cut short
// by a crash or a conflict is finished by the next sync.
func (c *Controller) bind(ctx context.Context, pv *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) error {
	pv, err := c.bindVolumeToClaim(ctx, pv, claim)
	if err != nil {
		return fmt.Errorf("binding volume %s to claim %s: %w", pv.Name, claimKey(claim), err)
	}
	if pv, err = c.setVolumePhase(ctx, pv, corev1.VolumeBound, ""); err != nil {
		return err
	}
	if claim, err = c.bindClaimToVolume(ctx, claim, pv); err != nil {
		return fmt.Errorf("binding claim %s to volume %s: %w", claimKey(claim), pv.Name, err)
	}
	return c.setClaimPhase(ctx, claim, corev1.ClaimBound, pv)
}

func (c *Controller) bindVolumeToClaim(ctx context.Context, pv *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) (*corev1.PersistentVolume, error) {
	ref := pv.Spec.ClaimRef
	if ref != nil && ref.Name == claim.Name && ref.Namespace == claim.Namespace && ref.UID == claim.UID {
		return pv, nil
	}
	updated := pv.DeepCopy()
	preBound := ref != nil && ref.Name == claim.Name && ref.Namespace == claim.Namespace
	updated.Spec.ClaimRef = &corev1.ObjectReference{
		Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: claim.Namespace, Name: claim.Name,
		UID: claim.UID, ResourceVersion: claim.ResourceVersion,
	}
	if !preBound {
		if updated.Annotations == nil {
			updated.Annotations = map[string]string{}
		}
		updated.Annotations[annBoundByController] = "yes"
	}
	return c.updateVolume(ctx, updated)
}

func (c *Controller) bindClaimToVolume(ctx context.Context, claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) (*corev1.PersistentVolumeClaim, error) {
	updated := claim.DeepCopy()
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	if updated.Spec.VolumeName != pv.Name {
		updated.Spec.VolumeName = pv.Name
		updated.Annotations[annBoundByController] = "yes"
	}
	updated.Annotations[annBindCompleted] = "yes"
	if apiequality.Semantic.DeepEqual(updated, claim) {
		return claim, nil
	}
	return c.updateClaim(ctx, updated)
}

// setClaimPhase writes the claim's phase; when it becomes Bound, its status
// takes the volume's access modes and capacity, as upstream. Pending clears them.
func (c *Controller) setClaimPhase(ctx context.Context, claim *corev1.PersistentVolumeClaim, phase corev1.PersistentVolumeClaimPhase, pv *corev1.PersistentVolume) error {
	updated := claim.DeepCopy()
	updated.Status.Phase = phase
	switch {
	case pv == nil:
		updated.Status.AccessModes, updated.Status.Capacity = nil, nil
	case claim.Status.Phase != corev1.ClaimBound:
		updated.Status.AccessModes = pv.Spec.AccessModes
		updated.Status.Capacity = pv.Spec.Capacity
	}
	if apiequality.Semantic.DeepEqual(updated.Status, claim.Status) {
		return nil
	}
	got, err := c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	c.latest.put(got)
	return nil
}

// setClaimPhaseWithEvent changes the phase and, only on a change, says why.
func (c *Controller) setClaimPhaseWithEvent(ctx context.Context, claim *corev1.PersistentVolumeClaim, phase corev1.PersistentVolumeClaimPhase, eventType, reason, message string) error {
	if claim.Status.Phase == phase {
		return nil
	}
	if err := c.setClaimPhase(ctx, claim, phase, nil); err != nil {
		return err
	}
	c.recorder.Event(claim, eventType, reason, message)
	return nil
}

// setVolumePhase writes a volume's phase and message.
func (c *Controller) setVolumePhase(ctx context.Context, pv *corev1.PersistentVolume, phase corev1.PersistentVolumePhase, message string) (*corev1.PersistentVolume, error) {
	if pv.Status.Phase == phase && pv.Status.Message == message {
		return pv, nil
	}
	updated := pv.DeepCopy()
	updated.Status.Phase, updated.Status.Message = phase, message
	got, err := c.client.CoreV1().PersistentVolumes().UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		c.forgetIfGone(pv, err)
		return pv, err
	}
	c.remember(got)
	return got, nil
}

// setVolumePhaseWithEvent changes the phase and, only on a change, says why.
func (c *Controller) setVolumePhaseWithEvent(ctx context.Context, pv *corev1.PersistentVolume, phase corev1.PersistentVolumePhase, eventType, reason, message string) (*corev1.PersistentVolume, error) {
	if pv.Status.Phase == phase {
		return pv, nil
	}
	got, err := c.setVolumePhase(ctx, pv, phase, message)
	if err != nil {
		return pv, err
	}
	c.recorder.Event(got, eventType, reason, message)
	return got, nil
}

func (c *Controller) updateVolume(ctx context.Context, pv *corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
	got, err := c.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
	if err != nil {
		c.forgetIfGone(pv, err)
		return pv, err
	}
	c.remember(got)
	return got, nil
}

func (c *Controller) updateClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	got, err := c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).Update(ctx, claim, metav1.UpdateOptions{})
	if err != nil {
		return claim, err
	}
	c.latest.put(got)
	return got, nil
}

// forgetIfGone drops a volume the API says no longer exists (its delete
// event may have come before a write of ours that the cache then kept).
func (c *Controller) forgetIfGone(pv *corev1.PersistentVolume, err error) {
	if isNotFound(err) {
		c.latest.remove(pv)
	}
}

// remember caches (and so reindexes) a volume this controller wrote.
func (c *Controller) remember(pv *corev1.PersistentVolume) { c.latest.put(pv) }

// unbindVolume frees a volume: a binding the controller made is undone
// entirely; a user's pre-binding keeps its claimRef without the uid.
func (c *Controller) unbindVolume(ctx context.Context, pv *corev1.PersistentVolume) error {
	updated := pv.DeepCopy()
	if _, byController := pv.Annotations[annBoundByController]; byController {
		updated.Spec.ClaimRef = nil
		delete(updated.Annotations, annBoundByController)
	} else if updated.Spec.ClaimRef != nil {
		updated.Spec.ClaimRef.UID = ""
		updated.Spec.ClaimRef.ResourceVersion = ""
	}
	got, err := c.updateVolume(ctx, updated)
	if err != nil {
		return err
	}
	_, err = c.setVolumePhase(ctx, got, corev1.VolumeAvailable, "")
	return err
}

// whyNot explains, briefly, why no volume fits a pending claim, for its
// FailedBinding event; `moorage explain` gives the full list.
func (c *Controller) whyNot(claim *corev1.PersistentVolumeClaim) string {
	var volumes []*corev1.PersistentVolume
	if all, err := c.pvLister.List(everything); err == nil {
		volumes = all
	}
	if len(volumes) == 0 || len(volumes) > 1000 {
		return ""
	}
	verdicts := pvmatch.Explain(claim, volumes, pvmatch.Options{})
	var parts []string
	for i, v := range verdicts {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(verdicts)-3))
			break
		}
		parts = append(parts, v.Volume+": "+v.Reason)
	}
	return fmt.Sprintf(" (%d volumes considered: %s; run `moorage explain pvc/%s -n %s` for all)", len(verdicts), strings.Join(parts, "; "), claim.Name, claim.Namespace)
}
