// Package attachdetach is upstream's attach/detach controller
// (kube-controller-manager's attachdetach-controller,
// pkg/controller/volume/attachdetach, with the CSI attacher of
// pkg/volume/csi/csi_attacher.go) for CSI volumes: it decides which
// volumes must be attached to which node, and asks for it with
// VolumeAttachment objects that the driver's external-attacher
// (internal/controller/attacher) acts on.
//
// Design: level-triggered, one sync per node. A node's desired attachments
// are computed from scratch on every sync: every pod bound to the node and
// not terminated (phase Succeeded or Failed, or deleted with no container
// running), every claim of it (persistentVolumeClaim, or the claim of a
// generic ephemeral volume) that is Bound to a CSI PersistentVolume
// pointing back at it, whose driver requires attach (its CSIDriver's
// spec.attachRequired; no CSIDriver object means it does, as upstream).
// Each is a VolumeAttachment named csi-<sha256(handle, driver, node)> (the
// kubelet computes the same name) with spec.attacher = the driver,
// spec.nodeName and spec.source.persistentVolumeName. Only nodes whose
// agent leaves attach and detach to the controller (annotation
// volumes.kubernetes.io/controller-managed-attach-detach: "true", which
// moorage's agent sets) are handled; VolumeAttachments of other nodes, and
// those with an inline volume spec, are left alone.
//
// The actual state is the VolumeAttachments themselves; the controller
// keeps only timers and what it already reported in memory. Per sync:
//
//  1. detach: a VolumeAttachment no pod of its node needs any more is
//     deleted (the external-attacher then detaches it and removes its
//     finalizer) once the node no longer lists the volume in
//     status.volumesInUse (the agent reports what it has staged, as the
//     kubelet does), or, when the node is not Ready or gone, once
//     MaxWaitForUnmount (6 min) has passed since the detach was wanted,
//     or at once when the node has the node.kubernetes.io/out-of-service
//     NoExecute taint. The volume leaves status.volumesAttached before
//     the VolumeAttachment is deleted;
//  2. node status: status.volumesAttached lists, as
//     kubernetes.io/csi/<driver>^<handle> with devicePath "", the
//     VolumeAttachments that report attached and are not being detached;
//  3. attach: a missing VolumeAttachment is created, unless its volume
//     cannot be attached to several nodes (no ReadWriteMany or
//     ReadOnlyMany access mode) and is attached elsewhere: the pods then
//     get upstream's Multi-Attach FailedAttachVolume event. Once attached,
//     the pods get SuccessfulAttachVolume; an attachError, and no
//     attachment within AttachTimeout (2 min), are FailedAttachVolume
//     events with upstream's messages.
//
// Not done (upstream has them): in-tree attachable volume plugins and CSI
// migration, inline CSI volumes, the kubelet-managed attach mode, attach
// and detach metrics, and the disableForceDetachOnTimeout option.
package attachdetach
