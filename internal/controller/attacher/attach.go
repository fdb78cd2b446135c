package attacher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/csi/migration"
)

// maxErrorMessage is the API's limit on a VolumeError message.
const maxErrorMessage = 1024

// syncVA brings one VolumeAttachment of the driver to its wanted state:
// attached while it lives, detached once it is deleted.
func (c *Controller) syncVA(ctx context.Context, name string) error {
	va, err := c.vaLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if va.Spec.Attacher != c.driver || (c.opts.NodeName != "" && va.Spec.NodeName != c.opts.NodeName) {
		return nil
	}
	if (va.DeletionTimestamp == nil && !va.Status.Attached) || (va.DeletionTimestamp != nil && slices.Contains(va.Finalizers, c.finalizer)) {
		// Work to do, says the cache; the cache may not have seen our
		// last write yet (the attach or detach is done): read the
		// object itself rather than call the driver twice.
		va, err = c.client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if va.DeletionTimestamp == nil {
		return c.syncAttach(ctx, va)
	}
	return c.syncDetach(ctx, va)
}

func (c *Controller) syncAttach(ctx context.Context, va *storagev1.VolumeAttachment) error {
	if va.Status.Attached {
		return nil
	}
	if c.trivial {
		_, err := c.markAttached(ctx, va, nil)
		return err
	}
	c.log.Info("attaching", "volumeattachment", va.Name, "node", va.Spec.NodeName)
	va, metadata, err := c.attach(ctx, va)
	if err != nil {
		if _, saveErr := c.saveError(ctx, va, err, true); saveErr != nil {
			c.log.Info("could not save the attach error", "volumeattachment", va.Name, "err", saveErr)
		}
		return fmt.Errorf("failed to attach: %w", err)
	}
	if _, err := c.markAttached(ctx, va, metadata); err != nil {
		return fmt.Errorf("failed to mark as attached: %w", err)
	}
	c.log.Info("attached", "volumeattachment", va.Name)
	return nil
}

// attach checks what it can before the finalizers go on (a finalizer
// blocks the VolumeAttachment's deletion until a detach succeeds), then
// adds them and calls ControllerPublishVolume. It returns the latest
// VolumeAttachment and the publish context.
func (c *Controller) attach(ctx context.Context, va *storagev1.VolumeAttachment) (*storagev1.VolumeAttachment, map[string]string, error) {
	pv, spec, err := c.volumeSpec(va)
	if err != nil {
		return va, nil, err
	}
	if pv != nil {
		if pv.DeletionTimestamp != nil {
			return va, nil, fmt.Errorf("PersistentVolume %q is marked for deletion", pv.Name)
		}
		if err := c.addPVFinalizer(ctx, pv); err != nil {
			return va, nil, fmt.Errorf("could not add PersistentVolume finalizer: %s", err)
		}
	}
	src, err := csiSource(spec)
	if err != nil {
		return va, nil, err
	}
	readOnly := src.ReadOnly
	if !c.publishReadonly {
		// CSI: "CO MUST set this field to false if SP does not have the
		// PUBLISH_READONLY controller capability".
		readOnly = false
	}
	capability := csi.VolumeCapability{AccessModes: spec.AccessModes}
	if spec.VolumeMode != nil && *spec.VolumeMode == corev1.PersistentVolumeBlock {
		capability.Block = true
	} else {
		capability.FSType, capability.MountFlags = src.FSType, spec.MountOptions
	}
	secrets, err := c.secrets(ctx, src.ControllerPublishSecretRef)
	if err != nil {
		return va, nil, err
	}
	nodeID, err := c.nodeID(va.Spec.NodeName, nil)
	if err != nil {
		return va, nil, err
	}
	if !slices.Contains(va.Finalizers, c.finalizer) || va.Annotations[annNodeID] != nodeID {
		finalizers := va.Finalizers
		if !slices.Contains(finalizers, c.finalizer) {
			finalizers = append(slices.Clone(finalizers), c.finalizer)
		}
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"finalizers": finalizers, "annotations": map[string]string{annNodeID: nodeID},
			"resourceVersion": va.ResourceVersion,
		}})
		if err != nil {
			return va, nil, err
		}
		saved, err := c.client.StorageV1().VolumeAttachments().Patch(ctx, va.Name, types.MergePatchType, body, metav1.PatchOptions{})
		if err != nil {
			return va, nil, fmt.Errorf("could not save VolumeAttachment: %s", err)
		}
		va = saved
	}
	callCtx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	metadata, err := c.csi.ControllerPublish(callCtx, csi.ControllerPublishRequest{
		VolumeID:      src.VolumeHandle,
		NodeID:        nodeID,
		Capability:    capability,
		ReadOnly:      readOnly,
		VolumeContext: src.VolumeAttributes,
		Secrets:       secrets,
	})
	if err != nil {
		return va, nil, err
	}
	return va, metadata, nil
}

