package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Attach, and the inputs of NodeStage and NodePublish, as the kubelet's CSI
// plugin gets them (kubernetes/kubernetes pkg/volume/csi: csi_attacher.go
// WaitForAttach and MountDevice, csi_mounter.go SetUpAt, csi_block.go,
// csi_plugin.go getPublishContext and skipAttach; the operation names of
// pkg/volume/util/operationexecutor).
//
// A volume whose driver requires attach is attached by the attach/detach
// controller through a VolumeAttachment named like attachmentName. Before
// such a volume is staged or published here:
//
//  1. it must be in the node's status.volumesInUse (the kubelet's
//     VerifyControllerAttachedVolume waits for that, so that the
//     controller never detaches a volume the node is about to mount); the
//     Manager lists what it has recorded (VolumesInUse: the records of
//     csi.go, written before anything is staged and removed after
//     unstaging) and asks the agent to report it (ReportVolumesInUse);
//  2. its VolumeAttachment must report attached (WaitForAttach): an
//     attachError fails the mount with the driver's message at once; no
//     attachment within Options.AttachWait fails it with the kubelet's
//     "is not attached" message, and the next SetUp tries again;
//  3. the attachment's status.attachmentMetadata is the publish context
//     of NodeStageVolume and NodePublishVolume.
//
// spec.csi.nodeStageSecretRef (read only for a driver that stages) and
// nodePublishSecretRef are read through the Getter and passed to
// NodeStageVolume and NodePublishVolume; a secret that cannot be read
// fails the mount with the kubelet's message.
//
// All of this happens only when something is to be staged or published:
// a volume already staged and published for the pod costs no API read.
//
// Not done: the check of the node's status.volumesAttached (the volume's
// VolumeAttachment is checked instead).

const errNotInUse = "Volume has not been added to the list of VolumesInUse in the node's volume status"

// reportedInUse is the set of volumes the node last reported in use.
type reportedInUse struct {
	mu    sync.Mutex
	names map[corev1.UniqueVolumeName]bool
}

func (r *reportedInUse) has(name corev1.UniqueVolumeName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[name]
}

// csiUniqueName is the kubelet's unique name of a CSI volume,
// kubernetes.io/csi/<driver>^<volume handle>.
func csiUniqueName(driver, handle string) corev1.UniqueVolumeName {
	return corev1.UniqueVolumeName("kubernetes.io/csi/" + driver + "^" + handle)
}

