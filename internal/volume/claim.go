package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	kptr "k8s.io/utils/ptr"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
)

// alphaNodeAffinityAnnotation is the node affinity of local volumes
// before spec.nodeAffinity existed (Kubernetes 1.7-1.9); still found in
// older tutorials. It holds a JSON corev1.NodeAffinity.
const alphaNodeAffinityAnnotation = "volume.alpha.kubernetes.io/node-affinity"

// setUpClaim resolves a claim to its bound volume, as upstream's volume
// manager does before mounting, with its messages; then checks the
// volume's node affinity and sets up its source.
func (m *Manager) setUpClaim(ctx context.Context, pod *corev1.Pod, volName, claimName string, readOnly, ephemeral bool) (Mounted, error) {
	pvc, pv, err := m.boundVolume(ctx, pod, volName, claimName, ephemeral)
	if err != nil {
		return Mounted{}, &Error{Volume: volName, Err: fmt.Errorf("error processing PVC %s/%s: %w", pod.Namespace, claimName, err)}
	}
	mt, err := m.setUpPV(ctx, pod, volName, pvc, pv, readOnly)
	var e *Error
	if errors.As(err, &e) && e.Op != "" && e.Volume == volName {
		// The kubelet's operations name a claim's volume by its
		// PersistentVolume ("MountVolume.SetUp failed for volume "pv-1"").
		e.Volume = pv.Name
	}
	return mt, err
}

// setUpPV sets up the claim's bound volume pv for the pod.
func (m *Manager) setUpPV(ctx context.Context, pod *corev1.Pod, volName string, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, readOnly bool) (Mounted, error) {
	if err := checkNodeAffinity(pv, m.opts.NodeName, m.nodeLabels()); err != nil {
		return Mounted{}, &Error{Volume: volName, Op: "MountVolume.NodeAffinity check", Err: err}
	}
	block := pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock
	src := &pv.Spec.PersistentVolumeSource
	switch {
	case src.HostPath != nil:
		if len(pvMountOptions(pv)) > 0 {
			return Mounted{}, &UnsupportedMountOptionError{Volume: pv.Name}
		}
		if block {
			return Mounted{}, &Error{Volume: volName, Err: fmt.Errorf("PersistentVolume %q: hostPath volumes do not support volumeMode Block", pv.Name)}
		}
		if err := checkHostPath(src.HostPath.Path, src.HostPath.Type); err != nil {
			return Mounted{}, setUpError(volName, err)
		}
		return Mounted{HostPath: src.HostPath.Path, ReadOnly: readOnly}, nil
	case src.Local != nil:
		if block {
			return m.mapLocalBlock(volName, pv, readOnly)
		}
		return m.mountLocal(pod, volName, pv, readOnly)
	case src.CSI != nil:
		mt, err := m.setUpCSI(ctx, pod, volName, pv, readOnly, block)
		if err != nil {
			return mt, err
		}
		return mt, m.expandCSI(ctx, pod, volName, pvc, pv, readOnly, block) // csi_expand.go
	default:
		csiPV, err := migratedPV(pv) // migration.go
		if err != nil {
			return Mounted{}, &Error{Volume: volName, Err: err}
		}
		if csiPV != nil {
			return m.setUpCSI(ctx, pod, volName, csiPV, readOnly, block)
		}
		return Mounted{}, &Error{Volume: volName, Err: fmt.Errorf("PersistentVolume %q is a %s volume, which moorage cannot mount in-tree (it mounts hostPath and local volumes itself; other storage is reached through a CSI driver)", pv.Name, sourceKind(src))}
	}
}