func (c *Controller) syncDetach(ctx context.Context, va *storagev1.VolumeAttachment) error {
	if !slices.Contains(va.Finalizers, c.finalizer) {
		return nil // detached already, or attached trivially
	}
	c.log.Info("detaching", "volumeattachment", va.Name, "node", va.Spec.NodeName)
	if !c.trivial {
		if err := c.detach(ctx, va); err != nil {
			if _, saveErr := c.saveError(ctx, va, err, false); saveErr != nil {
				c.log.Info("could not save the detach error", "volumeattachment", va.Name, "err", saveErr)
			}
			return fmt.Errorf("failed to detach: %w", err)
		}
	}
	if err := c.markDetached(ctx, va); err != nil {
		return fmt.Errorf("could not mark as detached: %s", err)
	}
	c.log.Info("detached", "volumeattachment", va.Name)
	return nil
}

// detach calls ControllerUnpublishVolume.
func (c *Controller) detach(ctx context.Context, va *storagev1.VolumeAttachment) error {
	_, spec, err := c.volumeSpec(va)
	if err != nil {
		return err
	}
	src, err := csiSource(spec)
	if err != nil {
		return err
	}
	secrets, err := c.secrets(ctx, src.ControllerPublishSecretRef)
	if err != nil {
		return err
	}
	nodeID, err := c.nodeID(va.Spec.NodeName, va)
	if err != nil {
		return err
	}
	callCtx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	return c.csi.ControllerUnpublish(callCtx, src.VolumeHandle, nodeID, secrets)
}

// volumeSpec is what the VolumeAttachment attaches: its PersistentVolume
// (and its spec), or its inline spec (pv nil).
func (c *Controller) volumeSpec(va *storagev1.VolumeAttachment) (*corev1.PersistentVolume, *corev1.PersistentVolumeSpec, error) {
	src := va.Spec.Source
	switch {
	case src.PersistentVolumeName != nil && src.InlineVolumeSpec != nil:
		return nil, nil, errors.New("both InlineCSIVolumeSource and PersistentVolumeName specified in VA source")
	case src.PersistentVolumeName != nil:
		pv, err := c.pvLister.Get(*src.PersistentVolumeName)
		if err != nil {
			return nil, nil, err
		}
		// An in-tree type upstream migrated is attached as its CSI
		// translation (external-attacher's migration). The finalizer
		// still goes on the PV object itself.
		if csiPV, ok, err := migration.AsCSI(pv); err == nil && ok {
			return pv, &csiPV.Spec, nil
		}
		return pv, &pv.Spec, nil
	case src.InlineVolumeSpec != nil:
		if src.InlineVolumeSpec.CSI == nil {
			return nil, nil, errors.New("inline volume spec contains nil CSI source")
		}
		return nil, src.InlineVolumeSpec, nil
	default:
		return nil, nil, errors.New("neither InlineCSIVolumeSource nor PersistentVolumeName specified in VA source")
	}
}

func csiSource(spec *corev1.PersistentVolumeSpec) (*corev1.CSIPersistentVolumeSource, error) {
	if spec.CSI == nil {
		return nil, errors.New("pv spec contained non-csi source that was not migrated")
	}
	return spec.CSI, nil
}

// secrets reads the controller-publish secret, as upstream's
// getCredentialsFromPV.
func (c *Controller) secrets(ctx context.Context, ref *corev1.SecretReference) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	secret, err := c.client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("failed to load secret \"%s/%s\": %s", ref.Namespace, ref.Name, err)
	}
	out := make(map[string]string, len(secret.Data))
	for k, v := range secret.Data {
		out[k] = string(v)
	}
	return out, nil
}

