package provisioner

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/reference"
	volumehelpers "k8s.io/component-helpers/storage/volume"

	"github.com/moorage/moorage/internal/csi"
)

// verdict is what this provisioner does with a claim.
type verdict int

const (
	ignore    verdict = iota
	provision         // call CreateVolume now
	own               // node-local: try to take this Immediate claim first
)

// judge is upstream's shouldProvision (sig-storage-lib-external-provisioner)
// plus the node deployment's checkNode (external-provisioner), on a claim
// from the cache or from the API.
func (c *Controller) judge(claim *corev1.PersistentVolumeClaim) (verdict, *storagev1.StorageClass) {
	phase := claim.Status.Phase
	if claim.DeletionTimestamp != nil || claim.Spec.VolumeName != "" || (phase != "" && phase != corev1.ClaimPending) {
		return ignore, nil
	}
	if provisionerOf(claim) != c.driver {
		return ignore, nil
	}
	class, err := c.classes.Get(volumehelpers.GetPersistentVolumeClaimClass(claim))
	if err != nil || class.Provisioner != c.driver {
		return ignore, nil
	}
	selected := claim.Annotations[annSelectedNode]
	wffc := class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer
	switch {
	case c.opts.Mode == Central && (selected != "" || !wffc):
		return provision, class
	case c.opts.Mode == NodeLocal && selected == c.opts.NodeName:
		return provision, class
	case c.opts.Mode == NodeLocal && selected == "" && !wffc:
		return own, class
	default:
		return ignore, nil // waiting for a node, or another node's
	}
}

// syncClaim brings one claim (by uid) and its journal record to rest:
// provisions a claim that wants a volume, and heals a record whose claim no
// longer wants one.
func (c *Controller) syncClaim(ctx context.Context, uid types.UID) error {
	name := volumeName(uid)
	rec, hasRec := c.journal.get(name)
	if _, err := c.pvLister.Get(name); err == nil {
		// OBSERVATION: the PV exists; from now on its reclaim policy
		// decides the volume's fate. Only the record may be left over.
		if hasRec {
			return c.journal.remove(name)
		}
		return nil
	}
	v, class := ignore, (*storagev1.StorageClass)(nil)
	claim := c.claimByUID(uid)
	if claim != nil {
		v, class = c.judge(claim)
	}
	if v != own {
		c.mu.Lock()
		delete(c.firstSeen, uid)
		c.mu.Unlock()
	}
	switch {
	case v == provision:
		return c.provision(ctx, claim, class, rec, hasRec)
	case hasRec:
		// OBSERVATION: a CreateVolume was sent (or about to be) for a
		// claim that no longer wants it: deleted, bound elsewhere, or
		// moved to another node.
		return c.abandon(ctx, rec)
	case v == own:
		return c.own(ctx, claim, class)
	default:
		return nil
	}
}

// plan is a CreateVolume request and what the PV needs besides.
type plan struct {
	req     csi.CreateVolumeRequest
	secrets [numSecretKinds]*corev1.SecretReference
}

