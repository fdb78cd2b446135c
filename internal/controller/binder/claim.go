package binder

import (
	"context"
	"fmt"
	csitranslation "k8s.io/csi-translation-lib"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/moorage/moorage/internal/pvmatch"
)

// Annotations and finalizers, as upstream names them.
const (
	annBindCompleted        = "pv.kubernetes.io/bind-completed"
	annBoundByController    = "pv.kubernetes.io/bound-by-controller"
	annSelectedNode         = "volume.kubernetes.io/selected-node"
	annStorageProvisioner   = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvision = "volume.beta.kubernetes.io/storage-provisioner"
	annProvisionedBy        = "pv.kubernetes.io/provisioned-by"
	notSupportedProvisioner = "kubernetes.io/no-provisioner"
	annMigratedTo           = "pv.kubernetes.io/migrated-to"
)

// translator maps in-tree provisioners that upstream migrated to CSI
// (kubernetes.io/aws-ebs, ...) to their CSI drivers, with upstream's own
// table (k8s.io/csi-translation-lib).
var translator = csitranslation.New()

// syncClaim is upstream's syncClaim: an unbound claim is matched (or waits,
// or is handed to a provisioner); a bound one is checked against its volume.
func (c *Controller) syncClaim(ctx context.Context, key string) error {
	claim := c.latest.claim(key)
	if claim == nil {
		return nil // deleted
	}
	if _, done := claim.Annotations[annBindCompleted]; !done {
		return c.syncUnboundClaim(ctx, claim)
	}
	return c.syncBoundClaim(ctx, claim)
}

func (c *Controller) syncUnboundClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	if claim.Spec.VolumeName != "" {
		return c.syncClaimWithVolumeName(ctx, claim)
	}
	delay, err := c.delayBinding(claim)
	if err != nil {
		return err
	}
	key := claimKey(claim)
	opts := pvmatch.Options{DelayBinding: delay, Exclude: c.isAssumedByOther(key)}
	if selected := claim.Annotations[annSelectedNode]; delay && selected != "" {
		// The scheduler chose a node for the claim's first pod: bind a volume
		// reachable from that node (upstream's scheduler binds these itself;
		// here the binder does it, with the same choice).
		node, err := c.nodeLister.Get(selected)
		if err != nil && !isNotFound(err) {
			return err
		}
		opts.Node = node
	}
	pv, err := c.index.Find(claim, opts)
	if err != nil {
		return fmt.Errorf("error finding PV for claim %q: %w", key, err)
	}
	if pv != nil {
		if !c.assume(pv.Name, key) {
			return fmt.Errorf("volume %s is being bound to another claim", pv.Name)
		}
		defer c.forget(pv.Name)
		return c.bind(ctx, pv, claim)
	}
	// OBSERVATION: nothing fits.
	if assigned, err := c.assignDefaultClass(ctx, claim); assigned || err != nil {
		return err // the update brings the claim back, with its class
	}
	class := pvmatch.ClaimClass(claim)
	switch {
	case delay && claim.Annotations[annSelectedNode] == "":
		c.waitForFirstConsumer(claim)
	case class != "":
		if err := c.provisionClaim(ctx, claim, class); err != nil {
			return err
		}
		return nil
	default:
		c.recorder.Event(claim, corev1.EventTypeNormal, "FailedBinding",
			"no persistent volumes available for this claim and no storage class is set"+c.whyNot(claim))
	}
	return c.setClaimPhase(ctx, claim, corev1.ClaimPending, nil)
}

