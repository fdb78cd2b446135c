// Package resizer is external-resizer for one CSI driver: it grows the
// volume of every bound claim whose storage request exceeds its capacity
// (CSI ControllerExpandVolume), records the new size on the PV, and either
// finishes the resize or hands it to the node (the agent, as the kubelet)
// for NodeExpandVolume — with the claim status, conditions and events of
// kubernetes-csi/external-resizer v1.13 (the Kubernetes 1.33 sidecar, with
// RecoverVolumeExpansionFailure on, as it is by default there).
//
// # The claim's status, step by step
//
//	                         spec.resources.requests.storage > status.capacity
//	Resizing condition, allocatedResources = the size asked of the driver,
//	allocatedResourceStatuses[storage] = ControllerResizeInProgress,
//	event Resizing "External resizer is resizing volume <pv>"
//	        │ ControllerExpandVolume (or nothing: a driver with node
//	        │ expansion only, upstream's trivial resizer)
//	        ├─ OK: PV spec.capacity = the new size
//	        │    ├─ node_expansion_required: FileSystemResizePending condition,
//	        │    │  status NodeResizePending (the PV gets the
//	        │    │  pre-resize-capacity annotation), event FileSystemResizeRequired;
//	        │    │  the agent of the node where a pod uses the volume calls
//	        │    │  NodeExpandVolume and sets status.capacity
//	        │    └─ otherwise: status.capacity = the new size, resize
//	        │       conditions and the status entry gone, event VolumeResizeSuccessful
//	        ├─ INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND (infeasible):
//	        │    status ControllerResizeInfeasible, ControllerResizeError
//	        │    condition; retried only slowly (Options.RetryMax) unless the
//	        │    user changes the request
//	        ├─ any other final error: ControllerResizeError condition, status
//	        │    stays ControllerResizeInProgress, retried with back-off
//	        └─ in progress (timeout, UNAVAILABLE, ABORTED...): nothing written,
//	             the same size is asked again with back-off
//	every failure: event VolumeResizeFailed
//
// While a resize is in progress, the size asked is allocatedResources, not
// the request: a user who lowers the request after a final error gets the
// lower size tried (recovery from expansion failure), but an expansion that
// may still be running is never replaced by another size.
//
// Errors are classified by csi.Classify: Final and Transient are upstream's
// final errors, InProgress its non-final ones.
//
// Not done (upstream has them): tracking of in-use volumes for drivers that
// only expand offline (--handle-volume-inuse-error), migrated in-tree
// volumes, leader election. The built-in driver is node-local: one resizer
// runs per node and handles only the volumes whose node affinity matches its
// node (Options.NodeLocal).
package resizer
