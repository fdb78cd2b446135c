package csi

import (
	"context"
	"fmt"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
)

// NodeInfo is NodeGetInfo's answer, the content of a CSINode driver entry.
type NodeInfo struct {
	NodeID string
	// MaxVolumes is 0 when the driver sets no limit.
	MaxVolumes int64
	// Topology is the node's accessible topology segment; nil if none.
	Topology Topology
}

// NodeGetInfo calls NodeGetInfo. An empty node ID is ErrInvalidResponse.
func (c *Client) NodeGetInfo(ctx context.Context) (NodeInfo, error) {
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	resp, err := c.node.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil {
		return NodeInfo{}, &Error{Op: OpNodeGetInfo, Err: err}
	}
	if resp.GetNodeId() == "" {
		return NodeInfo{}, &Error{Op: OpNodeGetInfo, Err: fmt.Errorf("%w: empty node ID", ErrInvalidResponse)}
	}
	info := NodeInfo{NodeID: resp.GetNodeId(), MaxVolumes: resp.GetMaxVolumesPerNode()}
	if t := resp.GetAccessibleTopology(); t != nil {
		info.Topology = Topology(t.GetSegments())
	}
	return info, nil
}

// NodeCapabilities calls NodeGetCapabilities once and caches the result.
func (c *Client) NodeCapabilities(ctx context.Context) (NodeCapabilitySet, error) {
	return c.nodeCaps.get(ctx, func(ctx context.Context) (NodeCapabilitySet, error) {
		ctx, cancel := c.callCtx(ctx, true)
		defer cancel()
		resp, err := c.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
		if err != nil {
			return NodeCapabilitySet{}, &Error{Op: OpNodeGetCapabilities, Err: err}
		}
		return newNodeCapabilitySet(resp.GetCapabilities()), nil
	})
}

// StageRequest is the input of NodeVolumes.Stage.
type StageRequest struct {
	VolumeID string
	// StagingPath is where the driver stages the volume, normally
	// StagingPath(root, driver, volumeHandle). Required even for drivers
	// that do not stage (it is then recorded but not used).
	StagingPath    string
	Capability     VolumeCapability
	PublishContext map[string]string // from ControllerPublish, if any
	VolumeContext  map[string]string
	Secrets        map[string]string
}

// PublishRequest is the input of NodeVolumes.Publish. There is no staging
// path: NodeVolumes passes the one it recorded at Stage.
type PublishRequest struct {
	VolumeID string
	// TargetPath is where the driver publishes the volume for one pod,
	// normally PublishPath(root, podUID, volumeName).
	TargetPath     string
	ReadOnly       bool
	Capability     VolumeCapability
	PublishContext map[string]string
	VolumeContext  map[string]string
	Secrets        map[string]string
}

// The four ordering-sensitive node RPCs are unexported on purpose: callers
// reach them only through NodeVolumes, which enforces the spec's order.

func (c *Client) nodeStage(ctx context.Context, req StageRequest) error {
	snmw, err := c.nodeSNMW(ctx)
	if err != nil {
		return err
	}
	capability, err := req.Capability.csi(snmw)
	if err != nil {
		return &Error{Op: OpNodeStageVolume, VolumeID: req.VolumeID, Err: err}
	}
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	_, err = c.node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId:          req.VolumeID,
		PublishContext:    req.PublishContext,
		StagingTargetPath: req.StagingPath,
		VolumeCapability:  capability,
		Secrets:           req.Secrets,
		VolumeContext:     req.VolumeContext,
	})
	if err != nil {
		return &Error{Op: OpNodeStageVolume, VolumeID: req.VolumeID, Err: err}
	}
	return nil
}

func (c *Client) nodeUnstage(ctx context.Context, volumeID, stagingPath string) error {
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	_, err := c.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: stagingPath})
	if err != nil {
		return &Error{Op: OpNodeUnstageVolume, VolumeID: volumeID, Err: err}
	}
	return nil
}