// prepare builds the request as external-provisioner's prepareProvision
// does, in its order of checks.
func (c *Controller) prepare(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass) (*plan, error) {
	if err := c.checkCapabilities(); err != nil {
		return nil, err
	}
	if claim.Spec.DataSource != nil || claim.Spec.DataSourceRef != nil {
		return nil, errors.New("claim dataSource is not supported yet")
	}
	if claim.Spec.Selector != nil {
		return nil, errors.New("claim Selector is not supported")
	}
	params, err := c.classParams(class)
	if err != nil {
		return nil, err
	}
	name := volumeName(claim.UID)
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	p := &plan{req: csi.CreateVolumeRequest{
		Name:          name,
		RequiredBytes: size.Value(),
		Capability: csi.VolumeCapability{
			AccessModes: claim.Spec.AccessModes,
			Block:       claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == corev1.PersistentVolumeBlock,
			FSType:      params.fsType,
			MountFlags:  class.MountOptions,
		},
		Parameters: maps.Clone(params.driver),
	}}
	if c.pluginCaps.AccessibilityConstraints {
		p.req.Requisite, p.req.Preferred, err = c.requirements(claim, class, claim.Annotations[annSelectedNode])
		if err != nil && !errors.Is(err, errReschedule) {
			err = fmt.Errorf("error generating accessibility requirements: %w", err)
		}
		if err != nil {
			return nil, err
		}
	}
	for kind := range numSecretKinds {
		if p.secrets[kind], err = params.secrets[kind].resolve(name, claim); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// provision is one attempt at a claim's volume: CreateVolume, then the PV.
func (c *Controller) provision(ctx context.Context, claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, rec intent, hasRec bool) error {
	c.recorder.Event(claim, corev1.EventTypeNormal, "Provisioning", fmt.Sprintf("External provisioner is provisioning volume for claim %q", claim.Namespace+"/"+claim.Name))
	p, err := c.prepare(claim, class)
	switch {
	case errors.Is(err, errReschedule):
		c.failed(claim, class, err)
		return c.reschedule(ctx, claim)
	case err != nil:
		c.failed(claim, class, err)
		return err
	}
	var provisionerSecret *secretRef
	if ref := p.secrets[secretProvisioner]; ref != nil {
		provisionerSecret = &secretRef{Namespace: ref.Namespace, Name: ref.Name}
	}
	if hasRec {
		// A CreateVolume was sent before and may have succeeded: send
		// the very same request again.
		p.req = rec.Request
		provisionerSecret = rec.SecretRef
	} else {
		// First attempt. The caches may lag behind writes (the PV we just
		// created, our own removal of selected-node, a bind, a deletion):
		// ask the API before creating anything.
		if _, err := c.client.CoreV1().PersistentVolumes().Get(ctx, p.req.Name, metav1.GetOptions{}); err == nil {
			return nil
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		live, err := c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).Get(ctx, claim.Name, metav1.GetOptions{})
		if err != nil {
			return ignoreNotFound(err)
		}
		if v, _ := c.judge(live); live.UID != claim.UID || v != provision {
			return nil // the informer brings the change
		}
		rec = intent{Request: p.req, Claim: claimID{claim.Namespace, claim.Name, claim.UID}, SecretRef: provisionerSecret}
		if err := c.journal.put(rec); err != nil {
			return err
		}
	}
	if p.req.Secrets, err = readSecret(ctx, c.client, provisionerSecret); err != nil {
		c.failed(claim, class, err)
		return err
	}
	vol, err := c.csi.CreateVolume(ctx, p.req)
	if err != nil {
		return c.createFailed(ctx, claim, class, err)
	}
	if c.afterCreateVolume != nil {
		if err := c.afterCreateVolume(claim); err != nil {
			return err
		}
	}
	if vol.CapacityBytes == 0 {
		// CSI: 0 means unknown; the API server needs a size.
		vol.CapacityBytes = p.req.RequiredBytes
	} else if vol.CapacityBytes < p.req.RequiredBytes {
		err := fmt.Errorf("created volume capacity %v less than requested capacity %v", vol.CapacityBytes, p.req.RequiredBytes)
		if derr := c.csi.DeleteVolume(ctx, vol.ID, p.req.Secrets); derr != nil {
			// The record stays: the next attempt replays and retries.
			err = fmt.Errorf("%w. Cleanup of volume %s failed: %v", err, p.req.Name, rpcText(derr))
		} else if rerr := c.journal.remove(p.req.Name); rerr != nil {
			err = errors.Join(err, rerr)
		}
		c.failed(claim, class, err)
		return err
	}
	pv, err := c.newPV(claim, class, p, vol)
	if err != nil {
		return err
	}
	if _, err := c.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		// The record stays, so the volume is never lost: the next attempt
		// replays CreateVolume (same volume) and creates the PV again.
		return fmt.Errorf("error saving volume %s: %w", pv.Name, err)
	}
	if err := c.journal.remove(pv.Name); err != nil {
		c.log.Info("PV created, journal record not removed; it goes at the next sync", "pv", pv.Name, "err", err)
	}
	c.recorder.Event(claim, corev1.EventTypeNormal, "ProvisioningSucceeded", fmt.Sprintf("Successfully provisioned volume %s", pv.Name))
	return nil
}

// createFailed handles a CreateVolume error by its kind (external-provisioner's
// checkError, here csi.Classify): the record goes only when the driver has
// definitively not created the volume; RESOURCE_EXHAUSTED on a selected node
// of a topology-aware driver gives the node up.
func (c *Controller) createFailed(ctx context.Context, claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, err error) error {
	kind := csi.Classify(err)
	if kind == csi.Reschedule && (claim.Annotations[annSelectedNode] == "" || !c.pluginCaps.AccessibilityConstraints) {
		kind = csi.Final // nowhere else to go
	}
	c.failed(claim, class, err)
	switch kind {
	case csi.Final, csi.Reschedule:
		if rerr := c.journal.remove(volumeName(claim.UID)); rerr != nil {
			return errors.Join(err, rerr)
		}
	default:
		// InProgress: the volume may exist or be in the making; Transient:
		// this attempt did nothing, but one before it may have. Either
		// way the record stays and the same request is sent again.
	}
	if kind == csi.Reschedule {
		return c.reschedule(ctx, claim)
	}
	return err
}

// failed records upstream's ProvisioningFailed event.
func (c *Controller) failed(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, err error) {
	c.recorder.Event(claim, corev1.EventTypeWarning, "ProvisioningFailed",
		fmt.Sprintf("failed to provision volume with StorageClass %q: %s", class.Name, rpcText(err)))
}

// reschedule removes the selected node so that the scheduler picks another
// (sig-storage-lib-external-provisioner's rescheduleProvisioning). A
// node-local provisioner also stands back from the claim for a while.
func (c *Controller) reschedule(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	if _, ok := claim.Annotations[annSelectedNode]; !ok {
		return nil
	}
	if c.opts.Mode == NodeLocal {
		c.yield(claim.UID)
	}
	updated := claim.DeepCopy()
	delete(updated.Annotations, annSelectedNode)
	if _, err := c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("delete annotation 'annSelectedNode' for PersistentVolumeClaim %q: %w", claim.Namespace+"/"+claim.Name, err)
	}
	return nil
}