// VolumesInUse lists, sorted, the volumes this node must report in its
// status.volumesInUse: the CSI volumes recorded for its pods (being set
// up, staged or published, until they are unstaged) whose driver requires
// attach, as the kubelet reports attachable volumes it mounts or is about
// to mount.
func (m *Manager) VolumesInUse(ctx context.Context) []corev1.UniqueVolumeName {
	var records []volData
	podsDir := filepath.Join(m.root, "pods")
	uids, _ := readDirNames(podsDir)
	for _, uid := range uids {
		dir := filepath.Join(podsDir, uid, "volumes", pluginCSI)
		names, _ := readDirNames(dir)
		for _, name := range names {
			if d, err := readVolData(filepath.Join(dir, name, volDataFileName)); err == nil {
				records = append(records, d)
			}
		}
	}
	blockNames, _ := readDirNames(m.csiBlockDir())
	for _, name := range blockNames {
		if name == "staging" || name == "publish" {
			continue
		}
		if d, err := readVolData(m.csiBlockData(name)); err == nil {
			records = append(records, d)
		}
	}
	required := map[string]bool{}
	seen := map[corev1.UniqueVolumeName]bool{}
	var out []corev1.UniqueVolumeName
	for _, d := range records {
		req, ok := required[d.DriverName]
		if !ok {
			var err error
			if req, err = m.csiAttachRequired(ctx, d.DriverName); err != nil {
				req = true // when in doubt, in use: it is never detached under a mount
			}
			required[d.DriverName] = req
		}
		name := csiUniqueName(d.DriverName, d.VolumeHandle)
		if req && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// MarkVolumesReportedInUse records what the node's status.volumesInUse now
// holds (the agent calls it after writing it).
func (m *Manager) MarkVolumesReportedInUse(names []corev1.UniqueVolumeName) {
	set := make(map[corev1.UniqueVolumeName]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	m.inUse.mu.Lock()
	m.inUse.names = set
	m.inUse.mu.Unlock()
}

// csiAttachRequired is the kubelet's skipAttach, inverted: a driver
// requires attach unless its CSIDriver object says attachRequired: false.
func (m *Manager) csiAttachRequired(ctx context.Context, driver string) (bool, error) {
	if m.opts.CSIDriver == nil {
		return true, nil
	}
	d, err := m.opts.CSIDriver(ctx, driver)
	if apierrors.IsNotFound(err) || (err == nil && d == nil) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return d.Spec.AttachRequired == nil || *d.Spec.AttachRequired, nil
}

// csiOps are upstream's operation names for one volume mode.
type csiOps struct {
	wait, stage, publish string
	block                bool
}

var (
	fsOps    = csiOps{wait: "MountVolume.WaitForAttach", stage: "MountVolume.MountDevice", publish: "MountVolume.SetUp"}
	blockOps = csiOps{wait: "MapVolume.WaitForAttach", stage: "MapVolume.SetUpDevice", publish: "MapVolume.MapPodDevice", block: true}
)

// publishContext waits until the volume may be staged and returns its
// publish context (nil for a driver that does not attach, or when the
// Manager does not take part in attach).
func (m *Manager) publishContext(ctx context.Context, volName string, v *csiVolume, ops csiOps) (map[string]string, error) {
	if m.opts.VolumeAttachment == nil {
		return nil, nil
	}
	required, err := m.csiAttachRequired(ctx, v.src.Driver)
	if err != nil {
		return nil, &Error{Volume: volName, Op: ops.stage, Err: err}
	}
	if !required {
		return nil, nil
	}
	handle := v.src.VolumeHandle
	name := attachmentName(handle, v.src.Driver, m.opts.NodeName)
	unique := csiUniqueName(v.src.Driver, handle)
	deadline := time.Now().Add(m.opts.AttachWait)
	delay := 10 * time.Millisecond
	asked := false
	for {
		var last error
		if m.opts.ReportVolumesInUse != nil && !m.inUse.has(unique) {
			if !asked {
				m.opts.ReportVolumesInUse()
				asked = true
			}
			last = &Error{Volume: volName, Err: errors.New(errNotInUse)}
		} else {
			va, err := m.opts.VolumeAttachment(ctx, name)
			switch {
			case err != nil:
				last = fmt.Errorf("volume %v has GET error for volume attachment %v: %v", handle, name, err)
			case va.DeletionTimestamp != nil:
				return nil, &Error{Volume: volName, Op: ops.wait, Err: errors.New("volume attachment is being deleted")}
			case va.Status.Attached:
				return va.Status.AttachmentMetadata, nil
			case va.Status.AttachError != nil:
				return nil, &Error{Volume: volName, Op: ops.wait, Err: errors.New(va.Status.AttachError.Message)}
			default:
				last = fmt.Errorf("volume %v is not attached for volume attachment %v", handle, name)
			}
			last = &Error{Volume: volName, Op: ops.wait, Err: last}
		}
		if time.Now().Add(delay).After(deadline) {
			return nil, last
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(last, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// stageSecrets reads the volume's node-stage secret, for a driver that
// stages.
func (m *Manager) stageSecrets(ctx context.Context, volName string, v *csiVolume, ops csiOps) (map[string]string, error) {
	ref := v.src.NodeStageSecretRef
	if ref == nil {
		return nil, nil
	}
	caps, err := v.nv.NodeCapabilities(ctx)
	if err != nil {
		return nil, &Error{Volume: volName, Op: ops.stage, Err: err}
	}
	if !caps.StageUnstageVolume {
		return nil, nil
	}
	secrets, err := m.secretData(ctx, ref)
	if err == nil {
		return secrets, nil
	}
	if ops.block {
		err = fmt.Errorf("failed to get NodeStageSecretRef %s/%s: %v", ref.Namespace, ref.Name, err)
	} else {
		err = fmt.Errorf("fetching NodeStageSecretRef %s/%s failed: %v", ref.Namespace, ref.Name, err)
	}
	return nil, &Error{Volume: volName, Op: ops.stage, Err: err}
}

// publishSecrets reads the volume's node-publish secret.
func (m *Manager) publishSecrets(ctx context.Context, volName string, v *csiVolume, ops csiOps) (map[string]string, error) {
	ref := v.src.NodePublishSecretRef
	if ref == nil {
		return nil, nil
	}
	secrets, err := m.secretData(ctx, ref)
	if err == nil {
		return secrets, nil
	}
	if !ops.block { // the block mapper returns the error as it is
		err = fmt.Errorf("fetching NodePublishSecretRef %s/%s failed: %v", ref.Namespace, ref.Name, err)
	}
	return nil, &Error{Volume: volName, Op: ops.publish, Err: err}
}

// secretData is a secret's data as CSI secrets, as the kubelet's
// getCredentialsFromSecret reads it.
func (m *Manager) secretData(ctx context.Context, ref *corev1.SecretReference) (map[string]string, error) {
	s, err := m.get.Secret(ctx, ref.Namespace, ref.Name)
	if err == nil && s == nil {
		err = apierrors.NewNotFound(corev1.Resource("secrets"), ref.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes.io/csi: failed to find the secret %s in the namespace %s with error: %v", ref.Name, ref.Namespace, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}
