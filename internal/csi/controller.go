package csi

import (
	"context"
	"fmt"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
)

// ControllerCapabilities calls ControllerGetCapabilities once and caches the
// result.
func (c *Client) ControllerCapabilities(ctx context.Context) (ControllerCapabilitySet, error) {
	return c.controllerCaps.get(ctx, func(ctx context.Context) (ControllerCapabilitySet, error) {
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := c.controller.ControllerGetCapabilities(ctx, &csipb.ControllerGetCapabilitiesRequest{})
		if err != nil {
			return ControllerCapabilitySet{}, &Error{Op: OpControllerGetCapabilities, Err: err}
		}
		return newControllerCapabilitySet(resp.GetCapabilities()), nil
	})
}

// controllerSNMW reports the controller's SINGLE_NODE_MULTI_WRITER
// capability, which picks the access-mode table for controller calls.
func (c *Client) controllerSNMW(ctx context.Context) (bool, error) {
	caps, err := c.ControllerCapabilities(ctx)
	return caps.SingleNodeMultiWriter, err
}

// CreateVolumeRequest is the input of CreateVolume.
type CreateVolumeRequest struct {
	// Name is the idempotency key: repeating CreateVolume with the same
	// Name returns the same volume (the provisioner uses "pvc-<uid>").
	Name          string
	RequiredBytes int64
	LimitBytes    int64 // 0: no limit
	// Capability becomes one CSI capability per access mode, as
	// external-provisioner sends them.
	Capability VolumeCapability
	Parameters map[string]string // StorageClass parameters, prefixed keys stripped
	Secrets    map[string]string
	// Requisite and Preferred are the accessibility requirements; both
	// empty means none.
	Requisite []Topology
	Preferred []Topology
}

// Volume is what CreateVolume returns.
type Volume struct {
	ID string
	// CapacityBytes is 0 when the driver does not know the size.
	CapacityBytes      int64
	Context            map[string]string
	AccessibleTopology []Topology
}

// CreateVolume calls CreateVolume. On RESOURCE_EXHAUSTED, Classify returns
// Reschedule.
func (c *Client) CreateVolume(ctx context.Context, req CreateVolumeRequest) (Volume, error) {
	fail := func(err error) (Volume, error) { return Volume{}, &Error{Op: OpCreateVolume, Err: err} }
	if req.Name == "" {
		return fail(fmt.Errorf("%w: missing name", ErrInvalidRequest))
	}
	snmw, err := c.controllerSNMW(ctx)
	if err != nil {
		return Volume{}, err
	}
	caps, err := req.Capability.csiPerMode(snmw)
	if err != nil {
		return fail(err)
	}
	pbReq := &csipb.CreateVolumeRequest{
		Name:               req.Name,
		VolumeCapabilities: caps,
		Parameters:         req.Parameters,
		Secrets:            req.Secrets,
	}
	if req.RequiredBytes > 0 || req.LimitBytes > 0 {
		pbReq.CapacityRange = &csipb.CapacityRange{RequiredBytes: req.RequiredBytes, LimitBytes: req.LimitBytes}
	}
	if len(req.Requisite) > 0 || len(req.Preferred) > 0 {
		pbReq.AccessibilityRequirements = &csipb.TopologyRequirement{
			Requisite: toCSITopologies(req.Requisite),
			Preferred: toCSITopologies(req.Preferred),
		}
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.controller.CreateVolume(ctx, pbReq)
	if err != nil {
		return fail(err)
	}
	v := resp.GetVolume()
	if v.GetVolumeId() == "" {
		return fail(fmt.Errorf("%w: no volume ID", ErrInvalidResponse))
	}
	return Volume{
		ID:                 v.GetVolumeId(),
		CapacityBytes:      v.GetCapacityBytes(),
		Context:            v.GetVolumeContext(),
		AccessibleTopology: fromCSITopologies(v.GetAccessibleTopology()),
	}, nil
}

// DeleteVolume calls DeleteVolume. The spec makes a missing volume an OK
// answer, so a NOT_FOUND here is a driver error (Final).
func (c *Client) DeleteVolume(ctx context.Context, volumeID string, secrets map[string]string) error {
	if volumeID == "" {
		return &Error{Op: OpDeleteVolume, Err: fmt.Errorf("%w: missing volume ID", ErrInvalidRequest)}
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	_, err := c.controller.DeleteVolume(ctx, &csipb.DeleteVolumeRequest{VolumeId: volumeID, Secrets: secrets})
	if err != nil {
		return &Error{Op: OpDeleteVolume, VolumeID: volumeID, Err: err}
	}
	return nil
}

// ControllerPublishRequest is the input of ControllerPublish (attach).
type ControllerPublishRequest struct {
	VolumeID      string
	NodeID        string // from NodeGetInfo, via CSINode
	Capability    VolumeCapability
	ReadOnly      bool
	VolumeContext map[string]string
	Secrets       map[string]string
}

// ControllerPublish calls ControllerPublishVolume and returns the publish
// context, which the attach controller stores in
// VolumeAttachment.status.attachmentMetadata for NodeStage/NodePublish.
func (c *Client) ControllerPublish(ctx context.Context, req ControllerPublishRequest) (map[string]string, error) {
	fail := func(err error) (map[string]string, error) {
		return nil, &Error{Op: OpControllerPublishVolume, VolumeID: req.VolumeID, Err: err}
	}
	if req.VolumeID == "" || req.NodeID == "" {
		return fail(fmt.Errorf("%w: missing volume ID or node ID", ErrInvalidRequest))
	}
	snmw, err := c.controllerSNMW(ctx)
	if err != nil {
		return nil, err
	}
	capability, err := req.Capability.csi(snmw)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.controller.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
		VolumeId:         req.VolumeID,
		NodeId:           req.NodeID,
		VolumeCapability: capability,
		Readonly:         req.ReadOnly,
		VolumeContext:    req.VolumeContext,
		Secrets:          req.Secrets,
	})
	if err != nil {
		return fail(err)
	}
	return resp.GetPublishContext(), nil
}

