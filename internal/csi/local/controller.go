package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The controller service makes, grows and removes image files. There is
// no attach step (no ControllerPublishVolume): a volume is only ever on
// this node, and the node service attaches its loop device when staging.

// ControllerGetCapabilities lists what the controller does.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume makes a sparse image of the requested size. The same name
// with compatible arguments returns the same volume.
func (d *Driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume_content_source: %s makes empty volumes only (no snapshots or clones)", DriverName)
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "mutable_parameters: %s has none", DriverName)
	}
	params, err := d.parseParameters(req.GetParameters())
	if err != nil {
		return nil, err
	}
	shape, err := d.shapeOf(req.GetVolumeCapabilities(), params)
	if err != nil {
		return nil, err
	}
	size, err := sizeFor(req.GetCapacityRange(), shape.minSize())
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	id := volumeID(name)
	if v := d.volumes[id]; v != nil {
		switch {
		case v.shape() != shape:
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists as a %s volume, not %s", name, v.shape(), shape)
		case !fits(v.Capacity, req.GetCapacityRange()):
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with %d bytes, outside capacity_range (required %d, limit %d)",
				name, v.Capacity, req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes())
		case !d.accessible(req.GetAccessibilityRequirements()):
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists on node %s, which accessibility_requirements exclude", name, d.nodeID)
		}
		return &csi.CreateVolumeResponse{Volume: d.csiVolume(v)}, nil
	}
	if !d.accessible(req.GetAccessibilityRequirements()) {
		return nil, status.Errorf(codes.ResourceExhausted, "accessibility_requirements: no requisite topology is this node (%s=%s), the only place %s makes volumes",
			TopologyKey, d.nodeID, DriverName)
	}
	if free, err := d.freeBytes(); err != nil {
		return nil, status.Errorf(codes.Internal, "free space of %s: %v", d.dataDir, err)
	} else if size > free {
		return nil, status.Errorf(codes.ResourceExhausted, "volume %q: %d bytes asked, %d free in %s", name, size, free, d.dataDir)
	}

	img := d.imagePath(id)
	if err := os.Remove(img); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "removing the image of an unfinished create: %v", err)
	}
	if err := makeImage(img, size); err != nil {
		os.Remove(img)
		return nil, status.Errorf(codes.Internal, "volume %q: %v", name, err)
	}
	v := &volume{ID: id, Name: name, Capacity: size, Block: shape.block, FSType: shape.fsType}
	if err := d.saveVolume(v); err != nil {
		os.Remove(img)
		return nil, status.Errorf(codes.Internal, "volume %q: %v", name, err)
	}
	d.volumes[id] = v
	return &csi.CreateVolumeResponse{Volume: d.csiVolume(v)}, nil
}

// makeImage creates a sparse file of size bytes.
func makeImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s volumeShape) String() string {
	if s.block {
		return "block"
	}
	return s.fsType
}

func (d *Driver) csiVolume(v *volume) *csi.Volume {
	return &csi.Volume{
		VolumeId:           v.ID,
		CapacityBytes:      v.Capacity,
		AccessibleTopology: []*csi.Topology{d.topology()},
	}
}

// freeBytes is what the data directory's file system has free.
func (d *Driver) freeBytes() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.volDir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// DeleteVolume detaches the volume's loop devices and removes its image
// and record. A volume still mounted somewhere is refused.
func (d *Driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.volumes[id]
	if v == nil {
		return &csi.DeleteVolumeResponse{}, nil
	}
	img := d.imagePath(id)
	loops, err := findLoops(img)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	mounts, err := readMounts()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if in := mountsOf(mounts, loops); len(in) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is in use: mounted at %v (unpublish and unstage it first)", id, in)
	}
	for _, l := range loops {
		if err := detachLoop(l); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
	}
	if left, err := findLoops(img); err != nil || len(left) > 0 {
		return nil, status.Errorf(codes.Internal, "volume %s: loop devices %v still attached (%v)", id, left, err)
	}
	if err := os.Remove(img); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if err := os.Remove(d.recordPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	delete(d.volumes, id)
	return &csi.DeleteVolumeResponse{}, nil
}