// abandon deletes the volume of a record whose claim no longer wants it.
// The driver's volume ID is not known until CreateVolume answers, so the
// recorded request is replayed first (the CSI spec's advice for a
// CreateVolume whose answer was lost), then DeleteVolume is called.
func (c *Controller) abandon(ctx context.Context, rec intent) error {
	name := rec.Request.Name
	// Ask the API, not the caches, before deleting anything.
	if _, err := c.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return c.journal.remove(name)
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	live, err := c.client.CoreV1().PersistentVolumeClaims(rec.Claim.Namespace).Get(ctx, rec.Claim.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case live.UID == rec.Claim.UID:
		if v, _ := c.judge(live); v == provision {
			return fmt.Errorf("claim %s/%s still wants volume %s; waiting for the cache", live.Namespace, live.Name, name)
		}
	}
	req := rec.Request
	if req.Secrets, err = readSecret(ctx, c.client, rec.SecretRef); err != nil {
		return err // without its secret the driver's answer would mean nothing
	}
	vol, err := c.csi.CreateVolume(ctx, req)
	switch csi.Classify(err) {
	case csi.OK:
	case csi.Final, csi.Reschedule:
		// The same request is refused: it never created a volume.
		c.log.Info("journal: abandoned CreateVolume was refused; nothing to delete", "volume", name, "err", err)
		return c.journal.remove(name)
	default:
		return err
	}
	if err := c.csi.DeleteVolume(ctx, vol.ID, req.Secrets); err != nil {
		return err
	}
	c.log.Info("journal: deleted the volume of a claim that no longer wants it", "volume", name, "volumeID", vol.ID,
		"claim", rec.Claim.Namespace+"/"+rec.Claim.Name)
	return c.journal.remove(name)
}

// newPV builds the PV as external-provisioner's Provision and the lib's
// provisionClaimOperation do.
func (c *Controller) newPV(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, p *plan, vol csi.Volume) (*corev1.PersistentVolume, error) {
	claimRef, err := reference.GetReference(scheme.Scheme, claim)
	if err != nil {
		return nil, err
	}
	attrs := map[string]string{attrIdentity: c.identity}
	maps.Copy(attrs, vol.Context)
	src := &corev1.CSIPersistentVolumeSource{
		Driver:                     c.driver,
		VolumeHandle:               vol.ID,
		VolumeAttributes:           attrs,
		ControllerPublishSecretRef: p.secrets[secretControllerPublish],
		NodeStageSecretRef:         p.secrets[secretNodeStage],
		NodePublishSecretRef:       p.secrets[secretNodePublish],
		ControllerExpandSecretRef:  p.secrets[secretControllerExpand],
		NodeExpandSecretRef:        p.secrets[secretNodeExpand],
	}
	if !p.req.Capability.Block {
		src.FSType = p.req.Capability.FSType
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.req.Name,
			Annotations: map[string]string{
				annProvisionedBy: c.driver,
				// Upstream writes both, empty when no secret is used,
				// so that deletion never falls back to the class.
				annDeletionSecretName: "",
				annDeletionSecretNS:   "",
			},
		},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes:            claim.Spec.AccessModes,
			MountOptions:           p.req.Capability.MountFlags,
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(vol.CapacityBytes, resource.BinarySI)},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: src},
			ClaimRef:               claimRef,
			StorageClassName:       volumehelpers.GetPersistentVolumeClaimClass(claim),
			VolumeMode:             claim.Spec.VolumeMode,
		},
	}
	if ref := p.secrets[secretProvisioner]; ref != nil {
		pv.Annotations[annDeletionSecretName], pv.Annotations[annDeletionSecretNS] = ref.Name, ref.Namespace
	}
	if ref := p.secrets[secretControllerModify]; ref != nil {
		pv.Annotations[annModifySecretName], pv.Annotations[annModifySecretNS] = ref.Name, ref.Namespace
	}
	if class.ReclaimPolicy != nil {
		pv.Spec.PersistentVolumeReclaimPolicy = *class.ReclaimPolicy
	}
	if pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
		// HonorPVReclaimPolicy: the PV outlives a deletion until its
		// volume is deleted.
		pv.Finalizers = []string{finalizerPV}
	}
	if c.pluginCaps.AccessibilityConstraints {
		pv.Spec.NodeAffinity = nodeAffinity(vol.AccessibleTopology)
	}
	return pv, nil
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