// nodeID is the driver's ID of the node, from the node's CSINode entry;
// for a detach (va set), from the VolumeAttachment's annotation when the
// CSINode does not have it (the driver left the node).
func (c *Controller) nodeID(node string, va *storagev1.VolumeAttachment) (string, error) {
	cn, err := c.csiNodes.Get(node)
	if err == nil {
		for _, d := range cn.Spec.Drivers {
			if d.Name == c.driver {
				return d.NodeID, nil
			}
		}
		err = fmt.Errorf("CSINode %s does not contain driver %s", node, c.driver)
	}
	if va != nil {
		if id, ok := va.Annotations[annNodeID]; ok {
			return id, nil
		}
	}
	return "", err
}

func (c *Controller) addPVFinalizer(ctx context.Context, pv *corev1.PersistentVolume) error {
	if slices.Contains(pv.Finalizers, c.finalizer) {
		return nil
	}
	// A JSON patch that appends (or, to a list that is still absent,
	// creates it): other controllers' concurrent changes to the list are
	// kept, and the volume's other changes do not conflict.
	ops := []map[string]any{{"op": "add", "path": "/metadata/finalizers/-", "value": c.finalizer}}
	if len(pv.Finalizers) == 0 {
		ops = []map[string]any{
			{"op": "test", "path": "/metadata/finalizers", "value": nil},
			{"op": "add", "path": "/metadata/finalizers", "value": []string{c.finalizer}},
		}
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.JSONPatchType, body, metav1.PatchOptions{})
	return err
}

// markAttached records a successful attach: attached, the publish context,
// no attach error.
func (c *Controller) markAttached(ctx context.Context, va *storagev1.VolumeAttachment, metadata map[string]string) (*storagev1.VolumeAttachment, error) {
	status := map[string]any{"attached": true, "attachError": nil, "attachmentMetadata": nil}
	if len(metadata) > 0 {
		// A merge patch merges maps: keys of an earlier attach that
		// the driver no longer returns are removed explicitly.
		m := map[string]any{}
		for k := range va.Status.AttachmentMetadata {
			m[k] = nil
		}
		for k, v := range metadata {
			m[k] = v
		}
		status["attachmentMetadata"] = m
	}
	return c.patchStatus(ctx, va, status)
}

// markDetached removes the finalizer, then clears the attached status
// (upstream's order: a deleted VolumeAttachment without the finalizer is
// detached whatever its status says, so no second detach follows).
func (c *Controller) markDetached(ctx context.Context, va *storagev1.VolumeAttachment) error {
	i := slices.Index(va.Finalizers, c.finalizer)
	if i < 0 {
		return nil
	}
	body, err := removeAt(i, c.finalizer)
	if err != nil {
		return err
	}
	va, err = c.client.StorageV1().VolumeAttachments().Patch(ctx, va.Name, types.JSONPatchType, body, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	_, err = c.patchStatus(ctx, va, map[string]any{"attached": false, "detachError": nil, "attachmentMetadata": nil})
	if apierrors.IsNotFound(err) {
		return nil // gone with its last finalizer
	}
	return err
}

// saveError records a failed attach (or detach) in the status.
func (c *Controller) saveError(ctx context.Context, va *storagev1.VolumeAttachment, err error, attach bool) (*storagev1.VolumeAttachment, error) {
	msg := errorText(err)
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	verr := storagev1.VolumeError{Time: metav1.NewTime(c.now()), Message: msg}
	field := "detachError"
	if attach {
		field = "attachError"
	}
	return c.patchStatus(ctx, va, map[string]any{field: verr})
}

func (c *Controller) patchStatus(ctx context.Context, va *storagev1.VolumeAttachment, status map[string]any) (*storagev1.VolumeAttachment, error) {
	body, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return va, err
	}
	return c.client.StorageV1().VolumeAttachments().Patch(ctx, va.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
}

// removeAt is a JSON patch removing finalizer i, if it is still the one
// named (a concurrent change of the list fails the test, and the sync is
// retried with a fresh read).
func removeAt(i int, finalizer string) ([]byte, error) {
	path := fmt.Sprintf("/metadata/finalizers/%d", i)
	return json.Marshal([]map[string]any{
		{"op": "test", "path": path, "value": finalizer},
		{"op": "remove", "path": path},
	})
}

// errorText is an error as upstream records it: a driver's error is its
// gRPC status ("rpc error: code = ... desc = ..."), without our operation
// prefix.
func errorText(err error) string {
	var e *csi.Error
	if errors.As(err, &e) {
		return e.Err.Error()
	}
	return err.Error()
}