// boundVolume is the claim's volume, checked as upstream's desired state
// populator checks it: the claim exists, is not being deleted, is Bound
// and names its volume; the volume points back at the claim; the volume
// mode matches how the containers use it (volumeMounts or volumeDevices);
// a generic ephemeral volume's claim belongs to the pod. The claim is
// returned too.
func (m *Manager) boundVolume(ctx context.Context, pod *corev1.Pod, volName, claimName string, ephemeral bool) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume, error) {
	pvc, err := m.get.PersistentVolumeClaim(ctx, pod.Namespace, claimName)
	if err != nil || pvc == nil {
		return nil, nil, fmt.Errorf("failed to fetch PVC from API server: %w", orNil(err))
	}
	if ephemeral && !metav1.IsControlledBy(pvc, pod) {
		return nil, nil, fmt.Errorf("PVC %s/%s was not created for pod %s/%s (pod is not owner)", pvc.Namespace, pvc.Name, pod.Namespace, pod.Name)
	}
	if pvc.DeletionTimestamp != nil {
		return nil, nil, errors.New("PVC is being deleted")
	}
	if pvc.Status.Phase != corev1.ClaimBound {
		return nil, nil, errors.New("PVC is not bound")
	}
	if pvc.Spec.VolumeName == "" {
		return nil, nil, errors.New("PVC has empty pvc.Spec.VolumeName")
	}
	pv, err := m.get.PersistentVolume(ctx, pvc.Spec.VolumeName)
	if err != nil || pv == nil {
		return nil, nil, fmt.Errorf("failed to fetch PV %s from API server: %w", pvc.Spec.VolumeName, orNil(err))
	}
	if pv.Spec.ClaimRef == nil {
		return nil, nil, fmt.Errorf("found PV object %s but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim", pv.Name)
	}
	if pv.Spec.ClaimRef.UID != pvc.UID {
		return nil, nil, fmt.Errorf("found PV object %s but its pv.Spec.ClaimRef.UID %s does not point to claim.UID %s", pv.Name, pv.Spec.ClaimRef.UID, pvc.UID)
	}
	mode := corev1.PersistentVolumeFilesystem
	if pv.Spec.VolumeMode != nil {
		mode = *pv.Spec.VolumeMode
	}
	mounts, devices := volumeUses(pod)
	if mounts[volName] && mode == corev1.PersistentVolumeBlock {
		return nil, nil, fmt.Errorf("volume %s has volumeMode %s, but is specified in volumeMounts", volName, mode)
	}
	if devices[volName] && mode != corev1.PersistentVolumeBlock {
		return nil, nil, fmt.Errorf("volume %s has volumeMode %s, but is specified in volumeDevices", volName, mode)
	}
	return pvc, pv, nil
}

func orNil(err error) error {
	if err == nil {
		return errors.New("<nil>")
	}
	return err
}

// volumeUses says which volumes the pod's containers mount and which
// they use as devices.
func volumeUses(pod *corev1.Pod) (mounts, devices map[string]bool) {
	mounts, devices = map[string]bool{}, map[string]bool{}
	add := func(vm []corev1.VolumeMount, vd []corev1.VolumeDevice) {
		for _, v := range vm {
			mounts[v.Name] = true
		}
		for _, d := range vd {
			devices[d.Name] = true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		add(c.VolumeMounts, c.VolumeDevices)
	}
	for _, c := range pod.Spec.Containers {
		add(c.VolumeMounts, c.VolumeDevices)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		add(c.VolumeMounts, c.VolumeDevices)
	}
	return mounts, devices
}

// mountLocal binds a local volume's directory at
// <pod>/volumes/kubernetes.io~local-volume/<pv name>, read-only for a
// read-only claim and with the volume's mount options, as upstream; a
// writable one gets the pod's fsGroup (honouring fsGroupChangePolicy). A
// local path that is a block device is formatted if empty and mounted once
// for the node with the mount options (device.go), and that mount is bound.
func (m *Manager) mountLocal(pod *corev1.Pod, volName string, pv *corev1.PersistentVolume, readOnly bool) (Mounted, error) {
	path, err := localPath(pv)
	if err != nil {
		return Mounted{}, setUpError(volName, err)
	}
	if err := checkName(pv.Name); err != nil {
		return Mounted{}, setUpError(volName, err)
	}
	kind, _ := hostFileType(path)
	options := pvMountOptions(pv)
	switch kind {
	case corev1.HostPathDirectory:
	case corev1.HostPathBlockDev:
		// Mounted once for the node; the pod gets a bind of that mount.
		m.devices.Lock()
		defer m.devices.Unlock()
		global := filepath.Join(m.deviceMountsDir(), pv.Name)
		if err := mountDevice(path, global, kptr.Deref(pv.Spec.Local.FSType, ""), options); err != nil {
			return Mounted{}, setUpError(volName, fmt.Errorf("local volume %s: %w", pv.Name, err))
		}
		path, options = global, nil
	default:
		return Mounted{}, setUpError(volName, fmt.Errorf("local volume %s: path %s is not a directory", pv.Name, path))
	}
	dir := m.volumeDir(pod.UID, pluginLocal, pv.Name)
	if mounted, err := isMountPoint(dir); err != nil {
		return Mounted{}, setUpError(volName, err)
	} else if !mounted {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return Mounted{}, setUpError(volName, err)
		}
		flags, err := bindMountFlags(options)
		if err != nil {
			return Mounted{}, setUpError(volName, fmt.Errorf("local volume %s: %w", pv.Name, err))
		}
		if readOnly {
			flags |= unix.MS_RDONLY
		}
		if err := bindMountWith(path, dir, flags); err != nil {
			return Mounted{}, setUpError(volName, err)
		}
		if gid := podFSGroup(pod); gid != nil && !readOnly {
			if err := setOwnership(dir, *gid, false, podFSGroupChangePolicy(pod)); err != nil {
				return Mounted{}, setUpError(volName, err)
			}
		}
	}
	return Mounted{HostPath: dir, ReadOnly: readOnly}, nil
}