func (c *Client) nodePublish(ctx context.Context, req PublishRequest, stagingPath string) error {
	snmw, err := c.nodeSNMW(ctx)
	if err != nil {
		return err
	}
	capability, err := req.Capability.csi(snmw)
	if err != nil {
		return &Error{Op: OpNodePublishVolume, VolumeID: req.VolumeID, Err: err}
	}
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	_, err = c.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId:          req.VolumeID,
		PublishContext:    req.PublishContext,
		StagingTargetPath: stagingPath,
		TargetPath:        req.TargetPath,
		VolumeCapability:  capability,
		Readonly:          req.ReadOnly,
		Secrets:           req.Secrets,
		VolumeContext:     req.VolumeContext,
	})
	if err != nil {
		return &Error{Op: OpNodePublishVolume, VolumeID: req.VolumeID, Err: err}
	}
	return nil
}

func (c *Client) nodeUnpublish(ctx context.Context, volumeID, targetPath string) error {
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	_, err := c.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: targetPath})
	if err != nil {
		return &Error{Op: OpNodeUnpublishVolume, VolumeID: volumeID, Err: err}
	}
	return nil
}

func (c *Client) nodeSNMW(ctx context.Context) (bool, error) {
	caps, err := c.NodeCapabilities(ctx)
	return caps.SingleNodeMultiWriter, err
}

// NodeExpand calls NodeExpandVolume (after a ControllerExpand that asked
// for it, or for drivers without a controller). It returns the new size, 0
// if the driver did not report one. req.VolumePath is required.
func (c *Client) NodeExpand(ctx context.Context, req ExpandRequest) (int64, error) {
	fail := func(err error) (int64, error) {
		return 0, &Error{Op: OpNodeExpandVolume, VolumeID: req.VolumeID, Err: err}
	}
	if req.VolumeID == "" || req.VolumePath == "" || req.RequiredBytes <= 0 {
		return fail(fmt.Errorf("%w: missing volume ID, volume path or size", ErrInvalidRequest))
	}
	pbReq := &csipb.NodeExpandVolumeRequest{
		VolumeId:          req.VolumeID,
		VolumePath:        req.VolumePath,
		StagingTargetPath: req.StagingPath,
		CapacityRange:     &csipb.CapacityRange{RequiredBytes: req.RequiredBytes, LimitBytes: req.LimitBytes},
		Secrets:           req.Secrets,
	}
	if req.Capability != nil {
		snmw, err := c.nodeSNMW(ctx)
		if err != nil {
			return 0, err
		}
		capability, err := req.Capability.csi(snmw)
		if err != nil {
			return fail(err)
		}
		pbReq.VolumeCapability = capability
	}
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	resp, err := c.node.NodeExpandVolume(ctx, pbReq)
	if err != nil {
		return fail(err)
	}
	return resp.GetCapacityBytes(), nil
}

// Usage is one VolumeUsage entry; zero when the driver did not report it.
type Usage struct {
	Available int64
	Total     int64
	Used      int64
}

// VolumeStats is NodeGetVolumeStats' answer. Abnormal and Message are the
// volume condition (only when the driver has VOLUME_CONDITION).
type VolumeStats struct {
	Bytes    Usage
	Inodes   Usage
	Abnormal bool
	Message  string
}

// NodeGetVolumeStats calls NodeGetVolumeStats for a published volume.
func (c *Client) NodeGetVolumeStats(ctx context.Context, volumeID, volumePath, stagingPath string) (VolumeStats, error) {
	if volumeID == "" || volumePath == "" {
		return VolumeStats{}, &Error{Op: OpNodeGetVolumeStats, VolumeID: volumeID,
			Err: fmt.Errorf("%w: missing volume ID or volume path", ErrInvalidRequest)}
	}
	ctx, cancel := c.callCtx(ctx, true)
	defer cancel()
	resp, err := c.node.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{
		VolumeId:          volumeID,
		VolumePath:        volumePath,
		StagingTargetPath: stagingPath,
	})
	if err != nil {
		return VolumeStats{}, &Error{Op: OpNodeGetVolumeStats, VolumeID: volumeID, Err: err}
	}
	var out VolumeStats
	for _, u := range resp.GetUsage() {
		v := Usage{Available: u.GetAvailable(), Total: u.GetTotal(), Used: u.GetUsed()}
		switch u.GetUnit() {
		case csipb.VolumeUsage_BYTES:
			out.Bytes = v
		case csipb.VolumeUsage_INODES:
			out.Inodes = v
		}
	}
	if cond := resp.GetVolumeCondition(); cond != nil {
		out.Abnormal, out.Message = cond.GetAbnormal(), cond.GetMessage()
	}
	return out, nil
}
