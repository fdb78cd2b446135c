package attachdetach

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/csi/migration"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Event reasons, as upstream.
const (
	reasonFailedAttach     = "FailedAttachVolume"
	reasonSuccessfulAttach = "SuccessfulAttachVolume"
)

// syncNode detaches what the node's pods no longer need, reports what is
// attached in the node's status, then attaches what they need (detaches
// first, as upstream, so that a volume moving to another node is freed
// first). It returns when to look at the node again for a timer.
func (c *Controller) syncNode(ctx context.Context, name string) (time.Duration, error) {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		node = nil
	} else if err != nil {
		return 0, err
	}
	if node != nil && node.Annotations[annControllerManaged] != "true" {
		return 0, nil // the node attaches its volumes itself, or not at all
	}
	want := map[string]*wanted{}
	if node != nil {
		if want, err = c.desired(name); err != nil {
			return 0, err
		}
	}
	var vas []*storagev1.VolumeAttachment
	objs, err := c.vaIndex.ByIndex(byNode, name)
	if err != nil {
		return 0, err
	}
	for _, obj := range objs {
		if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.Source.PersistentVolumeName != nil {
			vas = append(vas, va)
		}
	}
	now := c.now()
	var next timer

	c.mu.Lock()
	detach := map[string]bool{}
	for _, va := range vas {
		if _, ok := want[va.Name]; ok {
			c.stateOf(va.Name, name).detachWanted = time.Time{}
			continue
		}
		if va.DeletionTimestamp != nil {
			continue // being detached
		}
		st := c.stateOf(va.Name, name)
		if st.detachWanted.IsZero() {
			st.detachWanted = now
		}
		if ok, wait := c.mayDetach(node, va, now.Sub(st.detachWanted)); ok {
			detach[va.Name] = true
		} else {
			next.at(wait)
		}
	}
	c.mu.Unlock()

	// The volumes leave the node's report of attached volumes before they
	// are detached; if the report cannot be written, nothing is detached.
	if node != nil {
		if err := c.reportAttached(ctx, node, vas, detach); err != nil {
			return 0, err
		}
	}
	for _, va := range vas {
		if !detach[va.Name] {
			continue
		}
		c.log.Info("detaching", "volumeattachment", va.Name, "node", name, "pv", *va.Spec.Source.PersistentVolumeName)
		err := c.client.StorageV1().VolumeAttachments().Delete(ctx, va.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &va.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return 0, err
		}
	}

	existing := map[string]*storagev1.VolumeAttachment{}
	for _, va := range vas {
		existing[va.Name] = va
	}
	for vaName, w := range want {
		after, err := c.attach(ctx, node, vaName, w, existing[vaName], now)
		if err != nil {
			return 0, err
		}
		next.at(after)
	}
	c.forget(name, want, existing)
	return next.d, nil
}

// mayDetach says whether an attachment no pod needs may be detached now:
// the node no longer reports the volume in use, or the node is not Ready
// (or gone) and the volume has waited MaxWaitForUnmount, or the node is
// out of service. Otherwise it says when to look again (0: on a change).
func (c *Controller) mayDetach(node *corev1.Node, va *storagev1.VolumeAttachment, waited time.Duration) (bool, time.Duration) {
	if node == nil || !nodeReady(node) {
		if waited > c.opts.MaxWaitForUnmount {
			return true, 0
		}
		if node == nil || inUse(node, va.Name) {
			return false, c.opts.MaxWaitForUnmount - waited + time.Second
		}
		return true, 0
	}
	if outOfService(node) || !inUse(node, va.Name) {
		return true, 0
	}
	return false, 0
}