// mapLocalBlock hands over a local volume's block device itself.
func (m *Manager) mapLocalBlock(volName string, pv *corev1.PersistentVolume, readOnly bool) (Mounted, error) {
	path, err := localPath(pv)
	if err != nil {
		return Mounted{}, setUpError(volName, err)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return Mounted{}, setUpError(volName, fmt.Errorf("local volume %s: %w", pv.Name, err))
	}
	if ok, err := isBlockDevice(real); err != nil {
		return Mounted{}, setUpError(volName, err)
	} else if !ok {
		return Mounted{}, setUpError(volName, fmt.Errorf("local volume %s has volumeMode Block but %s is not a block device", pv.Name, path))
	}
	return Mounted{HostPath: real, ReadOnly: readOnly, Block: true}, nil
}

// localPath is a local volume's path, which must exist and be free of
// ".." components (upstream's messages).
func localPath(pv *corev1.PersistentVolume) (string, error) {
	path := pv.Spec.Local.Path
	if path == "" {
		return "", fmt.Errorf("LocalVolume volume %q path is empty", pv.Name)
	}
	if err := noBacksteps(path); err != nil {
		return "", fmt.Errorf("invalid path: %s %w", path, err)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("local volume %s: path %s does not exist on this node: %w", pv.Name, path, err)
	}
	return path, nil
}

// checkNodeAffinity says whether this node satisfies the volume's
// required node affinity (spec.nodeAffinity.required, or the old alpha
// annotation when that is all there is), with upstream's message.
func checkNodeAffinity(pv *corev1.PersistentVolume, nodeName string, nodeLabels map[string]string) error {
	var sel *corev1.NodeSelector
	switch {
	case pv.Spec.NodeAffinity != nil:
		sel = pv.Spec.NodeAffinity.Required
	case pv.Annotations[alphaNodeAffinityAnnotation] != "":
		var na corev1.NodeAffinity
		if err := json.Unmarshal([]byte(pv.Annotations[alphaNodeAffinityAnnotation]), &na); err != nil {
			return fmt.Errorf("invalid %s annotation: %w", alphaNodeAffinityAnnotation, err)
		}
		sel = na.RequiredDuringSchedulingIgnoredDuringExecution
	}
	if sel == nil {
		return nil
	}
	ok, err := matchNodeSelector(sel, nodeName, nodeLabels)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no matching NodeSelectorTerms")
	}
	return nil
}

// matchNodeSelector: any term matches; within a term every expression
// (on labels) and field (metadata.name only) must; an empty term matches
// nothing. An invalid term matches nothing and is reported only when no
// term matches, as upstream's lazy-error selector.
func matchNodeSelector(sel *corev1.NodeSelector, nodeName string, nodeLabels map[string]string) (bool, error) {
	var errs []error
	for _, term := range sel.NodeSelectorTerms {
		if len(term.MatchExpressions) == 0 && len(term.MatchFields) == 0 {
			continue
		}
		ok, err := matchTerm(term, nodeName, nodeLabels)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			return true, nil
		}
	}
	return false, utilerrors.NewAggregate(errs)
}

var nodeSelectorOps = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn:           selection.In,
	corev1.NodeSelectorOpNotIn:        selection.NotIn,
	corev1.NodeSelectorOpExists:       selection.Exists,
	corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt:           selection.GreaterThan,
	corev1.NodeSelectorOpLt:           selection.LessThan,
}

func matchTerm(term corev1.NodeSelectorTerm, nodeName string, nodeLabels map[string]string) (bool, error) {
	sel := labels.NewSelector()
	for _, e := range term.MatchExpressions {
		op, ok := nodeSelectorOps[e.Operator]
		if !ok {
			return false, fmt.Errorf("%q is not a valid label selector operator", e.Operator)
		}
		r, err := labels.NewRequirement(e.Key, op, e.Values)
		if err != nil {
			return false, err
		}
		sel = sel.Add(*r)
	}
	if !sel.Matches(labels.Set(nodeLabels)) {
		return false, nil
	}
	for _, f := range term.MatchFields {
		if f.Key != "metadata.name" {
			return false, fmt.Errorf("%q is not a valid field selector key", f.Key)
		}
		if len(f.Values) != 1 {
			return false, fmt.Errorf("a field selector on metadata.name takes exactly one value, not %d", len(f.Values))
		}
		var fs fields.Selector
		switch f.Operator {
		case corev1.NodeSelectorOpIn:
			fs = fields.OneTermEqualSelector("metadata.name", f.Values[0])
		case corev1.NodeSelectorOpNotIn:
			fs = fields.OneTermNotEqualSelector("metadata.name", f.Values[0])
		default:
			return false, fmt.Errorf("%q is not a valid field selector operator", f.Operator)
		}
		if !fs.Matches(fields.Set{"metadata.name": nodeName}) {
			return false, nil
		}
	}
	return true, nil
}

// nodeLabels are the node's labels now (Options.NodeLabels).
func (m *Manager) nodeLabels() map[string]string {
	if m.opts.NodeLabels == nil {
		return nil
	}
	return m.opts.NodeLabels()
}
