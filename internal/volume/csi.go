package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/fsutil"
)

// CSI PersistentVolumes (spec.csi) are set up as the kubelet's CSI volume
// plugin sets them up (kubernetes/kubernetes pkg/volume/csi: csi_attacher.go
// MountDevice, csi_mounter.go SetUpAt, csi_block.go), through the
// NodeVolumes of their driver (Options.CSIDrivers), which keeps the spec's
// order and persists what is staged and published. The kubelet's layout:
//
//	Filesystem
//	  staging  <root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/globalmount
//	  target   <root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount
//	  record   <root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/vol_data.json
//	Block
//	  staging  <root>/plugins/kubernetes.io/csi/volumeDevices/staging/<pv>
//	  target   <root>/plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<uid>   (a device file)
//	  record   <root>/plugins/kubernetes.io/csi/volumeDevices/<pv>/data/vol_data.json
//	  pod link <root>/pods/<uid>/volumeDevices/kubernetes.io~csi/<pv> → target
//
// The records (the kubelet's vol_data.json) name the driver and volume
// handle of a pod's volume; they are written before anything is staged or
// published, so TearDown finds every publication of a pod on disk, without
// the PersistentVolume (which may be gone) and after an agent restart.
//
// TearDown unpublishes a pod's volumes, unmounts the rest of the pod's
// mounts (subPath binds into the volumes among them), then unstages the
// volumes no target uses any more. If a volume's driver is not registered,
// it is not unpublished behind the driver's back: TearDown fails and keeps
// the pod's directory (the generic unmount and removal never run), until
// the driver is registered again. A volume whose target does not exist is
// published nowhere, and does not need its driver.
//
// Attach (waiting for the VolumeAttachment, its publish context) and the
// node stage and publish secrets: attach.go.
//
// Not yet: VOLUME_MOUNT_GROUP, CSIDriver tokenRequests and requiresRepublish,
// inline (ephemeral) CSI volumes, SELinux mount options.

const (
	volDataFileName = "vol_data.json"
	// The kubelet's messages when a driver is not registered
	// (csi_attacher.go MountDevice, csi_block.go SetUpDevice,
	// csi_mounter.go TearDownAt); the rest comes from csi_client.go
	// newCsiDriverClient.
	noClientMountDevice = "kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient"
	noClientBlock       = "kubernetes.io/csi: blockMapper.SetUpDevice failed to get CSI client"
	noClientTearDown    = "kubernetes.io/csi: Unmounter.TearDownAt failed to get CSI client"
)

// volData is the kubelet's vol_data.json (csi_mounter.go volDataKey).
type volData struct {
	SpecVolID           string `json:"specVolID"`
	VolumeHandle        string `json:"volumeHandle"`
	DriverName          string `json:"driverName"`
	NodeName            string `json:"nodeName"`
	AttachmentID        string `json:"attachmentID"`
	VolumeLifecycleMode string `json:"volumeLifecycleMode,omitempty"`
}

func notRegistered(prefix, driver string) error {
	return fmt.Errorf("%s: driver name %s not found in the list of registered CSI drivers", prefix, driver)
}

// csiVolume is a CSI PersistentVolume being set up for a pod.
type csiVolume struct {
	nv         *csi.NodeVolumes
	pv         *corev1.PersistentVolume
	src        *corev1.CSIPersistentVolumeSource
	readOnly   bool
	capability csi.VolumeCapability
	// podInfo is added to the volume context at NodePublish when the
	// driver's CSIDriver asks for podInfoOnMount (csi_podinfo.go).
	podInfo map[string]string
}

func (v *csiVolume) data(nodeName string, mode string) volData {
	return volData{
		SpecVolID:           v.pv.Name,
		VolumeHandle:        v.src.VolumeHandle,
		DriverName:          v.src.Driver,
		NodeName:            nodeName,
		AttachmentID:        attachmentName(v.src.VolumeHandle, v.src.Driver, nodeName),
		VolumeLifecycleMode: mode,
	}
}

