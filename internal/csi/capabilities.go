package csi

import (
	"context"
	"fmt"
	"sync"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
)

// VolumeCapability describes how a volume is used, in Kubernetes terms. The
// Client turns it into the CSI VolumeCapability of each request, choosing
// the CSI access mode from the driver's SINGLE_NODE_MULTI_WRITER capability
// of the service being called (controller for controller RPCs, node for
// node RPCs), as external-provisioner, external-attacher and the kubelet do.
type VolumeCapability struct {
	// AccessModes are the PV's (or, for CreateVolume, the claim's)
	// access modes.
	AccessModes []corev1.PersistentVolumeAccessMode
	// Block is true for volumeMode: Block; FSType and MountFlags are
	// then ignored.
	Block      bool
	FSType     string
	MountFlags []string
}

// Topology is one CSI topology segment map, e.g.
// {"topology.moorage.io/node": "n1"}.
type Topology map[string]string

// csi builds one CSI capability carrying the access mode that the whole set
// of AccessModes maps to (csi-lib-utils ToCSIAccessMode, used by
// external-attacher and by the kubelet for one mode at a time).
func (v VolumeCapability) csi(singleNodeMultiWriter bool) (*csipb.VolumeCapability, error) {
	mode, err := accessMode(v.AccessModes, singleNodeMultiWriter)
	if err != nil {
		return nil, err
	}
	return v.withMode(mode), nil
}

// csiPerMode builds one CSI capability per access mode, as
// external-provisioner's getVolumeCapabilities does for CreateVolume.
func (v VolumeCapability) csiPerMode(singleNodeMultiWriter bool) ([]*csipb.VolumeCapability, error) {
	if len(v.AccessModes) == 0 {
		return nil, fmt.Errorf("%w: no access modes", ErrInvalidRequest)
	}
	for _, m := range v.AccessModes {
		// Kubernetes validation forbids this mix on a claim; per-mode
		// mapping alone would not notice it.
		if m == corev1.ReadWriteOncePod && len(v.AccessModes) > 1 {
			return nil, fmt.Errorf("%w: ReadWriteOncePod cannot be combined with other access modes", ErrInvalidRequest)
		}
	}
	caps := make([]*csipb.VolumeCapability, 0, len(v.AccessModes))
	for _, m := range v.AccessModes {
		mode, err := accessMode([]corev1.PersistentVolumeAccessMode{m}, singleNodeMultiWriter)
		if err != nil {
			return nil, err
		}
		caps = append(caps, v.withMode(mode))
	}
	return caps, nil
}

func (v VolumeCapability) withMode(mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	c := &csipb.VolumeCapability{AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode}}
	if v.Block {
		c.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{
			FsType:     v.FSType,
			MountFlags: v.MountFlags,
		}}
	}
	return c
}

// accessMode maps Kubernetes access modes to one CSI access mode. The table
// follows kubernetes-csi/csi-lib-utils accessmodes/access_modes.go
// (ToCSIAccessMode; used by external-provisioner getVolumeCapability and
// external-attacher) and kubernetes/kubernetes pkg/volume/csi/csi_client.go
// (asCSIAccessModeV1 / asSingleNodeMultiWriterCapableCSIAccessModeV1):
//
//	Kubernetes        driver without SNMW        driver with SINGLE_NODE_MULTI_WRITER
//	ReadWriteMany     MULTI_NODE_MULTI_WRITER    MULTI_NODE_MULTI_WRITER (wins over the others)
//	ReadOnlyMany      MULTI_NODE_READER_ONLY     MULTI_NODE_READER_ONLY (not with ReadWriteOnce)
//	ReadWriteOnce     SINGLE_NODE_WRITER         SINGLE_NODE_MULTI_WRITER (not with ReadOnlyMany)
//	ReadWriteOncePod  SINGLE_NODE_WRITER         SINGLE_NODE_SINGLE_WRITER (alone only)
//
// Upstream maps ReadWriteOncePod to SINGLE_NODE_WRITER for drivers without
// the capability so that they keep working; the single-pod guarantee then
// comes from the scheduler, not the driver.
func accessMode(modes []corev1.PersistentVolumeAccessMode, singleNodeMultiWriter bool) (csipb.VolumeCapability_AccessMode_Mode, error) {
	set := map[corev1.PersistentVolumeAccessMode]bool{}
	for _, m := range modes {
		set[m] = true
	}
	switch {
	case set[corev1.ReadWriteOncePod]:
		if len(set) > 1 {
			return csipb.VolumeCapability_AccessMode_UNKNOWN, fmt.Errorf("%w: ReadWriteOncePod cannot be combined with other access modes", ErrInvalidRequest)
		}
		if singleNodeMultiWriter {
			return csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, nil
		}
		return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, nil
	case set[corev1.ReadWriteMany]:
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, nil
	case set[corev1.ReadOnlyMany] && set[corev1.ReadWriteOnce]:
		return csipb.VolumeCapability_AccessMode_UNKNOWN, fmt.Errorf("%w: CSI has no access mode for ReadOnlyMany together with ReadWriteOnce", ErrInvalidRequest)
	case set[corev1.ReadOnlyMany]:
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, nil
	case set[corev1.ReadWriteOnce]:
		if singleNodeMultiWriter {
			return csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, nil
		}
		return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, nil
	default:
		return csipb.VolumeCapability_AccessMode_UNKNOWN, fmt.Errorf("%w: unsupported access modes %v", ErrInvalidRequest, modes)
	}
}