// syncClaimWithVolumeName handles a claim that names its volume (pre-bound by
// the user, or mid-bind after a crash).
func (c *Controller) syncClaimWithVolumeName(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	pv := c.latest.volume(claim.Spec.VolumeName)
	switch {
	case pv == nil:
		// OBSERVATION: the volume does not exist (yet); wait for it.
		return c.setClaimPhase(ctx, claim, corev1.ClaimPending, nil)
	case pv.Spec.ClaimRef == nil:
		// OBSERVATION: the user pre-bound the claim to a free volume.
		if reason := volumeSatisfiesClaim(pv, claim); reason != "" {
			c.recorder.Eventf(claim, corev1.EventTypeWarning, "VolumeMismatch", "Cannot bind to requested volume %q: %s", pv.Name, reason)
			return c.setClaimPhase(ctx, claim, corev1.ClaimPending, nil)
		}
		return c.bind(ctx, pv, claim)
	case isBoundTo(pv, claim):
		// OBSERVATION: both point at each other (or the volume is reserved
		// for this claim): finish the bind.
		return c.bind(ctx, pv, claim)
	default:
		// OBSERVATION: the volume belongs to another claim.
		c.recorder.Eventf(claim, corev1.EventTypeWarning, "FailedBinding", "volume %q already bound to a different claim.", pv.Name)
		if err := c.setClaimPhase(ctx, claim, corev1.ClaimPending, nil); err != nil {
			return err
		}
		if _, byController := claim.Annotations[annBoundByController]; byController {
			return fmt.Errorf("invalid binding of claim %q to volume %q: volume already claimed by %q", claimKey(claim), pv.Name, pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name)
		}
		return nil
	}
}

func (c *Controller) syncBoundClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	if claim.Spec.VolumeName == "" {
		return c.setClaimPhaseWithEvent(ctx, claim, corev1.ClaimLost, corev1.EventTypeWarning, "ClaimLost",
			"Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
	}
	pv := c.latest.volume(claim.Spec.VolumeName)
	switch {
	case pv == nil:
		return c.setClaimPhaseWithEvent(ctx, claim, corev1.ClaimLost, corev1.EventTypeWarning, "ClaimLost",
			"Bound claim has lost its PersistentVolume. Data on the volume is lost!")
	case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID == claim.UID:
		// OBSERVATION: consistent, or the volume lost its claimRef: (re)bind.
		return c.bind(ctx, pv, claim)
	default:
		return c.setClaimPhaseWithEvent(ctx, claim, corev1.ClaimLost, corev1.EventTypeWarning, "ClaimMisbound",
			"Two claims are bound to the same volume, this one is bound incorrectly")
	}
}

// assignDefaultClass is upstream's retroactive default StorageClass: a claim
// created with no class at all (not "") gets the default class when one
// exists, so that it can bind or be provisioned.
func (c *Controller) assignDefaultClass(ctx context.Context, claim *corev1.PersistentVolumeClaim) (bool, error) {
	if claim.Spec.StorageClassName != nil {
		return false, nil
	}
	if _, ok := claim.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		return false, nil
	}
	classes, err := c.classLister.List(everything)
	if err != nil {
		return false, err
	}
	var best *storagev1.StorageClass
	for _, sc := range classes {
		if sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" && sc.Annotations["storageclass.beta.kubernetes.io/is-default-class"] != "true" {
			continue
		}
		if best == nil || best.CreationTimestamp.Before(&sc.CreationTimestamp) ||
			(best.CreationTimestamp.Equal(&sc.CreationTimestamp) && sc.Name < best.Name) {
			best = sc
		}
	}
	if best == nil {
		return false, nil
	}
	updated := claim.DeepCopy()
	updated.Spec.StorageClassName = &best.Name
	_, err = c.updateClaim(ctx, updated)
	return err == nil, err
}

// delayBinding: the claim's class binds WaitForFirstConsumer.
func (c *Controller) delayBinding(claim *corev1.PersistentVolumeClaim) (bool, error) {
	name := pvmatch.ClaimClass(claim)
	if name == "" {
		return false, nil
	}
	sc, err := c.class(name)
	if err != nil || sc == nil {
		return false, err
	}
	if sc.VolumeBindingMode == nil {
		return false, fmt.Errorf("VolumeBindingMode not set for StorageClass %q", name)
	}
	return *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer, nil
}