// ControllerExpandVolume grows the image (never shrinks it) and makes its
// loop devices, if attached, take the new size. A mount volume's file
// system then grows in NodeExpandVolume.
func (d *Driver) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	r := req.GetCapacityRange()
	if r == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity_range is required")
	}
	if r.GetRequiredBytes() <= 0 && r.GetLimitBytes() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "capacity_range: required_bytes or limit_bytes is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.volumes[id]
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	if c := req.GetVolumeCapability(); c != nil {
		cp, err := d.parseCapability(c, "volume_capability")
		if err != nil {
			return nil, err
		}
		if cp.block != v.Block {
			return nil, status.Errorf(codes.InvalidArgument, "volume_capability: volume %s is a %s volume", id, v.shape())
		}
	}
	want := r.GetRequiredBytes()
	if want == 0 {
		want = r.GetLimitBytes()
	}
	size, err := sizeFor(&csi.CapacityRange{RequiredBytes: want, LimitBytes: r.GetLimitBytes()}, v.shape().minSize())
	if err != nil {
		return nil, err
	}
	if size > v.Capacity {
		if free, err := d.freeBytes(); err != nil {
			return nil, status.Errorf(codes.Internal, "free space of %s: %v", d.dataDir, err)
		} else if size-v.Capacity > free {
			return nil, status.Errorf(codes.ResourceExhausted, "volume %s: %d more bytes asked, %d free in %s", id, size-v.Capacity, free, d.dataDir)
		}
		if err := os.Truncate(d.imagePath(id), size); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		v.Capacity = size
		if err := d.saveVolume(v); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		loops, err := findLoops(d.imagePath(id))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		for _, l := range loops {
			if err := refreshLoopSize(l); err != nil {
				return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
			}
		}
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.Capacity, NodeExpansionRequired: !v.Block}, nil
}

// ValidateVolumeCapabilities confirms the capabilities a volume has: a
// single-node access mode, and its own access type and file system.
func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities is required")
	}
	d.mu.Lock()
	v := d.volumes[id]
	d.mu.Unlock()
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	unconfirmed := func(format string, a ...any) (*csi.ValidateVolumeCapabilitiesResponse, error) {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf(format, a...)}, nil
	}
	for i, c := range req.GetVolumeCapabilities() {
		cp, err := d.parseCapability(c, fmt.Sprintf("volume_capabilities[%d]", i))
		if err != nil {
			if c.GetAccessMode() != nil && c.GetAccessType() != nil {
				return unconfirmed("%s", status.Convert(err).Message()) // well-formed, just not supported
			}
			return nil, err
		}
		if cp.block != v.Block {
			return unconfirmed("volume %s is a %s volume", id, v.shape())
		}
		if cp.fsType != "" && cp.fsType != v.FSType {
			return unconfirmed("volume %s holds %s, not %s", id, v.FSType, cp.fsType)
		}
	}
	if len(req.GetParameters()) > 0 {
		p, err := d.parseParameters(req.GetParameters())
		if err != nil {
			return nil, err
		}
		if p.FSType != "" && p.FSType != v.FSType {
			return unconfirmed("volume %s holds %s, not %s", id, v.shape(), p.FSType)
		}
	}
	if len(req.GetVolumeContext()) > 0 {
		return unconfirmed("volume_context does not match: volume %s has none", id)
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes pages through the volumes in ID order; a page's token is
// the last ID it holds, so deleting volumes between pages loses nothing.
func (d *Driver) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	token := req.GetStartingToken()
	if token != "" && !volumeIDPattern.MatchString(token) {
		return nil, status.Errorf(codes.Aborted, "starting_token %q is not one ListVolumes returned", token)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.volumes))
	for id := range d.volumes {
		if id > token {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	resp := &csi.ListVolumesResponse{}
	if n := int(req.GetMaxEntries()); n > 0 && len(ids) > n {
		ids = ids[:n]
		resp.NextToken = ids[n-1]
	}
	for _, id := range ids {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: d.csiVolume(d.volumes[id])})
	}
	return resp, nil
}

// GetCapacity is the free space of the data directory's file system, for
// this node's topology; none elsewhere.
func (d *Driver) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	params, err := d.parseParameters(req.GetParameters())
	if err != nil {
		return nil, err
	}
	shape := volumeShape{fsType: fsExt4}
	if len(req.GetVolumeCapabilities()) > 0 {
		if shape, err = d.shapeOf(req.GetVolumeCapabilities(), params); err != nil {
			return nil, err
		}
	} else if params.FSType != "" {
		shape.fsType = params.FSType
	}
	if t := req.GetAccessibleTopology(); t != nil && !d.onThisNode(t) {
		return &csi.GetCapacityResponse{}, nil
	}
	free, err := d.freeBytes()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "free space of %s: %v", d.dataDir, err)
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: free,
		MaximumVolumeSize: wrapperspb.Int64(free),
		MinimumVolumeSize: wrapperspb.Int64(shape.minSize()),
	}, nil
}
