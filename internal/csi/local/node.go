package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The node service. Staging attaches the image's loop device (read-write);
// a mount volume is then formatted on first use and mounted at the staging
// path, and each publication is a bind of that mount. A block volume's
// publication is a bind of the device node onto a file at the target path;
// a read-only one gets a read-only loop device of its own, since a
// read-only bind of a device node does not stop writes to the device.
//
// Nothing is remembered between calls: the loop devices come from sysfs
// and the mounts from mountinfo, so a restarted driver carries on.

// NodeGetCapabilities lists what the node service does.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo names this node and its topology. Loop devices are not a
// scarce resource (the kernel makes more on demand), so there is no limit.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID, AccessibleTopology: d.topology()}, nil
}

// lookup is a volume by ID, or NOT_FOUND. Callers hold d.mu.
func (d *Driver) lookup(id string) (*volume, error) {
	if v := d.volumes[id]; v != nil {
		return v, nil
	}
	return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
}

// accepts checks a capability against what the volume is.
func (v *volume) accepts(cp capability) error {
	if cp.block != v.Block {
		want := "mount"
		if cp.block {
			want = "block"
		}
		return status.Errorf(codes.FailedPrecondition, "volume %s is a %s volume, volume_capability asks for %s", v.ID, v.shape(), want)
	}
	if cp.fsType != "" && cp.fsType != v.FSType {
		return status.Errorf(codes.FailedPrecondition, "volume %s holds %s, volume_capability asks for %s", v.ID, v.FSType, cp.fsType)
	}
	return nil
}

// NodeStageVolume attaches the volume's loop device and, for a mount
// volume, mounts its file system (made on first use, grown offline to the
// device's size if the volume was expanded) at the staging path.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if staging == "" {
		return nil, status.Error(codes.InvalidArgument, "staging_target_path is required")
	}
	cp, err := d.parseCapability(req.GetVolumeCapability(), "volume_capability")
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookup(id)
	if err != nil {
		return nil, err
	}
	if err := v.accepts(cp); err != nil {
		return nil, err
	}
	img := d.imagePath(id)
	lo, attached, err := writableLoop(img)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if !attached {
		if lo, err = attachLoop(img, false); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
	}
	if v.Block {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := d.stageMount(ctx, v, lo, staging, cp); err != nil {
		if !attached {
			detachLoop(lo)
		}
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *Driver) stageMount(ctx context.Context, v *volume, lo loopDevice, staging string, cp capability) error {
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return status.Errorf(codes.Internal, "staging_target_path: %v", err)
	}
	mounts, err := readMounts()
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	flags, data, _ := parseMountFlags(cp.mountFlags) // checked by parseCapability
	if m, ok := mountAt(mounts, staging); ok {
		switch {
		case !m.uses(lo):
			return status.Errorf(codes.AlreadyExists, "staging_target_path %s has another file system mounted", staging)
		case m.ReadOnly() != (flags&unix.MS_RDONLY != 0):
			return status.Errorf(codes.AlreadyExists, "volume %s is staged at %s with read-only=%v", v.ID, staging, m.ReadOnly())
		}
		return nil // staged already
	}
	dev := lo.path()
	found, err := d.tools.probeFS(ctx, dev)
	if err != nil {
		return status.Errorf(codes.Internal, "volume %s: %v", v.ID, err)
	}
	switch {
	case found == "":
		if err := d.tools.mkfs(ctx, v.FSType, dev); err != nil {
			return status.Errorf(codes.Internal, "volume %s: %v", v.ID, err)
		}
	case found != v.FSType:
		return status.Errorf(codes.FailedPrecondition, "volume %s holds %s, not %s", v.ID, found, v.FSType)
	case found == fsExt4:
		if err := d.growExt4IfSmaller(ctx, lo); err != nil {
			return status.Errorf(codes.Internal, "volume %s: %v", v.ID, err)
		}
	}
	if err := unix.Mount(dev, staging, v.FSType, flags, data); err != nil {
		return status.Errorf(codes.Internal, "volume %s: mount %s (%s, options %q) at %s: %v", v.ID, dev, v.FSType, cp.mountFlags, staging, err)
	}
	if v.FSType == fsXFS && flags&unix.MS_RDONLY == 0 {
		// xfs grows only mounted; a no-op unless the volume was expanded
		if err := run(ctx, d.tools.xfsGrowfs, "-d", staging); err != nil {
			unix.Unmount(staging, 0)
			return status.Errorf(codes.Internal, "volume %s: %v", v.ID, err)
		}
	}
	return nil
}

