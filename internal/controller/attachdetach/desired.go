package attachdetach

import (
	"crypto/sha256"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/csi/migration"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// uniqueNamePrefix starts the kubelet's unique name of a CSI volume,
// kubernetes.io/csi/<driver>^<volume handle>, used in the node's
// status.volumesAttached and status.volumesInUse.
const uniqueNamePrefix = "kubernetes.io/csi/"

// wanted is one volume that pods of a node need attached there.
type wanted struct {
	pv   *corev1.PersistentVolume
	pods []*corev1.Pod
}

// attachmentName is the VolumeAttachment name of a volume on a node, as the
// CSI attacher computes it (csi_attacher.go getAttachmentName).
func attachmentName(handle, driver, node string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(handle+driver+node)))
}

func uniqueName(driver, handle string) corev1.UniqueVolumeName {
	return corev1.UniqueVolumeName(uniqueNamePrefix + driver + "^" + handle)
}

// attachmentOf is the VolumeAttachment name a unique volume name has on a
// node; "" for a name that is not a CSI volume's.
func attachmentOf(name corev1.UniqueVolumeName, node string) string {
	rest, ok := strings.CutPrefix(string(name), uniqueNamePrefix)
	if !ok {
		return ""
	}
	driver, handle, ok := strings.Cut(rest, "^")
	if !ok {
		return ""
	}
	return attachmentName(handle, driver, node)
}

// desired is what the node's pods need attached, by VolumeAttachment name.
func (c *Controller) desired(node string) (map[string]*wanted, error) {
	out := map[string]*wanted{}
	objs, err := c.podIndex.ByIndex(sharedinformers.PodsByNode, node)
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		pod, ok := obj.(*corev1.Pod)
		if !ok || podTerminated(pod) {
			continue
		}
		for i := range pod.Spec.Volumes {
			pv, err := c.attachableVolume(pod, &pod.Spec.Volumes[i])
			if err != nil {
				return nil, err
			}
			if pv == nil {
				continue
			}
			name := attachmentName(pv.Spec.CSI.VolumeHandle, pv.Spec.CSI.Driver, node)
			w := out[name]
			if w == nil {
				w = &wanted{pv: pv}
				out[name] = w
			}
			w.pods = append(w.pods, pod)
		}
	}
	return out, nil
}

// attachableVolume is the CSI PersistentVolume behind a pod's volume if it
// must be attached: its claim is Bound to it, the volume points back at
// the claim, and its driver requires attach. nil otherwise (the volume
// is skipped, as upstream skips a volume it cannot resolve yet; a later
// change of the claim or volume brings the node back).
func (c *Controller) attachableVolume(pod *corev1.Pod, vol *corev1.Volume) (*corev1.PersistentVolume, error) {
	name := claimName(pod, vol)
	if name == "" {
		return nil, nil
	}
	claim, err := c.claims.PersistentVolumeClaims(pod.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if vol.Ephemeral != nil && !metav1.IsControlledBy(claim, pod) {
		return nil, nil
	}
	if claim.Status.Phase != corev1.ClaimBound || claim.Spec.VolumeName == "" {
		return nil, nil
	}
	pv, err := c.pvs.Get(claim.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if pv, _, err = migration.AsCSI(pv); err != nil { // in-tree types upstream migrated
		return nil, err
	}
	if pv.Spec.CSI == nil || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != claim.UID {
		return nil, nil
	}
	required, err := c.attachRequired(pv.Spec.CSI.Driver)
	if err != nil || !required {
		return nil, err
	}
	return pv, nil
}

// attachRequired is the CSI plugin's answer for a driver: its CSIDriver's
// spec.attachRequired, and true without a CSIDriver object.
func (c *Controller) attachRequired(driver string) (bool, error) {
	d, err := c.drivers.Get(driver)
	if apierrors.IsNotFound(err) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	return requiresAttach(d), nil
}

func requiresAttach(d *storagev1.CSIDriver) bool {
	return d.Spec.AttachRequired == nil || *d.Spec.AttachRequired
}

// claimName is the claim behind a pod's volume: a persistentVolumeClaim's,
// or the claim the ephemeral volume controller names <pod>-<volume>.
func claimName(pod *corev1.Pod, vol *corev1.Volume) string {
	switch {
	case vol.PersistentVolumeClaim != nil:
		return vol.PersistentVolumeClaim.ClaimName
	case vol.Ephemeral != nil:
		return pod.Name + "-" + vol.Name
	}
	return ""
}

// podTerminated is upstream's IsPodTerminated: Succeeded or Failed, or
// deleted with no container running or waiting to run.
func podTerminated(pod *corev1.Pod) bool {
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return true
	}
	if pod.DeletionTimestamp == nil {
		return false
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if cs.State.Terminated == nil && cs.State.Waiting == nil {
				return false
			}
		}
	}
	return true
}

// multiAttachAllowed is upstream's IsMultiAttachAllowed for a
// PersistentVolume: no access modes, or ReadWriteMany or ReadOnlyMany.
func multiAttachAllowed(pv *corev1.PersistentVolume) bool {
	if len(pv.Spec.AccessModes) == 0 {
		return true
	}
	for _, m := range pv.Spec.AccessModes {
		if m == corev1.ReadWriteMany || m == corev1.ReadOnlyMany {
			return true
		}
	}
	return false
}
