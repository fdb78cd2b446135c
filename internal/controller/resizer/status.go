package resizer

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

var getOptions = metav1.GetOptions{}

// resizeConditions are the claim conditions that belong to resizing; the
// rest (ModifyingVolume, ...) are never touched here.
var resizeConditions = map[corev1.PersistentVolumeClaimConditionType]bool{
	corev1.PersistentVolumeClaimResizing:                true,
	corev1.PersistentVolumeClaimFileSystemResizePending: true,
	corev1.PersistentVolumeClaimControllerResizeError:   true,
	corev1.PersistentVolumeClaimNodeResizeError:         true,
}

// mergeResizeConditions replaces the resize conditions of old with those of
// add (same type: replaced in place; new types appended). The other resize
// conditions stay only with keepOld; other conditions always stay.
func mergeResizeConditions(old, add []corev1.PersistentVolumeClaimCondition, keepOld bool) []corev1.PersistentVolumeClaimCondition {
	byType := map[corev1.PersistentVolumeClaimConditionType]int{}
	for i, c := range add {
		byType[c.Type] = i
	}
	used := make([]bool, len(add))
	var out []corev1.PersistentVolumeClaimCondition
	for _, c := range old {
		if !resizeConditions[c.Type] {
			out = append(out, c)
			continue
		}
		if i, ok := byType[c.Type]; ok {
			out = append(out, add[i])
			used[i] = true
		} else if keepOld {
			out = append(out, c)
		}
	}
	for i, c := range add {
		if !used[i] {
			out = append(out, c)
		}
	}
	return out
}

func condition(t corev1.PersistentVolumeClaimConditionType, message string) corev1.PersistentVolumeClaimCondition {
	return corev1.PersistentVolumeClaimCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(), Message: message}
}

func hasCondition(claim *corev1.PersistentVolumeClaim, t corev1.PersistentVolumeClaimConditionType) bool {
	for _, c := range claim.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func setStorageStatus(claim *corev1.PersistentVolumeClaim, st corev1.ClaimResourceStatus) {
	if claim.Status.AllocatedResourceStatuses == nil {
		claim.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{}
	}
	claim.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = st
}

// markInProgress is upstream's markControllerResizeInProgress: the
// Resizing condition, allocatedResources = size and, with updateStatus,
// the ControllerResizeInProgress status (dropping the other resize
// conditions; without it, they stay).
func (c *Controller) markInProgress(ctx context.Context, claim *corev1.PersistentVolumeClaim, size resource.Quantity, updateStatus bool) (*corev1.PersistentVolumeClaim, error) {
	updated := claim.DeepCopy()
	updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions,
		[]corev1.PersistentVolumeClaimCondition{condition(corev1.PersistentVolumeClaimResizing, "")}, !updateStatus)
	if updateStatus {
		setStorageStatus(updated, corev1.PersistentVolumeClaimControllerResizeInProgress)
	}
	if updated.Status.AllocatedResources == nil {
		updated.Status.AllocatedResources = corev1.ResourceList{}
	}
	updated.Status.AllocatedResources[corev1.ResourceStorage] = size
	return c.patchClaimStatus(ctx, claim, updated, true)
}

// markNodePending is upstream's markForPendingNodeExpansion.
func (c *Controller) markNodePending(ctx context.Context, claim *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	updated := claim.DeepCopy()
	updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions,
		[]corev1.PersistentVolumeClaimCondition{condition(corev1.PersistentVolumeClaimFileSystemResizePending, msgFSResizePending)}, true)
	setStorageStatus(updated, corev1.PersistentVolumeClaimNodeResizePending)
	got, err := c.patchClaimStatus(ctx, claim, updated, true)
	if err != nil {
		return claim, fmt.Errorf("mark PVC %q as node expansion required failed: %w", claim.Namespace+"/"+claim.Name, err)
	}
	c.recorder.Event(claim, corev1.EventTypeNormal, reasonFSResizeRequired, msgFSResizeRequired)
	return got, nil
}

// markInfeasible is upstream's markControllerExpansionInfeasible: written
// without a resourceVersion check, so that it lands even on a claim that
// changed meanwhile.
func (c *Controller) markInfeasible(ctx context.Context, claim *corev1.PersistentVolumeClaim, cause error) (*corev1.PersistentVolumeClaim, error) {
	updated := claim.DeepCopy()
	setStorageStatus(updated, corev1.PersistentVolumeClaimControllerResizeInfeasible)
	updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions,
		[]corev1.PersistentVolumeClaimCondition{condition(corev1.PersistentVolumeClaimControllerResizeError, "failed to expand pvc with "+rpcText(cause))}, true)
	return c.patchClaimStatus(ctx, claim, updated, false)
}