func (d *Driver) growExt4IfSmaller(ctx context.Context, lo loopDevice) error {
	fsSize, err := ext4Size(lo.path())
	if err != nil {
		return err
	}
	devSize, err := deviceSize(lo)
	if err != nil || fsSize >= devSize {
		return err
	}
	return d.tools.growExt4Offline(ctx, lo.path())
}

// NodeUnstageVolume unmounts the staging path and detaches the volume's
// loop devices. A volume still published is refused, so that no stale
// loop device lingers to be mounted twice.
func (d *Driver) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if staging == "" {
		return nil, status.Error(codes.InvalidArgument, "staging_target_path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookup(id); err != nil {
		return nil, err
	}
	loops, err := findLoops(d.imagePath(id))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	mounts, err := readMounts()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	m, staged := mountAt(mounts, staging)
	staged = staged && slices.ContainsFunc(loops, m.uses)
	published := slices.DeleteFunc(mountsOf(mounts, loops), func(p string) bool { return staged && p == m.MountPoint })
	if len(published) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still published at %v: unpublish it first", id, published)
	}
	if staged {
		if err := unmountAll(staging); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
	}
	for _, l := range loops {
		if err := detachLoop(l); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume binds the staged volume at the target path.
func (d *Driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target, staging := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	cp, err := d.parseCapability(req.GetVolumeCapability(), "volume_capability")
	if err != nil {
		return nil, err
	}
	if staging == "" {
		return nil, status.Error(codes.FailedPrecondition, "staging_target_path is required: the volume is staged first (NodeStageVolume)")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookup(id)
	if err != nil {
		return nil, err
	}
	if err := v.accepts(cp); err != nil {
		return nil, err
	}
	img := d.imagePath(id)
	lo, staged, err := writableLoop(img)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if !staged {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged on this node", id)
	}
	loops, err := findLoops(img)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	mounts, err := readMounts()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	readOnly := req.GetReadonly() || cp.mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if m, ok := mountAt(mounts, target); ok {
		switch {
		case !slices.ContainsFunc(loops, m.uses):
			return nil, status.Errorf(codes.AlreadyExists, "target_path %s has another volume mounted", target)
		case m.ReadOnly() != readOnly:
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is published at %s with readonly=%v", id, target, m.ReadOnly())
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if cp.mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		others := slices.DeleteFunc(mountsOf(mounts, loops), func(p string) bool { return p == canonical(staging) })
		if len(others) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is published at %v already, and SINGLE_NODE_SINGLE_WRITER allows one publication", id, others)
		}
	}
	if v.Block {
		err = publishBlock(img, lo, target, readOnly)
	} else {
		m, ok := mountAt(mounts, staging)
		if !ok || !m.uses(lo) {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", id, staging)
		}
		err = publishMount(canonical(staging), target, bindFlags(cp.mountFlags, readOnly))
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func publishMount(staging, target string, flags uintptr) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return err
	}
	if err := bindMount(staging, target, flags); err != nil {
		os.Remove(target)
		return err
	}
	return nil
}

// publishBlock binds the device node onto a file at target: the writable
// loop device, or a read-only one made for this publication.
func publishBlock(img string, lo loopDevice, target string, readOnly bool) error {
	var flags uintptr
	if readOnly {
		ro, err := attachLoop(img, true)
		if err != nil {
			return err
		}
		lo, flags = ro, unix.MS_RDONLY
	}
	err := os.MkdirAll(filepath.Dir(target), 0o750)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
			err = bindMount(lo.path(), target, flags)
		}
	}
	if err != nil {
		os.Remove(target)
		if readOnly {
			detachLoop(lo)
		}
	}
	return err
}