// ControllerUnpublish calls ControllerUnpublishVolume (detach).
func (c *Client) ControllerUnpublish(ctx context.Context, volumeID, nodeID string, secrets map[string]string) error {
	if volumeID == "" {
		return &Error{Op: OpControllerUnpublishVolume, Err: fmt.Errorf("%w: missing volume ID", ErrInvalidRequest)}
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	_, err := c.controller.ControllerUnpublishVolume(ctx, &csipb.ControllerUnpublishVolumeRequest{
		VolumeId: volumeID,
		NodeId:   nodeID,
		Secrets:  secrets,
	})
	if err != nil {
		return &Error{Op: OpControllerUnpublishVolume, VolumeID: volumeID, Err: err}
	}
	return nil
}

// ValidateRequest is the input of ValidateVolumeCapabilities.
type ValidateRequest struct {
	VolumeID      string
	Capability    VolumeCapability
	VolumeContext map[string]string
	Parameters    map[string]string
	Secrets       map[string]string
}

// Validation is ValidateVolumeCapabilities' answer: Confirmed is false when
// the driver did not confirm the capability, with its Message.
type Validation struct {
	Confirmed bool
	Message   string
}

// ValidateVolumeCapabilities asks whether a pre-existing volume supports a
// capability.
func (c *Client) ValidateVolumeCapabilities(ctx context.Context, req ValidateRequest) (Validation, error) {
	fail := func(err error) (Validation, error) {
		return Validation{}, &Error{Op: OpValidateVolumeCapabilities, VolumeID: req.VolumeID, Err: err}
	}
	if req.VolumeID == "" {
		return fail(fmt.Errorf("%w: missing volume ID", ErrInvalidRequest))
	}
	snmw, err := c.controllerSNMW(ctx)
	if err != nil {
		return Validation{}, err
	}
	capability, err := req.Capability.csi(snmw)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.controller.ValidateVolumeCapabilities(ctx, &csipb.ValidateVolumeCapabilitiesRequest{
		VolumeId:           req.VolumeID,
		VolumeContext:      req.VolumeContext,
		VolumeCapabilities: []*csipb.VolumeCapability{capability},
		Parameters:         req.Parameters,
		Secrets:            req.Secrets,
	})
	if err != nil {
		return fail(err)
	}
	return Validation{Confirmed: resp.GetConfirmed() != nil, Message: resp.GetMessage()}, nil
}

// CapacityRequest is the input of GetCapacity; every field is optional.
type CapacityRequest struct {
	Capability *VolumeCapability
	Parameters map[string]string
	Topology   Topology // the segment to ask about (e.g. one node)
}

// Capacity is GetCapacity's answer. MaximumVolumeSize and MinimumVolumeSize
// are nil when the driver does not report them.
type Capacity struct {
	AvailableBytes    int64
	MaximumVolumeSize *int64
	MinimumVolumeSize *int64
}

// GetCapacity calls GetCapacity (for CSIStorageCapacity objects).
func (c *Client) GetCapacity(ctx context.Context, req CapacityRequest) (Capacity, error) {
	pbReq := &csipb.GetCapacityRequest{Parameters: req.Parameters}
	if req.Capability != nil {
		snmw, err := c.controllerSNMW(ctx)
		if err != nil {
			return Capacity{}, err
		}
		capability, err := req.Capability.csi(snmw)
		if err != nil {
			return Capacity{}, &Error{Op: OpGetCapacity, Err: err}
		}
		pbReq.VolumeCapabilities = []*csipb.VolumeCapability{capability}
	}
	if req.Topology != nil {
		pbReq.AccessibleTopology = &csipb.Topology{Segments: req.Topology}
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.controller.GetCapacity(ctx, pbReq)
	if err != nil {
		return Capacity{}, &Error{Op: OpGetCapacity, Err: err}
	}
	out := Capacity{AvailableBytes: resp.GetAvailableCapacity()}
	if m := resp.GetMaximumVolumeSize(); m != nil {
		v := m.GetValue()
		out.MaximumVolumeSize = &v
	}
	if m := resp.GetMinimumVolumeSize(); m != nil {
		v := m.GetValue()
		out.MinimumVolumeSize = &v
	}
	return out, nil
}

// ExpandRequest is the input of ControllerExpand and NodeExpand.
type ExpandRequest struct {
	VolumeID      string
	RequiredBytes int64
	LimitBytes    int64 // 0: no limit
	// Capability is optional for ControllerExpand and sent when set.
	Capability *VolumeCapability
	Secrets    map[string]string

	// Node only: where the volume is published (REQUIRED) and staged
	// (empty when the driver does not stage). NodeVolumes.Volume has
	// both.
	VolumePath  string
	StagingPath string
}

// ExpandResult is ControllerExpandVolume's answer.
type ExpandResult struct {
	CapacityBytes int64
	// NodeExpansionRequired: NodeExpand must follow on the node where
	// the volume is published.
	NodeExpansionRequired bool
}

// ControllerExpand calls ControllerExpandVolume.
func (c *Client) ControllerExpand(ctx context.Context, req ExpandRequest) (ExpandResult, error) {
	fail := func(err error) (ExpandResult, error) {
		return ExpandResult{}, &Error{Op: OpControllerExpandVolume, VolumeID: req.VolumeID, Err: err}
	}
	if req.VolumeID == "" || req.RequiredBytes <= 0 {
		return fail(fmt.Errorf("%w: missing volume ID or size", ErrInvalidRequest))
	}
	pbReq := &csipb.ControllerExpandVolumeRequest{
		VolumeId:      req.VolumeID,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: req.RequiredBytes, LimitBytes: req.LimitBytes},
		Secrets:       req.Secrets,
	}
	if req.Capability != nil {
		snmw, err := c.controllerSNMW(ctx)
		if err != nil {
			return ExpandResult{}, err
		}
		capability, err := req.Capability.csi(snmw)
		if err != nil {
			return fail(err)
		}
		pbReq.VolumeCapability = capability
	}
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.controller.ControllerExpandVolume(ctx, pbReq)
	if err != nil {
		return fail(err)
	}
	return ExpandResult{CapacityBytes: resp.GetCapacityBytes(), NodeExpansionRequired: resp.GetNodeExpansionRequired()}, nil
}

func toCSITopologies(ts []Topology) []*csipb.Topology {
	if len(ts) == 0 {
		return nil
	}
	out := make([]*csipb.Topology, 0, len(ts))
	for _, t := range ts {
		out = append(out, &csipb.Topology{Segments: t})
	}
	return out
}

func fromCSITopologies(ts []*csipb.Topology) []Topology {
	if len(ts) == 0 {
		return nil
	}
	out := make([]Topology, 0, len(ts))
	for _, t := range ts {
		out = append(out, Topology(t.GetSegments()))
	}
	return out
}