// waitForFirstConsumer emits upstream's event for a WaitForFirstConsumer
// claim: naming the pods that wait for a node, if any.
func (c *Controller) waitForFirstConsumer(claim *corev1.PersistentVolumeClaim) {
	var waiting []string
	if pods, err := c.podLister.Pods(claim.Namespace).List(everything); err == nil {
		for _, pod := range pods {
			if pod.Spec.NodeName != "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			for _, v := range pod.Spec.Volumes {
				if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim.Name {
					waiting = append(waiting, pod.Name)
				}
			}
		}
	}
	switch len(waiting) {
	case 0:
		c.recorder.Event(claim, corev1.EventTypeNormal, "WaitForFirstConsumer", "waiting for first consumer to be created before binding")
	case 1:
		c.recorder.Eventf(claim, corev1.EventTypeNormal, "WaitForPodScheduled", "waiting for pod %s to be scheduled", waiting[0])
	default:
		sort.Strings(waiting)
		c.recorder.Eventf(claim, corev1.EventTypeNormal, "WaitForPodScheduled", "waiting for pods %s to be scheduled", strings.Join(waiting, ","))
	}
}

// provisionClaim hands a claim to its class's provisioner, as upstream's
// in-tree controller does for external provisioners: it names the
// provisioner in the claim's annotations and says so in an event.
func (c *Controller) provisionClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim, className string) error {
	sc, err := c.class(className)
	if err != nil {
		return err
	}
	if sc == nil {
		c.recorder.Eventf(claim, corev1.EventTypeWarning, "ProvisioningFailed", "storageclass.storage.k8s.io %q not found", className)
		return c.setClaimPhase(ctx, claim, corev1.ClaimPending, nil)
	}
	provisioner, migrated := sc.Provisioner, translator.IsMigratableIntreePluginByName(sc.Provisioner)
	if migrated {
		if provisioner, err = translator.GetCSINameFromInTreeName(sc.Provisioner); err != nil {
			return err
		}
	}
	if !migrated && strings.HasPrefix(sc.Provisioner, "kubernetes.io/") {
		// No in-tree plugin provisions here: upstream's message.
		c.recorder.Eventf(claim, corev1.EventTypeWarning, "ProvisioningFailed", "no volume plugin matched name: %s", sc.Provisioner)
		return c.setClaimPhase(ctx, claim, corev1.ClaimPending, nil)
	}
	want := map[string]string{annStorageProvisioner: provisioner, annBetaStorageProvision: provisioner}
	if migrated {
		want[annMigratedTo] = provisioner
	}
	updated := claim.DeepCopy()
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	changed := false
	for k, v := range want {
		if updated.Annotations[k] != v {
			updated.Annotations[k], changed = v, true
		}
	}
	if changed {
		if _, err := c.updateClaim(ctx, updated); err != nil {
			return err
		}
	}
	c.recorder.Eventf(claim, corev1.EventTypeNormal, "ExternalProvisioning",
		"Waiting for a volume to be created either by the external provisioner '%s' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.", provisioner)
	return nil
}

// volumeSatisfiesClaim is upstream's checkVolumeSatisfyClaim for a claim that
// names a free volume: "" when it fits, else upstream's reason.
func volumeSatisfiesClaim(pv *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) string {
	if pv.DeletionTimestamp != nil {
		return fmt.Sprintf("the volume is marked for deletion %q", pv.Name)
	}
	req := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	capacity := pv.Spec.Capacity[corev1.ResourceStorage]
	if capacity.Cmp(req) < 0 {
		return "requested PV is too small"
	}
	if pvmatch.VolumeClass(pv) != pvmatch.ClaimClass(claim) {
		return "storageClassName does not match"
	}
	if volumeModeOf(pv.Spec.VolumeMode) != volumeModeOf(claim.Spec.VolumeMode) {
		return "incompatible volumeMode"
	}
	for _, want := range claim.Spec.AccessModes {
		found := false
		for _, have := range pv.Spec.AccessModes {
			found = found || have == want
		}
		if !found {
			return "incompatible accessMode"
		}
	}
	return ""
}

func volumeModeOf(m *corev1.PersistentVolumeMode) corev1.PersistentVolumeMode {
	if m == nil {
		return corev1.PersistentVolumeFilesystem
	}
	return *m
}

// isBoundTo: the volume's claimRef names the claim (and its uid, if set).
func isBoundTo(pv *corev1.PersistentVolume, claim *corev1.PersistentVolumeClaim) bool {
	ref := pv.Spec.ClaimRef
	return ref != nil && ref.Name == claim.Name && ref.Namespace == claim.Namespace && (ref.UID == "" || ref.UID == claim.UID)
}