// setUpCSI stages and publishes a CSI PersistentVolume for the pod: a
// mount at the pod's target for volumeMode Filesystem, a device file for
// Block. readOnly is the claim's readOnly; spec.csi.readOnly also makes
// the publication read-only.
func (m *Manager) setUpCSI(ctx context.Context, pod *corev1.Pod, volName string, pv *corev1.PersistentVolume, readOnly, block bool) (Mounted, error) {
	src := pv.Spec.CSI
	stageOp, noClient := "MountVolume.MountDevice", noClientMountDevice
	if block {
		stageOp, noClient = "MapVolume.SetUpDevice", noClientBlock
	}
	fail := func(err error) (Mounted, error) {
		return Mounted{}, &Error{Volume: volName, Op: stageOp, Err: err}
	}
	if err := checkName(pv.Name); err != nil {
		return fail(err)
	}
	if block && (pv.Name == "staging" || pv.Name == "publish") {
		// Its record would land in the kubelet's staging or publish
		// directory of all block volumes.
		return fail(fmt.Errorf("PersistentVolume %q: a CSI block volume cannot have this name on moorage", pv.Name))
	}
	if src.Driver == "" || src.VolumeHandle == "" {
		return fail(fmt.Errorf("PersistentVolume %q: spec.csi.driver and spec.csi.volumeHandle are required", pv.Name))
	}
	nv, ok := m.csiDriver(src.Driver)
	if !ok {
		return fail(notRegistered(noClient, src.Driver))
	}
	modes := pv.Spec.AccessModes
	if len(modes) == 0 {
		// The kubelet sends ReadWriteOnce for a volume without access
		// modes (validation requires one, so only old objects lack it).
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	v := &csiVolume{nv: nv, pv: pv, src: src, readOnly: readOnly || src.ReadOnly,
		capability: csi.VolumeCapability{AccessModes: modes, Block: block}}
	if !block {
		v.capability.FSType = src.FSType
		v.capability.MountFlags = pvMountOptions(pv)
	}
	defer m.csiVolumes.lock(csiVolumeKey(src.Driver, src.VolumeHandle))()
	if block {
		return m.mapCSIBlock(ctx, pod, volName, v)
	}
	return m.mountCSI(ctx, pod, volName, v)
}

// mountCSI publishes a Filesystem volume at the pod's target, then gives
// it the pod's fsGroup if the driver's fsGroupPolicy says so (once: the
// ready file records it).
func (m *Manager) mountCSI(ctx context.Context, pod *corev1.Pod, volName string, v *csiVolume) (Mounted, error) {
	target := csi.PublishPath(m.root, string(pod.UID), v.pv.Name)
	setUpFail := func(err error) (Mounted, error) {
		return Mounted{}, &Error{Volume: volName, Op: "MountVolume.SetUp", Err: err}
	}
	policy, err := m.csiFSGroupPolicy(ctx, v.src.Driver)
	if err != nil {
		return setUpFail(fmt.Errorf("kubernetes.io/csi: mounter.SetupAt failed to check fsGroup policy: %w", err))
	}
	info, modeErr, err := m.csiPublishInfo(ctx, v.src.Driver, pod) // csi_podinfo.go
	if err != nil {
		return setUpFail(fmt.Errorf("kubernetes.io/csi: mounter.SetUpAt failed to assemble volume attributes: %w", err))
	}
	if modeErr != nil {
		return Mounted{}, &Error{Volume: volName, Op: "MountVolume.NewMounter initialization", Err: modeErr}
	}
	v.podInfo = info
	record := filepath.Join(filepath.Dir(target), volDataFileName)
	if err := writeVolData(record, v.data(m.opts.NodeName, string(storagev1.VolumeLifecyclePersistent))); err != nil {
		return Mounted{}, &Error{Volume: volName, Op: "MountVolume.MountDevice", Err: err}
	}
	staging := csi.StagingPath(m.root, v.src.Driver, v.src.VolumeHandle)
	if err := m.stageAndPublish(ctx, volName, v, staging, target, fsOps, "mount point", isMountPoint); err != nil {
		return Mounted{}, err
	}
	ready := m.readyFile(pod.UID, pluginCSI, v.pv.Name)
	if _, err := os.Stat(ready); err != nil {
		if gid := podFSGroup(pod); gid != nil && csiAppliesFSGroup(policy, v.src.FSType, v.pv.Spec.AccessModes, v.readOnly) {
			if err := setOwnership(target, *gid, false, podFSGroupChangePolicy(pod)); err != nil {
				return setUpFail(fmt.Errorf("applyFSGroup failed for vol %s: %v", v.src.VolumeHandle, err))
			}
		}
		if err := writeReady(ready); err != nil {
			return setUpFail(err)
		}
	}
	return Mounted{HostPath: target, ReadOnly: v.readOnly}, nil
}

// mapCSIBlock publishes a Block volume as a device file at the kubelet's
// per-pod publish path, and links it from the pod's volumeDevices
// directory (which also tells TearDown the pod uses it).
func (m *Manager) mapCSIBlock(ctx context.Context, pod *corev1.Pod, volName string, v *csiVolume) (Mounted, error) {
	const stageOp = "MapVolume.SetUpDevice"
	target := m.csiBlockPublish(v.pv.Name, pod.UID)
	if err := writeVolData(m.csiBlockData(v.pv.Name), v.data(m.opts.NodeName, "")); err != nil {
		return Mounted{}, &Error{Volume: volName, Op: stageOp, Err: err}
	}
	if err := ensureSymlink(target, m.csiPodDeviceLink(pod.UID, v.pv.Name)); err != nil {
		return Mounted{}, &Error{Volume: volName, Op: stageOp, Err: err}
	}
	info, modeErr, err := m.csiPublishInfo(ctx, v.src.Driver, pod) // csi_podinfo.go
	if err != nil {
		return Mounted{}, &Error{Volume: volName, Op: "MapVolume.MapPodDevice", Err: fmt.Errorf("kubernetes.io/csi: blockMapper.publishVolumeForBlock failed to assemble volume attributes: %w", err)}
	}
	if modeErr != nil {
		return Mounted{}, &Error{Volume: volName, Op: "MapVolume.NewBlockVolumeMapper initialization", Err: modeErr}
	}
	v.podInfo = info
	if err := m.stageAndPublish(ctx, volName, v, m.csiBlockStaging(v.pv.Name), target, blockOps, "block device", isBlockDeviceFile); err != nil {
		return Mounted{}, err
	}
	return Mounted{HostPath: target, ReadOnly: v.readOnly, Block: true}, nil
}

// stageAndPublish stages the volume and publishes it at target, then
// checks that target is what the driver should have made (is(target)).
// A target recorded as published that is not there (its mount was removed
// behind the driver's back) is unpublished first, so that it is published
// again rather than handed to the pod empty. Only when something is to be
// staged or published does it wait for the volume's attachment and read
// its secrets (attach.go). The caller holds the volume's lock.
func (m *Manager) stageAndPublish(ctx context.Context, volName string, v *csiVolume, staging, target string, ops csiOps, what string, is func(string) (bool, error)) error {
	fail := func(op string, err error) error { return &Error{Volume: volName, Op: op, Err: err} }
	id := v.src.VolumeHandle
	if st, ok := v.nv.Volume(id); ok && st.Targets[target] == csi.StatePublished {
		if ok, err := is(target); err != nil {
			return fail(ops.publish, err)
		} else if !ok {
			if err := v.nv.Unpublish(ctx, id, target); err != nil {
				return fail(ops.publish, err)
			}
		}
	}
	st, _ := v.nv.Volume(id)
	if st.Stage == csi.StateStaged && st.Targets[target] == csi.StatePublished {
		return nil
	}
	publishContext, err := m.publishContext(ctx, volName, v, ops)
	if err != nil {
		return err
	}
	if st.Stage != csi.StateStaged {
		secrets, err := m.stageSecrets(ctx, volName, v, ops)
		if err != nil {
			return err
		}
		if err := v.nv.Stage(ctx, csi.StageRequest{
			VolumeID:       id,
			StagingPath:    staging,
			Capability:     v.capability,
			PublishContext: publishContext,
			VolumeContext:  v.src.VolumeAttributes,
			Secrets:        secrets,
		}); err != nil {
			return fail(ops.stage, err)
		}
	}
	secrets, err := m.publishSecrets(ctx, volName, v, ops)
	if err != nil {
		return err
	}
	if err := v.nv.Publish(ctx, csi.PublishRequest{
		VolumeID:       id,
		TargetPath:     target,
		ReadOnly:       v.readOnly,
		Capability:     v.capability,
		PublishContext: publishContext,
		VolumeContext:  v.publishContext(),
		Secrets:        secrets,
	}); err != nil {
		return fail(ops.publish, err)
	}
	if ok, err := is(target); err != nil {
		return fail(ops.publish, err)
	} else if !ok {
		return fail(ops.publish, fmt.Errorf("driver %s published volume %s at %s, but it is not a %s there", v.src.Driver, id, target, what))
	}
	return nil
}

// csiTarget is one publication of a pod's CSI volume, found from its
// records.
type csiTarget struct {
	data   volData
	pv     string
	target string
	block  bool
}

// csiTargets lists the CSI publications recorded for the pod.
func (m *Manager) csiTargets(uid types.UID) ([]csiTarget, error) {
	var out []csiTarget
	var errs []error
	fsDir := filepath.Join(m.podDir(uid), "volumes", pluginCSI)
	names, err := readDirNames(fsDir)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		d, err := readVolData(filepath.Join(fsDir, name, volDataFileName))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the record comes first: nothing was staged or published
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, csiTarget{data: d, pv: name, target: filepath.Join(fsDir, name, "mount")})
	}
	linkDir := filepath.Join(m.podDir(uid), "volumeDevices", pluginCSI)
	if names, err = readDirNames(linkDir); err != nil {
		return nil, err
	}
	for _, name := range names {
		if checkName(name) != nil || name == "staging" || name == "publish" {
			continue
		}
		d, err := readVolData(m.csiBlockData(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed only once the volume was unstaged: nothing of it is left for this pod
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, csiTarget{data: d, pv: name, target: m.csiBlockPublish(name, uid), block: true})
	}
	return out, errors.Join(errs...)
}

