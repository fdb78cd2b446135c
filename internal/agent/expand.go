package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/volume"
)

// Node expansion: the kubelet's NodeExpander
// (kubernetes/kubernetes pkg/volume/util/operationexecutor/node_expander.go
// and operation_generator.go, with RecoverVolumeExpansionFailure on, as in
// 1.33). The volume manager hands over a claim's CSI volume whose
// resize the resizer left to the node (volume.NodeExpansion, after each
// SetUp that published it); nodeExpand then
//
//   - for a read-only use: Warning FileSystemResizeFailed on the pod and
//     the claim, once, and nothing else (the kubelet does not expand it);
//   - marks the claim NodeResizeInProgress, calls NodeExpandVolume through
//     the driver, and on success sends FileSystemResizeSuccessful to the
//     pod and the claim and finishes the resize in the claim's status
//     (status.capacity = the PV's, the resize conditions and the
//     allocatedResourceStatuses entry gone);
//   - on a final error writes the NodeResizeError condition (and, for
//     INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND, the NodeResizeInfeasible
//     status); FAILED_PRECONDITION (the driver cannot grow the volume while
//     it is in use, e.g. the built-in driver's ext4) is not tried again for
//     this pod, and does not keep the pod from starting;
//   - retries other failures with the kubelet's back-off (0.5 s doubling to
//     2 min 2 s); a volume that already runs in the pod keeps running
//     (Warning VolumeResizeFailed on the pod), a volume being set up for a
//     pod fails its SetUp (FailedMount), so the pod does not start on a
//     file system smaller than its claim says.
//
// Not done: the kubelet's "infeasible because the request changed since a
// final error" check (CheckVolumeInFailedExpansionWithFinalErrors).

// Back-off of failed node expansions: the kubelet's exponential back-off
// of volume operations (pkg/util/goroutinemap/exponentialbackoff).
const (
	expandBackoffStart = 500 * time.Millisecond
	expandBackoffMax   = 2*time.Minute + 2*time.Second
	// expandForget drops what is remembered of an expansion nobody asked
	// about for this long (its pod is gone).
	expandForget = time.Hour
)

// expansionKey is one pod's use of one claim's volume at one size.
type expansionKey struct {
	claim, pod types.UID
	size       string
}

type expansionState struct {
	// inUseErr: the driver answered FAILED_PRECONDITION; not tried again
	// while this pod uses the volume.
	inUseErr bool
	// readOnlyReported: the read-only event was sent.
	readOnlyReported bool
	err              error
	backoff          time.Duration
	retryAt          time.Time
	seen             time.Time
}

// expansions remembers, between syncs, the node expansions that failed.
type expansions struct {
	mu sync.Mutex
	m  map[expansionKey]*expansionState
}

func (x *expansions) get(k expansionKey, now time.Time) *expansionState {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = map[expansionKey]*expansionState{}
	}
	for key, st := range x.m {
		if now.Sub(st.seen) > expandForget {
			delete(x.m, key)
		}
	}
	st := x.m[k]
	if st == nil {
		st = &expansionState{}
		x.m[k] = st
	}
	st.seen = now
	return st
}

func (x *expansions) forget(k expansionKey) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.m, k)
}

// nodeExpand is volume.Options.NodeExpand (see above). It runs on the pod's
// worker, inside SetUp.
func (a *Agent) nodeExpand(ctx context.Context, e *volume.NodeExpansion) error {
	pod, claim, pv := e.Pod, e.Claim, e.PV
	newSize := pv.Spec.Capacity[corev1.ResourceStorage]
	key := expansionKey{claim: claim.UID, pod: pod.UID, size: newSize.String()}
	now := time.Now()
	// Only this pod's worker touches the state of key.
	st := a.expansions.get(key, now)
	inUse := a.volumesMounted(pod.UID)

	if e.ReadOnly {
		if !st.readOnlyReported {
			st.readOnlyReported = true
			msg := fmt.Sprintf("MountVolume.NodeExpandVolume failed for volume %q requested read-only file system", pv.Name)
			a.recorder.Event(pod, corev1.EventTypeWarning, "FileSystemResizeFailed", msg)
			a.recorder.Event(claim, corev1.EventTypeWarning, "FileSystemResizeFailed", msg)
		}
		return nil
	}
	if st.inUseErr {
		return nil
	}
	if now.Before(st.retryAt) {
		if inUse {
			return nil
		}
		return st.err
	}

	resizeStatus := claim.Status.AllocatedResourceStatuses[corev1.ResourceStorage]
	legacy := resizeStatus == "" // a resizer that records no status
	if !legacy && resizeStatus != corev1.PersistentVolumeClaimNodeResizeInProgress {
		updated := claim.DeepCopy()
		updated.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = corev1.PersistentVolumeClaimNodeResizeInProgress
		got, err := a.patchClaimStatus(ctx, claim, updated, true)
		if err != nil {
			return a.expandFailed(st, inUse, pod, pv, fmt.Errorf("MountVolume.NodeExpandVolume failed to mark node expansion in progress: %w", err))
		}
		claim = got
	}

	_, err := e.Expand(ctx)
	if err != nil {
		final := csi.Classify(err) != csi.InProgress
		if final && !legacy {
			cond := corev1.PersistentVolumeClaimCondition{
				Type: corev1.PersistentVolumeClaimNodeResizeError, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.Now(), Message: fmt.Sprintf("failed to expand pvc with %v", err),
			}
			updated := claim.DeepCopy()
			if infeasible(err) {
				updated.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = corev1.PersistentVolumeClaimNodeResizeInfeasible
			}
			updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions, []corev1.PersistentVolumeClaimCondition{cond}, true)
			if _, perr := a.patchClaimStatus(ctx, claim, updated, false); perr != nil {
				a.log.Warn("MountVolume.NodeExpandVolume failed to mark node expansion as failed", "claim", claim.Namespace+"/"+claim.Name, "err", perr)
			}
		}
		if status.Code(err) == codes.FailedPrecondition {
			// The driver cannot grow it while it is in use: the pod
			// goes on with it as it is.
			st.inUseErr = true
			a.log.Warn("MountVolume.NodeExpandVolume failed", "volume", pv.Name, "pod", pod.Namespace+"/"+pod.Name, "err", err)
			return nil
		}
		return a.expandFailed(st, inUse, pod, pv, err)
	}

	msg := fmt.Sprintf("MountVolume.NodeExpandVolume succeeded for volume %q %s", pv.Name, pod.Spec.NodeName)
	a.recorder.Event(pod, corev1.EventTypeNormal, "FileSystemResizeSuccessful", msg)
	a.recorder.Event(claim, corev1.EventTypeNormal, "FileSystemResizeSuccessful", msg)
	if err := a.finishFSResize(ctx, claim, newSize); err != nil {
		// NodeExpandVolume is idempotent: the next sync repeats it and
		// the write.
		return a.expandFailed(st, inUse, pod, pv, fmt.Errorf("mountVolume.NodeExpandVolume update pvc status failed: %w", err))
	}
	a.expansions.forget(key)
	return nil
}