// markFailed is upstream's markControllerExpansionFailedCondition: the
// ControllerResizeError condition only; the status stays in progress.
func (c *Controller) markFailed(ctx context.Context, claim *corev1.PersistentVolumeClaim, cause error) (*corev1.PersistentVolumeClaim, error) {
	updated := claim.DeepCopy()
	updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions,
		[]corev1.PersistentVolumeClaimCondition{condition(corev1.PersistentVolumeClaimControllerResizeError, "failed to expand pvc with "+rpcText(cause))}, true)
	return c.patchClaimStatus(ctx, claim, updated, false)
}

// markFinished is upstream's markOverallExpansionAsFinished: the claim has
// its new capacity, and nothing of the resize is left in its status.
func (c *Controller) markFinished(ctx context.Context, claim *corev1.PersistentVolumeClaim, size resource.Quantity) (*corev1.PersistentVolumeClaim, error) {
	updated := claim.DeepCopy()
	if updated.Status.Capacity == nil {
		updated.Status.Capacity = corev1.ResourceList{}
	}
	updated.Status.Capacity[corev1.ResourceStorage] = size
	updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions, nil, false)
	delete(updated.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
	if len(updated.Status.AllocatedResourceStatuses) == 0 {
		updated.Status.AllocatedResourceStatuses = nil
	}
	got, err := c.patchClaimStatus(ctx, claim, updated, true)
	if err != nil {
		return claim, fmt.Errorf("mark PVC %q as resize finished failed: %w", claim.Namespace+"/"+claim.Name, err)
	}
	c.recorder.Event(claim, corev1.EventTypeNormal, reasonResizeSuccess, msgResizeSuccess)
	return got, nil
}

// updatePVCapacity writes the new size on the PV and, when the node must
// finish, the claim's capacity before the resize (unless recorded).
func (c *Controller) updatePVCapacity(ctx context.Context, pv *corev1.PersistentVolume, oldSize, newSize resource.Quantity, nodeRequired bool) (*corev1.PersistentVolume, error) {
	updated := pv.DeepCopy()
	if updated.Spec.Capacity == nil {
		updated.Spec.Capacity = corev1.ResourceList{}
	}
	updated.Spec.Capacity[corev1.ResourceStorage] = newSize
	if nodeRequired && updated.Annotations[annPreResizeCapacity] == "" {
		if updated.Annotations == nil {
			updated.Annotations = map[string]string{}
		}
		updated.Annotations[annPreResizeCapacity] = oldSize.String()
	}
	got, err := c.patchPV(ctx, pv, updated)
	if err != nil {
		return pv, fmt.Errorf("updating capacity of PV %q to %s failed: %w", pv.Name, newSize.String(), err)
	}
	return got, nil
}

// patchClaimStatus writes the difference between old and updated to the
// claim's status subresource as a strategic merge patch, with old's
// resourceVersion as a precondition when checkRV, and keeps the informer's
// copy current so that the next sync does not act on a stale claim.
func (c *Controller) patchClaimStatus(ctx context.Context, old, updated *corev1.PersistentVolumeClaim, checkRV bool) (*corev1.PersistentVolumeClaim, error) {
	patch, err := twoWayPatch(old, updated, corev1.PersistentVolumeClaim{}, checkRV, old.ResourceVersion)
	if err != nil {
		return old, err
	}
	got, err := c.client.CoreV1().PersistentVolumeClaims(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return old, err
	}
	_ = c.claimStore.Update(got)
	return got, nil
}

func (c *Controller) patchPV(ctx context.Context, old, updated *corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
	patch, err := twoWayPatch(old, updated, corev1.PersistentVolume{}, false, "")
	if err != nil {
		return old, err
	}
	got, err := c.client.CoreV1().PersistentVolumes().Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return old, err
	}
	_ = c.pvStore.Update(got)
	return got, nil
}

// twoWayPatch is the strategic merge patch from old to updated (dataStruct
// gives the patch strategies), with metadata.resourceVersion = rv when
// checkRV.
func twoWayPatch(old, updated, dataStruct any, checkRV bool, rv string) ([]byte, error) {
	oldJSON, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(updated)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, dataStruct)
	if err != nil {
		return nil, err
	}
	if !checkRV {
		return patch, nil
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["resourceVersion"] = rv
	m["metadata"] = meta
	return json.Marshal(m)
}