// unpublishCSI unpublishes every CSI publication of the pod and returns
// them. Nothing is done unless every driver needed is registered.
func (m *Manager) unpublishCSI(ctx context.Context, uid types.UID) ([]csiTarget, error) {
	targets, err := m.csiTargets(uid)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, t := range targets {
		if _, ok := m.csiDriver(t.data.DriverName); !ok {
			if _, err := os.Lstat(t.target); errors.Is(err, fs.ErrNotExist) {
				continue // nothing can be published where nothing is
			}
			errs = append(errs, fmt.Errorf("%w (volume %s is published at %s; the pod's volumes are kept until the driver is registered again)",
				notRegistered(noClientTearDown, t.data.DriverName), t.data.VolumeHandle, t.target))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, t := range targets {
		nv, ok := m.csiDriver(t.data.DriverName)
		if !ok {
			continue
		}
		if err := m.unpublishOne(ctx, nv, t); err != nil {
			errs = append(errs, err)
		}
	}
	return targets, errors.Join(errs...)
}

func (m *Manager) unpublishOne(ctx context.Context, nv *csi.NodeVolumes, t csiTarget) error {
	defer m.csiVolumes.lock(csiVolumeKey(t.data.DriverName, t.data.VolumeHandle))()
	if err := nv.Unpublish(ctx, t.data.VolumeHandle, t.target); err != nil {
		return fmt.Errorf("kubernetes.io/csi: Unmounter.TearDownAt failed: %w", err)
	}
	if mounted, err := isMountPoint(t.target); err != nil {
		return err
	} else if mounted {
		return fmt.Errorf("driver %s unpublished volume %s from %s, but something is still mounted there", t.data.DriverName, t.data.VolumeHandle, t.target)
	}
	if t.block {
		_ = os.Remove(filepath.Dir(t.target)) // publish/<pv>, once no pod uses it
	}
	return nil
}

// unstageCSI unstages the volumes of targets that no target uses any more,
// and then removes their node-wide record. A volume whose driver is not
// registered is left as it is: it is not the pod's data.
func (m *Manager) unstageCSI(ctx context.Context, targets []csiTarget) error {
	sort.Slice(targets, func(i, j int) bool { return targets[i].target < targets[j].target })
	var errs []error
	for _, t := range targets {
		nv, ok := m.csiDriver(t.data.DriverName)
		if !ok {
			continue
		}
		if err := m.unstageOne(ctx, nv, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) unstageOne(ctx context.Context, nv *csi.NodeVolumes, t csiTarget) error {
	d := t.data
	defer m.csiVolumes.lock(csiVolumeKey(d.DriverName, d.VolumeHandle))()
	st, staged := nv.Volume(d.VolumeHandle)
	if staged && len(st.Targets) > 0 {
		return nil // another pod uses it
	}
	if staged {
		if err := nv.Unstage(ctx, d.VolumeHandle); err != nil {
			return fmt.Errorf("kubernetes.io/csi: attacher.UnmountDevice failed: %w", err)
		}
	}
	if !t.block {
		_ = os.Remove(filepath.Dir(csi.StagingPath(m.root, d.DriverName, d.VolumeHandle))) // once empty
		return nil
	}
	record := m.csiBlockData(t.pv)
	if err := os.Remove(record); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(record))               // <pv>/data
	_ = os.Remove(filepath.Dir(filepath.Dir(record))) // <pv>
	return nil
}

func (m *Manager) csiDriver(name string) (*csi.NodeVolumes, bool) {
	if m.opts.CSIDrivers == nil {
		return nil, false
	}
	nv, ok := m.opts.CSIDrivers(name)
	return nv, ok && nv != nil
}

// csiFSGroupPolicy is the driver's CSIDriver spec.fsGroupPolicy, as the
// kubelet reads it (csi_mounter.go getFSGroupPolicy): without a CSIDriver
// object, ReadWriteOnceWithFSType.
func (m *Manager) csiFSGroupPolicy(ctx context.Context, driver string) (storagev1.FSGroupPolicy, error) {
	def := storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy
	if m.opts.CSIDriver == nil {
		return def, nil
	}
	d, err := m.opts.CSIDriver(ctx, driver)
	if apierrors.IsNotFound(err) || (err == nil && d == nil) {
		return def, nil
	}
	if err != nil {
		return def, err
	}
	if d.Spec.FSGroupPolicy == nil || *d.Spec.FSGroupPolicy == "" {
		return def, errors.New("kubernetes.io/csi: expected valid fsGroupPolicy, received nil value or empty string")
	}
	return *d.Spec.FSGroupPolicy, nil
}

// csiAppliesFSGroup is the kubelet's csiMountMgr.supportsFSGroup: never
// for a read-only publication or policy None; always for File; otherwise
// (ReadWriteOnceWithFSType) when the volume has an fsType and a
// ReadWriteOnce or ReadWriteOncePod access mode (k8s.io/api storage/v1
// FSGroupPolicy's documentation).
func csiAppliesFSGroup(policy storagev1.FSGroupPolicy, fsType string, modes []corev1.PersistentVolumeAccessMode, readOnly bool) bool {
	switch {
	case readOnly || policy == storagev1.NoneFSGroupPolicy:
		return false
	case policy == storagev1.FileFSGroupPolicy:
		return true
	case fsType == "":
		return false
	}
	return slices.Contains(modes, corev1.ReadWriteOnce) || slices.Contains(modes, corev1.ReadWriteOncePod)
}

func (m *Manager) csiBlockDir() string {
	return filepath.Join(m.root, "plugins", "kubernetes.io", "csi", "volumeDevices")
}

func (m *Manager) csiBlockStaging(pv string) string {
	return filepath.Join(m.csiBlockDir(), "staging", pv)
}

func (m *Manager) csiBlockPublish(pv string, uid types.UID) string {
	return filepath.Join(m.csiBlockDir(), "publish", pv, string(uid))
}

func (m *Manager) csiBlockData(pv string) string {
	return filepath.Join(m.csiBlockDir(), pv, "data", volDataFileName)
}

// csiPodDeviceLink is the kubelet's pod device map path of a block volume.
func (m *Manager) csiPodDeviceLink(uid types.UID, pv string) string {
	return filepath.Join(m.podDir(uid), "volumeDevices", pluginCSI, pv)
}

func csiVolumeKey(driver, handle string) string { return driver + "\x00" + handle }

// attachmentName is the kubelet's VolumeAttachment name of a volume on a
// node (csi_attacher.go getAttachmentName).
func attachmentName(handle, driver, node string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(handle+driver+node)))
}

// writeVolData writes a record atomically, unless it holds that already
// (SetUp runs on every sync).
func writeVolData(path string, d volData) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, b, 0o640)
}

func readVolData(path string) (volData, error) {
	var d volData
	b, err := os.ReadFile(path)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("CSI volume record %s: %w", path, err)
	}
	if d.DriverName == "" || d.VolumeHandle == "" {
		return d, fmt.Errorf("CSI volume record %s: no driver name or volume handle", path)
	}
	return d, nil
}

func readDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// ensureSymlink makes link a symlink to target.
func ensureSymlink(target, link string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o750); err != nil {
		return err
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Symlink(target, link)
}

func isBlockDeviceFile(path string) (bool, error) {
	ok, err := isBlockDevice(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return ok, err
}