// expandFailed records a failure for the back-off. A volume the pod
// already uses stays as it is (Warning VolumeResizeFailed on the pod); a
// volume being set up fails its SetUp with err.
func (a *Agent) expandFailed(st *expansionState, inUse bool, pod *corev1.Pod, pv *corev1.PersistentVolume, err error) error {
	st.backoff = min(max(2*st.backoff, expandBackoffStart), expandBackoffMax)
	st.retryAt, st.err = time.Now().Add(st.backoff), err
	if !inUse {
		return err
	}
	a.recorder.Event(pod, corev1.EventTypeWarning, "VolumeResizeFailed",
		fmt.Sprintf("NodeExpandVolume.NodeExpandVolume failed for volume %q : %v", pv.Name, err))
	return nil
}

// finishFSResize is the kubelet's MarkFSResizeFinished: the claim takes
// the PV's size, and nothing of the resize is left in its status.
func (a *Agent) finishFSResize(ctx context.Context, claim *corev1.PersistentVolumeClaim, size resource.Quantity) error {
	updated := claim.DeepCopy()
	if updated.Status.Capacity == nil {
		updated.Status.Capacity = corev1.ResourceList{}
	}
	updated.Status.Capacity[corev1.ResourceStorage] = size
	delete(updated.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
	if len(updated.Status.AllocatedResourceStatuses) == 0 {
		updated.Status.AllocatedResourceStatuses = nil
	}
	updated.Status.Conditions = mergeResizeConditions(updated.Status.Conditions, nil, false)
	_, err := a.patchClaimStatus(ctx, claim, updated, true)
	return err
}

// volumesMounted tells whether the pod's volumes were all set up before
// (its containers may be running on them).
func (a *Agent) volumesMounted(uid types.UID) bool {
	a.podsMu.Lock()
	w := a.workers[uid]
	a.podsMu.Unlock()
	// The worker's own goroutine is the caller (SetUp runs on it).
	return w != nil && w.mounted
}

// infeasible: the driver says the request itself cannot be met.
func infeasible(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange, codes.NotFound:
		return true
	}
	return false
}

// mergeResizeConditions replaces the claim's resize conditions by add (the
// others of them stay only with keepOld); other conditions stay.
func mergeResizeConditions(old, add []corev1.PersistentVolumeClaimCondition, keepOld bool) []corev1.PersistentVolumeClaimCondition {
	isResize := func(t corev1.PersistentVolumeClaimConditionType) bool {
		switch t {
		case corev1.PersistentVolumeClaimResizing, corev1.PersistentVolumeClaimFileSystemResizePending,
			corev1.PersistentVolumeClaimControllerResizeError, corev1.PersistentVolumeClaimNodeResizeError:
			return true
		}
		return false
	}
	var out []corev1.PersistentVolumeClaimCondition
	done := map[corev1.PersistentVolumeClaimConditionType]bool{}
	for _, c := range old {
		replaced := false
		for _, n := range add {
			if n.Type == c.Type {
				out, replaced, done[n.Type] = append(out, n), true, true
				break
			}
		}
		if !replaced && (!isResize(c.Type) || keepOld) {
			out = append(out, c)
		}
	}
	for _, n := range add {
		if !done[n.Type] {
			out = append(out, n)
		}
	}
	return out
}

// patchClaimStatus writes the difference between old and updated to the
// claim's status as a strategic merge patch, with old's resourceVersion as
// a precondition when checkRV (the kubelet's PatchPVCStatus).
func (a *Agent) patchClaimStatus(ctx context.Context, old, updated *corev1.PersistentVolumeClaim, checkRV bool) (*corev1.PersistentVolumeClaim, error) {
	oldJSON, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	newJSON, err := json.Marshal(updated)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.PersistentVolumeClaim{})
	if err != nil {
		return nil, err
	}
	if checkRV {
		var m map[string]any
		if err := json.Unmarshal(patch, &m); err != nil {
			return nil, err
		}
		meta, _ := m["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["resourceVersion"] = old.ResourceVersion
		m["metadata"] = meta
		if patch, err = json.Marshal(m); err != nil {
			return nil, err
		}
	}
	return a.client.CoreV1().PersistentVolumeClaims(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: a.manager}, "status")
}
