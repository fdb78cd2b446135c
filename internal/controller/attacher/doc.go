// Package attacher is external-attacher for one CSI driver: it attaches
// (CSI ControllerPublishVolume) the volumes that the attach/detach
// controller (internal/controller/attachdetach) asks for with a
// VolumeAttachment whose spec.attacher names the driver, and detaches them
// (ControllerUnpublishVolume) once the VolumeAttachment is deleted — with
// the semantics, finalizers, annotation and status of
// kubernetes-csi/external-attacher (pkg/controller csi_handler.go,
// trivial_handler.go, util.go). It runs next to the driver, in the node
// agent (internal/cli.runDriverControllers).
//
// The handshake, as upstream:
//
//   - attach: the VolumeAttachment gets the finalizer
//     external-attacher/<driver, sanitized> and the annotation
//     csi.alpha.kubernetes.io/node-id (the driver's node ID, from the
//     node's CSINode entry), the PersistentVolume gets the same finalizer,
//     then ControllerPublishVolume runs with the PV's volume handle,
//     capability (access modes, fsType, mount options or block), readOnly
//     (only when the driver has PUBLISH_READONLY), volume attributes and
//     the spec.csi.controllerPublishSecretRef secret. Success sets
//     status.attached=true and status.attachmentMetadata to the publish
//     context, which the node passes to NodeStage/NodePublish; a failure
//     sets status.attachError {time, message} and is retried with
//     per-object exponential back-off (Options.RetryStart, RetryMax:
//     upstream's 1 s and 5 min);
//   - detach: a deleted VolumeAttachment (deletionTimestamp) that still has
//     the finalizer is ControllerUnpublished (node ID from CSINode, or the
//     annotation when the driver left the node), then loses the finalizer
//     and its attached status; a failure sets status.detachError;
//   - the PersistentVolume's finalizer goes once the PV is being deleted
//     and no VolumeAttachment names it.
//
// A driver without the controller service or without the
// PUBLISH_UNPUBLISH_VOLUME capability is attached trivially, as upstream's
// trivial handler does: status.attached=true at once, no call, no
// finalizer, so a deleted VolumeAttachment goes at once.
//
// Errors are what upstream records: the driver's gRPC status text
// ("rpc error: code = ... desc = ..."), or upstream's own messages for
// what fails before the call. Every error is retried alike, as upstream
// does; csi.Classify only says in the log whether the driver may still be
// working on the call.
//
// Not done (upstream has them): reconciling VolumeAttachments with the
// driver's ListVolumes (published nodes), CSI migration of in-tree
// volumes, leader election (one attacher per driver, or, for a node-local
// driver, one per node: Options.NodeName).
package attacher
