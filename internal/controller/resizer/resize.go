package resizer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/cache"
	volumehelpers "k8s.io/component-helpers/storage/volume"

	"github.com/moorage/moorage/internal/csi"
)

// Annotations, as upstream names them.
const (
	// annStorageResizer is set on claims by kube-controller-manager's
	// expand controller; a change of it makes upstream look again.
	annStorageResizer = "volume.kubernetes.io/storage-resizer"
	// annPreResizeCapacity records on the PV the claim's capacity before a
	// resize that the node must finish; the PV controller uses it as the
	// claim's capacity if it binds them again meanwhile.
	annPreResizeCapacity = "volume.alpha.kubernetes.io/pre-resize-capacity"
)

// Event reasons and messages of external-resizer (pkg/util/events.go,
// pkg/controller).
const (
	reasonResizing         = "Resizing"
	reasonResizeFailed     = "VolumeResizeFailed"
	reasonResizeSuccess    = "VolumeResizeSuccessful"
	reasonFSResizeRequired = "FileSystemResizeRequired"

	msgFSResizeRequired = "Require file system resize of volume on node"
	msgResizeSuccess    = "Resize volume succeeded"
	// msgFSResizePending is the FileSystemResizePending condition's
	// message (also kube-controller-manager's and the kubelet's).
	msgFSResizePending = "Waiting for user to (re-)start a pod to finish file system resize of volume on node."
)

// syncClaim is external-resizer's syncPVC: it resizes the claim's volume if
// the claim asks for more than it has.
func (c *Controller) syncClaim(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller made
	}
	claim, err := c.claims.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if claim.Spec.VolumeName == "" {
		return nil
	}
	pv, err := c.pvs.Get(claim.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		// The informer may not have it yet.
		return fmt.Errorf("PV %q bound to pvc %s not found", claim.Spec.VolumeName, key)
	} else if err != nil {
		return err
	}
	if ours, err := c.handles(pv); err != nil || !ours {
		return err
	}
	// The node finished: the capacity before the resize is history.
	if nodeExpandComplete(claim, pv) && pv.Annotations[annPreResizeCapacity] != "" {
		updated := pv.DeepCopy()
		delete(updated.Annotations, annPreResizeCapacity)
		if _, err := c.patchPV(ctx, pv, updated); err != nil {
			return fmt.Errorf("failed removing annotation %s from pv %q: %w", annPreResizeCapacity, pv.Name, err)
		}
	}
	if !needsResize(claim) {
		return nil
	}
	return c.expandAndRecover(ctx, key, claim, pv)
}

// handles tells whether pv is a volume of this driver that this resizer
// expands (in NodeLocal mode: on this node).
func (c *Controller) handles(pv *corev1.PersistentVolume) (bool, error) {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != c.driver {
		return false, nil
	}
	if !c.opts.NodeLocal {
		return true, nil
	}
	self, err := c.nodes.Get(c.opts.NodeName)
	if err != nil {
		return false, err
	}
	return pv.Spec.NodeAffinity != nil && volumehelpers.CheckNodeAffinity(pv, self.Labels) == nil, nil
}

// needsResize is upstream's pvcNeedResize: a Bound claim asking for more
// than its capacity.
func needsResize(claim *corev1.PersistentVolumeClaim) bool {
	if claim.Status.Phase != corev1.ClaimBound || claim.Spec.VolumeName == "" {
		return false
	}
	want := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	have := claim.Status.Capacity[corev1.ResourceStorage]
	return want.Cmp(have) > 0
}

// nodeExpandComplete: the claim's capacity has caught up with the PV's.
func nodeExpandComplete(claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) bool {
	have := claim.Status.Capacity[corev1.ResourceStorage]
	pvSize := pv.Spec.Capacity[corev1.ResourceStorage]
	return have.Cmp(pvSize) >= 0
}