// attach makes sure a volume the node's pods need is attached, and tells
// the pods how it goes. va is its VolumeAttachment, nil if there is none.
func (c *Controller) attach(ctx context.Context, node *corev1.Node, vaName string, w *wanted, va *storagev1.VolumeAttachment, now time.Time) (time.Duration, error) {
	c.mu.Lock()
	st := c.stateOf(vaName, node.Name)
	c.mu.Unlock()
	switch {
	case va == nil:
		if !multiAttachAllowed(w.pv) {
			if others := c.attachedElsewhere(w.pv.Name, node.Name); len(others) > 0 {
				c.reportMultiAttach(st, w, others)
				return 0, nil
			}
		}
		_, err := c.client.StorageV1().VolumeAttachments().Create(ctx, &storagev1.VolumeAttachment{
			ObjectMeta: metav1.ObjectMeta{Name: vaName},
			Spec: storagev1.VolumeAttachmentSpec{
				Attacher: w.pv.Spec.CSI.Driver,
				NodeName: node.Name,
				Source:   storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To(w.pv.Name)},
			},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return 0, err
		}
		c.mu.Lock()
		if st.pending.IsZero() {
			st.pending = now
		}
		st.multiAttachReported = nil
		c.mu.Unlock()
		if err == nil {
			c.log.Info("attaching", "volumeattachment", vaName, "node", node.Name, "pv", w.pv.Name)
		}
		return c.opts.AttachTimeout, nil
	case va.DeletionTimestamp != nil:
		return 0, nil // attached again once detached: its deletion brings the node back
	case va.Status.Attached:
		c.mu.Lock()
		wasPending := !st.pending.IsZero()
		st.pending, st.lastError = time.Time{}, ""
		c.mu.Unlock()
		if wasPending {
			// Upstream's event after an attach it saw through.
			msg := fmt.Sprintf("AttachVolume.Attach succeeded for volume %q ", w.pv.Name)
			for _, pod := range w.pods {
				c.recorder.Event(pod, corev1.EventTypeNormal, reasonSuccessfulAttach, msg)
			}
		}
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.pending.IsZero() {
		st.pending = now
	}
	if e := va.Status.AttachError; e != nil {
		key := e.Time.UTC().String() + "\x00" + e.Message
		if key != st.lastError {
			st.lastError, st.pending = key, now
			c.failed(w, e.Message)
		}
	} else if waited := now.Sub(st.pending); waited >= c.opts.AttachTimeout {
		// The CSI attacher's timeout, after which upstream's attach
		// operation fails and is tried again.
		st.pending = now
		c.failed(w, fmt.Sprintf("timed out waiting for external-attacher of %v CSI driver to attach volume %v", w.pv.Spec.CSI.Driver, w.pv.Spec.CSI.VolumeHandle))
	}
	return c.opts.AttachTimeout - now.Sub(st.pending) + 10*time.Millisecond, nil
}

// failed tells the pods that an attach failed, as upstream's operation
// generator words it.
func (c *Controller) failed(w *wanted, cause string) {
	msg := fmt.Sprintf("AttachVolume.Attach failed for volume %q : %s", w.pv.Name, cause)
	for _, pod := range w.pods {
		c.recorder.Event(pod, corev1.EventTypeWarning, reasonFailedAttach, msg)
	}
}

// attachedElsewhere lists the other nodes a volume has a VolumeAttachment
// to (attached, attaching or detaching: upstream's actual state counts all
// of them until the detach is done).
func (c *Controller) attachedElsewhere(pv, node string) []string {
	objs, _ := c.vaIndex.ByIndex(byPV, pv)
	var out []string
	for _, obj := range objs {
		if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.NodeName != node {
			out = append(out, va.Spec.NodeName)
		}
	}
	return out
}

// reportMultiAttach tells the pods (once each) that their volume is
// exclusively attached to another node, naming the pods there that use it
// when they are in the pod's own namespace, as upstream's
// reportMultiAttachError does. The caller does not hold c.mu.
func (c *Controller) reportMultiAttach(st *attachment, w *wanted, nodes []string) {
	var users []*corev1.Pod
	for _, n := range nodes {
		objs, _ := c.podIndex.ByIndex(sharedinformers.PodsByNode, n)
		for _, obj := range objs {
			pod, ok := obj.(*corev1.Pod)
			if !ok || podTerminated(pod) {
				continue
			}
			for i := range pod.Spec.Volumes {
				if pv, _ := c.attachableVolume(pod, &pod.Spec.Volumes[i]); pv != nil && pv.Name == w.pv.Name {
					users = append(users, pod)
					break
				}
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.multiAttachReported == nil {
		st.multiAttachReported = map[types.UID]bool{}
	}
	for _, pod := range w.pods {
		if st.multiAttachReported[pod.UID] {
			continue
		}
		st.multiAttachReported[pod.UID] = true
		msg := "Volume is already exclusively attached to one node and can't be attached to another"
		if len(users) > 0 {
			var local []string
			others := 0
			for _, u := range users {
				if u.Namespace == pod.Namespace {
					local = append(local, u.Name)
				} else {
					others++
				}
			}
			if len(local) > 0 {
				msg = fmt.Sprintf("Volume is already used by pod(s) %s", strings.Join(local, ", "))
				if others > 0 {
					msg = fmt.Sprintf("%s and %d pod(s) in different namespaces", msg, others)
				}
			} else {
				msg = fmt.Sprintf("Volume is already used by %d pod(s) in different namespaces", others)
			}
		}
		c.recorder.Event(pod, corev1.EventTypeWarning, reasonFailedAttach, fmt.Sprintf("Multi-Attach error for volume %q %s", w.pv.Name, msg))
	}
}

// reportAttached writes the node's status.volumesAttached: every
// VolumeAttachment that is attached and neither being detached nor about
// to be.
func (c *Controller) reportAttached(ctx context.Context, node *corev1.Node, vas []*storagev1.VolumeAttachment, detach map[string]bool) error {
	report := []corev1.AttachedVolume{}
	for _, va := range vas {
		if !va.Status.Attached || va.DeletionTimestamp != nil || detach[va.Name] {
			continue
		}
		if name, ok := c.uniqueNameOf(node, va); ok {
			report = append(report, corev1.AttachedVolume{Name: name, DevicePath: ""})
		}
	}
	slices.SortFunc(report, func(a, b corev1.AttachedVolume) int { return strings.Compare(string(a.Name), string(b.Name)) })
	cur := node.Status.VolumesAttached
	if slices.Equal(cur, report) || (len(cur) == 0 && len(report) == 0) {
		return nil
	}
	var list any = report
	if len(report) == 0 {
		list = nil
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"volumesAttached": list}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// uniqueNameOf is the unique volume name of a VolumeAttachment: from its
// PersistentVolume, or, when that is gone, from what the node reports.
func (c *Controller) uniqueNameOf(node *corev1.Node, va *storagev1.VolumeAttachment) (corev1.UniqueVolumeName, bool) {
	if pv, err := c.pvs.Get(*va.Spec.Source.PersistentVolumeName); err == nil && asCSI(pv).Spec.CSI != nil {
		pv = asCSI(pv)
		if attachmentName(pv.Spec.CSI.VolumeHandle, pv.Spec.CSI.Driver, node.Name) == va.Name {
			return uniqueName(pv.Spec.CSI.Driver, pv.Spec.CSI.VolumeHandle), true
		}
	}
	for _, av := range node.Status.VolumesAttached {
		if attachmentOf(av.Name, node.Name) == va.Name {
			return av.Name, true
		}
	}
	for _, name := range node.Status.VolumesInUse {
		if attachmentOf(name, node.Name) == va.Name {
			return name, true
		}
	}
	return "", false
}

// inUse says whether the node reports the volume of a VolumeAttachment in
// status.volumesInUse.
func inUse(node *corev1.Node, vaName string) bool {
	for _, name := range node.Status.VolumesInUse {
		if attachmentOf(name, node.Name) == vaName {
			return true
		}
	}
	return false
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func outOfService(node *corev1.Node) bool {
	return slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool {
		return t.Key == corev1.TaintNodeOutOfService && t.Effect == corev1.TaintEffectNoExecute
	})
}

// stateOf is the memory of an attachment, created if missing. The caller
// holds c.mu.
func (c *Controller) stateOf(vaName, node string) *attachment {
	st := c.state[vaName]
	if st == nil {
		st = &attachment{node: node}
		c.state[vaName] = st
	}
	return st
}

// forget drops the memory of the node's attachments that are neither
// wanted nor exist.
func (c *Controller) forget(node string, want map[string]*wanted, existing map[string]*storagev1.VolumeAttachment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, st := range c.state {
		if st.node != node {
			continue
		}
		if _, ok := want[name]; ok {
			continue
		}
		if _, ok := existing[name]; ok {
			continue
		}
		delete(c.state, name)
	}
}

// timer keeps the earliest positive delay.
type timer struct{ d time.Duration }

func (t *timer) at(d time.Duration) {
	if d > 0 && (t.d == 0 || d < t.d) {
		t.d = d
	}
}

// asCSI is pv as the CSI plugin sees it (translated when of an in-tree
// type upstream migrated), or pv itself if it cannot be translated.
func asCSI(pv *corev1.PersistentVolume) *corev1.PersistentVolume {
	if csiPV, ok, err := migration.AsCSI(pv); err == nil && ok {
		return csiPV
	}
	return pv
}