// NodeUnpublishVolume unmounts the target path (detaching the read-only
// loop device of a read-only block publication) and removes it.
func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if target == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookup(id); err != nil {
		return nil, err
	}
	loops, err := findLoops(d.imagePath(id))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	mounts, err := readMounts()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if m, ok := mountAt(mounts, target); ok {
		i := slices.IndexFunc(loops, m.uses)
		if i < 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "target_path %s has another file system mounted, not volume %s", target, id)
		}
		if err := unmountAll(target); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		if loops[i].readOnly {
			if err := detachLoop(loops[i]); err != nil {
				return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
			}
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "volume %s: removing target_path: %v", id, err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports a mount volume's bytes and inodes (statfs),
// and a block volume's size.
func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookup(id)
	if err != nil {
		return nil, err
	}
	lo, err := d.volumeAt(v, path)
	if err != nil {
		return nil, err
	}
	if v.Block {
		size, err := deviceSize(lo)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}}, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: statfs %s: %v", id, path, err)
	}
	bs := st.Frsize
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs, Used: int64(st.Blocks-st.Bfree) * bs},
		{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files - st.Ffree)},
	}}, nil
}

// volumeAt checks that volume v is at path (where it is staged or
// published) and returns its writable loop device; NOT_FOUND otherwise.
func (d *Driver) volumeAt(v *volume, path string) (loopDevice, error) {
	lo, staged, err := writableLoop(d.imagePath(v.ID))
	if err != nil {
		return loopDevice{}, status.Errorf(codes.Internal, "volume %s: %v", v.ID, err)
	}
	if !staged {
		return loopDevice{}, status.Errorf(codes.NotFound, "volume %s is not staged on this node", v.ID)
	}
	if ok, err := exists(path); err != nil {
		return loopDevice{}, status.Errorf(codes.Internal, "volume %s: %v", v.ID, err)
	} else if !ok {
		return loopDevice{}, status.Errorf(codes.NotFound, "volume %s is not at %s: no such path", v.ID, path)
	}
	if v.Block {
		return lo, nil // the staging directory, or a device node bound from one of its devices
	}
	if dev, err := statDev(path); err != nil || dev != lo.dev {
		return loopDevice{}, status.Errorf(codes.NotFound, "volume %s is not mounted at %s", v.ID, path)
	}
	return lo, nil
}

// NodeExpandVolume makes the loop device take the image's new size and
// grows the file system to it: xfs online; ext4 online where the driver
// may (CAP_SYS_RESOURCE), else at the next NodeStageVolume.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookup(id)
	if err != nil {
		return nil, err
	}
	if c := req.GetVolumeCapability(); c != nil {
		cp, err := d.parseCapability(c, "volume_capability")
		if err != nil {
			return nil, err
		}
		if err := v.accepts(cp); err != nil {
			return nil, status.Error(codes.InvalidArgument, status.Convert(err).Message())
		}
	}
	if req.GetCapacityRange().GetRequiredBytes() > v.Capacity {
		return nil, status.Errorf(codes.OutOfRange, "capacity_range: volume %s has %d bytes; ControllerExpandVolume grows it first", id, v.Capacity)
	}
	lo, err := d.volumeAt(v, path)
	if err != nil {
		return nil, err
	}
	if err := refreshLoopSize(lo); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	size, err := deviceSize(lo)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	switch {
	case v.Block:
	case v.FSType == fsXFS:
		if err := run(ctx, d.tools.xfsGrowfs, "-d", path); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
	case v.FSType == fsExt4:
		fsSize, err := ext4Size(lo.path())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		if fsSize >= size {
			break
		}
		if !canResizeMountedExt4() {
			return nil, status.Errorf(codes.FailedPrecondition,
				"volume %s: growing a mounted ext4 needs CAP_SYS_RESOURCE, which this driver lacks; the file system grows to %d bytes when next staged (xfs volumes grow online)", id, size)
		}
		if err := run(ctx, d.tools.resize2fs, lo.path()); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}