// plan is the choice expandAndRecover makes: the size to ask the driver
// for, or ok=false when there is nothing to do now. While an operation may
// be under way (controller or node), the size recorded in
// allocatedResources is kept; the request is taken when nothing is under
// way, or when the last controller expansion failed for good (finalErr), so
// that a user may lower a request that cannot be met.
func plan(claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, finalErr, controllerExpand bool) (size resource.Quantity, ok bool) {
	request := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	pvSize := pv.Spec.Capacity[corev1.ResourceStorage]
	st := claim.Status.AllocatedResourceStatuses[corev1.ResourceStorage]
	allocated, hasAllocated := claim.Status.AllocatedResources[corev1.ResourceStorage]
	size = request
	if pvSize.Cmp(request) < 0 {
		// The volume is smaller than asked.
		switch st {
		case corev1.PersistentVolumeClaimNodeResizeInfeasible:
			if hasAllocated {
				size = allocated
			}
		case corev1.PersistentVolumeClaimNodeResizePending, corev1.PersistentVolumeClaimNodeResizeInProgress:
			// Let the node finish the size it was given first.
			if hasAllocated {
				size = allocated
			}
			if pvSize.Cmp(size) >= 0 {
				return size, false
			}
		case corev1.PersistentVolumeClaimControllerResizeInProgress:
			// The last call may still be running, unless it failed
			// for good.
			if !finalErr && hasAllocated {
				size = allocated
			}
		}
		return size, true
	}
	// The volume is as big as asked already.
	switch st {
	case corev1.PersistentVolumeClaimNodeResizeInProgress, corev1.PersistentVolumeClaimNodeResizePending:
		return size, false // the node's turn
	case corev1.PersistentVolumeClaimNodeResizeInfeasible:
		// Reset the status so that the node may try again.
		if controllerExpand && hasAllocated {
			size = allocated
		}
	case corev1.PersistentVolumeClaimControllerResizeInProgress, corev1.PersistentVolumeClaimControllerResizeInfeasible:
		// Expanded, but not recorded; or the user lowered the request.
		if hasAllocated {
			size = allocated
		}
	default:
		if st == "" && hasAllocated {
			size = allocated
		} else if hasCondition(claim, corev1.PersistentVolumeClaimFileSystemResizePending) {
			return size, false
		}
	}
	return size, true
}

// expandAndRecover is external-resizer's expandAndRecover: mark the claim,
// call the driver, record the outcome.
func (c *Controller) expandAndRecover(ctx context.Context, key string, claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) error {
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != claim.Namespace || ref.UID != claim.UID {
		return nil // not bound to this claim
	}
	st := claim.Status.AllocatedResourceStatuses[corev1.ResourceStorage]
	inSlow, remaining := c.slowRemaining(key)
	if st == corev1.PersistentVolumeClaimControllerResizeInfeasible {
		c.markSlow(key)
	}
	size, ok := plan(claim, pv, c.hasFinalErr(key), c.controllerExpand)
	if !ok {
		return nil
	}
	updateStatus := true
	if allocated, has := claim.Status.AllocatedResources[corev1.ResourceStorage]; has && allocated.Cmp(size) == 0 {
		if inSlow {
			return &delayError{
				msg:   fmt.Sprintf("skipping volume expansion for pvc %s, because expansion previously failed with infeasible error", key),
				after: remaining,
			}
		}
		// Asking for the same size again: the status stays as it is.
		updateStatus = false
	}
	claim, err := c.markInProgress(ctx, claim, size, updateStatus)
	if err != nil {
		return fmt.Errorf("marking pvc %q as resizing failed: %w", key, err)
	}
	c.recorder.Event(claim, corev1.EventTypeNormal, reasonResizing, "External resizer is resizing volume "+pv.Name)
	if err := c.callResize(ctx, key, claim, pv, size); err != nil {
		c.recorder.Event(claim, corev1.EventTypeWarning, reasonResizeFailed, err.Error())
		return err
	}
	return nil
}

// callResize is upstream's callResizeOnPlugin.
func (c *Controller) callResize(ctx context.Context, key string, claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, size resource.Quantity) error {
	oldSize := claim.Status.Capacity[corev1.ResourceStorage]
	newSize, nodeRequired, err := c.resize(ctx, pv, size)
	if err != nil {
		if isFinal(err) {
			c.setFinalErr(key, true)
			var markErr error
			if isInfeasible(err) {
				claim, markErr = c.markInfeasible(ctx, claim, err)
			} else {
				c.unmarkSlow(key)
				claim, markErr = c.markFailed(ctx, claim, err)
			}
			if markErr != nil {
				return fmt.Errorf("resizing failed in controller with %s but failed to update PVC %s with: %w", rpcText(err), key, markErr)
			}
		} else {
			c.unmarkSlow(key)
			c.setFinalErr(key, false)
		}
		return fmt.Errorf("resize volume %q by resizer %q failed: %s", pv.Name, c.driver, rpcText(err))
	}
	c.setFinalErr(key, false)
	c.unmarkSlow(key)
	if _, err := c.updatePVCapacity(ctx, pv, oldSize, newSize, nodeRequired); err != nil {
		return fmt.Errorf("error updating pv %q by resizer: %w", pv.Name, err)
	}
	if nodeRequired {
		_, err = c.markNodePending(ctx, claim)
		return err
	}
	_, err = c.markFinished(ctx, claim, newSize)
	return err
}

