package volume

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/csi"
)

// Node expansion of CSI volumes (the kubelet's half of volume expansion).
//
// Each SetUp of a claim's CSI volume, once the volume is staged and
// published for the pod, looks at the claim and PV it has just read: when
// the PV is bigger than the claim's status.capacity and the resizer has
// handed the resize to the node (allocatedResourceStatuses[storage] is
// NodeResizePending or NodeResizeInProgress; or, from a resizer that
// writes no such status, none at all), it hands a NodeExpansion to
// Options.NodeExpand. That hook (the agent's) decides, as the kubelet's
// NodeExpander does, whether and when to call NodeExpansion.Expand, and
// writes the claim's status and the events. A volume that is published
// when the resize comes is expanded by the SetUp of the pod's next sync; a
// volume staged for a new pod is expanded right after its publication.
//
// An error from the hook fails the volume's SetUp with the kubelet's
// "MountVolume.Setup failed while expanding volume" (the pod's containers
// do not start with a file system smaller than its claim says); the hook
// returns none for a volume that pods already use.

// NodeExpansion is a claim's CSI volume published for a pod, whose node
// expansion is pending.
type NodeExpansion struct {
	Pod *corev1.Pod
	// Volume is the pod's name for the volume.
	Volume string
	Claim  *corev1.PersistentVolumeClaim
	PV     *corev1.PersistentVolume
	// ReadOnly: the pod uses the volume read-only (the claim's readOnly or
	// spec.csi.readOnly); the kubelet does not expand it then.
	ReadOnly bool

	m          *Manager
	nv         *csi.NodeVolumes
	target     string
	capability csi.VolumeCapability
}

// Expand calls NodeExpandVolume for this publication, as the kubelet's CSI
// plugin does: the pod's publish target as volume path (the device file
// for a Block volume), the recorded staging path, the PV's capacity as
// required_bytes, the volume's capability and the secret named by
// spec.csi.nodeExpandSecretRef. Its errors are worded as the kubelet's and
// wrap the driver's, so that csi.Classify applies to them.
func (e *NodeExpansion) Expand(ctx context.Context) (int64, error) {
	src := e.PV.Spec.CSI
	var secrets map[string]string
	if ref := src.NodeExpandSecretRef; ref != nil {
		s, err := e.m.secret(ctx, ref.Namespace, ref.Name, false)
		if err != nil {
			return 0, fmt.Errorf("expander.NodeExpand failed to get NodeExpandSecretRef %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		secrets = make(map[string]string, len(s.Data))
		for k, v := range s.Data {
			secrets[k] = string(v)
		}
	}
	size := e.PV.Spec.Capacity[corev1.ResourceStorage]
	capability := e.capability
	got, err := e.nv.Expand(ctx, csi.ExpandRequest{
		VolumeID:      src.VolumeHandle,
		RequiredBytes: size.Value(),
		Capability:    &capability,
		Secrets:       secrets,
		VolumePath:    e.target,
	})
	if err != nil {
		// The driver's error as the kubelet words it, without our
		// operation prefix.
		var ce *csi.Error
		if errors.As(err, &ce) {
			err = ce.Err
		}
		return 0, fmt.Errorf("Expander.NodeExpand failed to expand the volume : %w", err)
	}
	return got, nil
}

// ExpansionError is a failed node expansion of a volume being set up for a
// pod, worded as the kubelet's event.
type ExpansionError struct {
	PV  string
	Err error
}

func (e *ExpansionError) Error() string {
	return fmt.Sprintf("MountVolume.Setup failed while expanding volume for volume %q : %v", e.PV, e.Err)
}

func (e *ExpansionError) Unwrap() error { return e.Err }

// nodeExpansionPending is the kubelet's test for a volume whose file system
// the node must grow: the PV is bigger than the claim's capacity, and the
// resizer asked the node (or is one that records no resize status).
func nodeExpansionPending(claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) bool {
	pvSize := pv.Spec.Capacity[corev1.ResourceStorage]
	have := claim.Status.Capacity[corev1.ResourceStorage]
	if pvSize.Cmp(have) <= 0 {
		return false
	}
	switch claim.Status.AllocatedResourceStatuses[corev1.ResourceStorage] {
	case corev1.PersistentVolumeClaimNodeResizePending, corev1.PersistentVolumeClaimNodeResizeInProgress:
		return true
	case "":
		// An older resizer: no status, no allocatedResources.
		return claim.Status.AllocatedResources == nil
	}
	return false
}

// expandCSI hands a claim's published CSI volume to Options.NodeExpand when
// its node expansion is pending.
func (m *Manager) expandCSI(ctx context.Context, pod *corev1.Pod, volName string, claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, readOnly, block bool) error {
	if m.opts.NodeExpand == nil || claim == nil || !nodeExpansionPending(claim, pv) {
		return nil
	}
	src := pv.Spec.CSI
	nv, ok := m.csiDriver(src.Driver)
	if !ok {
		return nil // SetUp has just used it; gone meanwhile: the next SetUp
	}
	modes := pv.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	e := &NodeExpansion{
		Pod: pod, Volume: volName, Claim: claim, PV: pv, ReadOnly: readOnly || src.ReadOnly,
		m: m, nv: nv, capability: csi.VolumeCapability{AccessModes: modes, Block: block},
	}
	if block {
		e.target = m.csiBlockPublish(pv.Name, pod.UID)
	} else {
		e.target = csi.PublishPath(m.root, string(pod.UID), pv.Name)
		e.capability.FSType = src.FSType
		e.capability.MountFlags = pvMountOptions(pv)
	}
	if err := m.opts.NodeExpand(ctx, e); err != nil {
		return &ExpansionError{PV: pv.Name, Err: err}
	}
	return nil
}