// PluginCapabilitySet is GetPluginCapabilities decoded.
type PluginCapabilitySet struct {
	ControllerService bool // CONTROLLER_SERVICE
	// AccessibilityConstraints (VOLUME_ACCESSIBILITY_CONSTRAINTS): the
	// driver uses topology; CreateVolume's RESOURCE_EXHAUSTED may then
	// lead to Reschedule.
	AccessibilityConstraints bool
	OnlineExpansion          bool // VolumeExpansion ONLINE
	OfflineExpansion         bool // VolumeExpansion OFFLINE
}

func newPluginCapabilitySet(caps []*csipb.PluginCapability) PluginCapabilitySet {
	var s PluginCapabilitySet
	for _, c := range caps {
		switch c.GetService().GetType() {
		case csipb.PluginCapability_Service_CONTROLLER_SERVICE:
			s.ControllerService = true
		case csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS:
			s.AccessibilityConstraints = true
		}
		switch c.GetVolumeExpansion().GetType() {
		case csipb.PluginCapability_VolumeExpansion_ONLINE:
			s.OnlineExpansion = true
		case csipb.PluginCapability_VolumeExpansion_OFFLINE:
			s.OfflineExpansion = true
		}
	}
	return s
}

// ControllerCapabilitySet is ControllerGetCapabilities decoded; only the
// capabilities moorage acts on are kept.
type ControllerCapabilitySet struct {
	CreateDeleteVolume     bool
	PublishUnpublishVolume bool
	PublishReadonly        bool
	GetCapacity            bool
	ExpandVolume           bool
	SingleNodeMultiWriter  bool
}

func newControllerCapabilitySet(caps []*csipb.ControllerServiceCapability) ControllerCapabilitySet {
	var s ControllerCapabilitySet
	for _, c := range caps {
		switch c.GetRpc().GetType() {
		case csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME:
			s.CreateDeleteVolume = true
		case csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME:
			s.PublishUnpublishVolume = true
		case csipb.ControllerServiceCapability_RPC_PUBLISH_READONLY:
			s.PublishReadonly = true
		case csipb.ControllerServiceCapability_RPC_GET_CAPACITY:
			s.GetCapacity = true
		case csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME:
			s.ExpandVolume = true
		case csipb.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER:
			s.SingleNodeMultiWriter = true
		}
	}
	return s
}

// NodeCapabilitySet is NodeGetCapabilities decoded.
type NodeCapabilitySet struct {
	StageUnstageVolume    bool
	GetVolumeStats        bool
	ExpandVolume          bool
	VolumeCondition       bool
	SingleNodeMultiWriter bool
	VolumeMountGroup      bool
}

func newNodeCapabilitySet(caps []*csipb.NodeServiceCapability) NodeCapabilitySet {
	var s NodeCapabilitySet
	for _, c := range caps {
		switch c.GetRpc().GetType() {
		case csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME:
			s.StageUnstageVolume = true
		case csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS:
			s.GetVolumeStats = true
		case csipb.NodeServiceCapability_RPC_EXPAND_VOLUME:
			s.ExpandVolume = true
		case csipb.NodeServiceCapability_RPC_VOLUME_CONDITION:
			s.VolumeCondition = true
		case csipb.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER:
			s.SingleNodeMultiWriter = true
		case csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP:
			s.VolumeMountGroup = true
		}
	}
	return s
}

// cached holds a value fetched once. A failed fetch is not cached; the lock
// is held across the fetch so that concurrent first callers make one RPC.
type cached[T any] struct {
	mu  sync.Mutex
	ok  bool
	val T
}

func (c *cached[T]) get(ctx context.Context, fetch func(context.Context) (T, error)) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok {
		return c.val, nil
	}
	v, err := fetch(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	c.val, c.ok = v, true
	return v, nil
}