// resize is the Resize of upstream's csiResizer (ControllerExpandVolume
// with the PV's capability and controller-expand secret), or of its
// trivialResizer for a driver that expands on the node only.
func (c *Controller) resize(ctx context.Context, pv *corev1.PersistentVolume, size resource.Quantity) (resource.Quantity, bool, error) {
	oldSize := pv.Spec.Capacity[corev1.ResourceStorage]
	if !c.controllerExpand {
		return size, true, nil
	}
	src := pv.Spec.CSI
	if src.VolumeHandle == "" {
		return oldSize, false, errors.New("empty volume handle")
	}
	var secrets map[string]string
	if ref := src.ControllerExpandSecretRef; ref != nil {
		var err error
		if secrets, err = c.secret(ctx, ref); err != nil {
			return oldSize, false, err
		}
	}
	capability := capabilityOf(pv)
	res, err := c.csi.ControllerExpand(ctx, csi.ExpandRequest{
		VolumeID:      src.VolumeHandle,
		RequiredBytes: size.Value(),
		Capability:    &capability,
		Secrets:       secrets,
	})
	if err != nil {
		return oldSize, false, err
	}
	bytes := res.CapacityBytes
	if bytes == 0 { // the spec requires it; a driver that leaves it out grew what was asked
		bytes = size.Value()
	}
	return *resource.NewQuantity(bytes, resource.BinarySI), res.NodeExpansionRequired, nil
}

// capabilityOf is the capability external-resizer sends: the PV's access
// modes, volume mode, fsType and mount options.
func capabilityOf(pv *corev1.PersistentVolume) csi.VolumeCapability {
	capability := csi.VolumeCapability{AccessModes: pv.Spec.AccessModes}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		capability.Block = true
		return capability
	}
	capability.FSType = pv.Spec.CSI.FSType
	capability.MountFlags = pv.Spec.MountOptions
	return capability
}

func (c *Controller) secret(ctx context.Context, ref *corev1.SecretReference) (map[string]string, error) {
	s, err := c.client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, getOptions)
	if err != nil {
		return nil, fmt.Errorf("error getting secret %s in namespace %s: %w", ref.Name, ref.Namespace, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// isFinal is upstream's IsFinalError: the operation is not running any
// more (Classify's Final and Transient; a Reschedule cannot come from
// ControllerExpandVolume).
func isFinal(err error) bool {
	switch csi.Classify(err) {
	case csi.Final, csi.Transient, csi.Reschedule:
		return true
	}
	return false
}

// isInfeasible is upstream's IsInfeasibleError: final errors that say the
// request itself cannot be met.
func isInfeasible(err error) bool {
	if _, ok := status.FromError(err); !ok {
		return false
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange, codes.NotFound:
		return true
	}
	return false
}

// rpcText is an error as upstream words it: a driver's error is its gRPC
// status ("rpc error: code = ... desc = ..."), without our operation
// prefix.
func rpcText(err error) string {
	var e *csi.Error
	if errors.As(err, &e) {
		return e.Err.Error()
	}
	return err.Error()
}

func (c *Controller) hasFinalErr(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finalErr[key]
}

func (c *Controller) setFinalErr(key string, v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v {
		c.finalErr[key] = true
	} else {
		delete(c.finalErr, key)
	}
}

// markSlow adds the claim to the slow set unless it is there.
func (c *Controller) markSlow(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.slow[key]; !ok {
		c.slow[key] = c.now()
	}
}

func (c *Controller) unmarkSlow(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.slow, key)
}

// slowRemaining says whether the claim is in the slow set and for how
// much longer; an expired entry is dropped.
func (c *Controller) slowRemaining(key string) (bool, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	since, ok := c.slow[key]
	if !ok {
		return false, 0
	}
	left := c.opts.RetryMax - c.now().Sub(since)
	if left <= 0 {
		delete(c.slow, key)
		return false, 0
	}
	return true, left
}
