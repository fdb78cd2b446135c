package local

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Requests are checked at the edge: parameters, capabilities and capacity
// ranges become the typed values below, or an INVALID_ARGUMENT (or, for
// sizes, OUT_OF_RANGE) error naming the field at fault.

const (
	mib = int64(1) << 20
	// defaultCapacity is the size of a volume whose request names none.
	defaultCapacity = int64(1) << 30
	// minCapacity is the smallest volume; xfsMinCapacity the smallest xfs
	// one (mkfs.xfs refuses file systems under 300 MB).
	minCapacity    = mib
	xfsMinCapacity = 300 * mib

	fsExt4 = "ext4"
	fsXFS  = "xfs"

	paramFSType = "fsType"
	// k8sParamPrefix marks parameters the external provisioner adds or
	// consumes itself (the PVC's and PV's names, the fstype key).
	k8sParamPrefix = "csi.storage.k8s.io/"
)

// Parameters are the StorageClass parameters the driver takes.
type Parameters struct {
	// FSType is the file system a mount volume gets: ext4 or xfs. Empty
	// means: whatever the volume capability says, else ext4.
	FSType string
}

// parseParameters turns CreateVolume's (or GetCapacity's, or
// ValidateVolumeCapabilities') parameters into Parameters.
func (d *Driver) parseParameters(in map[string]string) (Parameters, error) {
	var p Parameters
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report the same unknown key every time
	for _, k := range keys {
		switch {
		case k == paramFSType:
			p.FSType = in[k]
			if err := d.checkFSType(p.FSType); err != nil {
				return Parameters{}, status.Errorf(codes.InvalidArgument, "parameter %s: %v", paramFSType, err)
			}
		case strings.HasPrefix(k, k8sParamPrefix):
		default:
			return Parameters{}, status.Errorf(codes.InvalidArgument, "parameter %q is not one %s takes (it takes: %s)", k, DriverName, paramFSType)
		}
	}
	return p, nil
}

// checkFSType accepts the file systems this node can make.
func (d *Driver) checkFSType(fs string) error {
	switch fs {
	case fsExt4:
		return nil
	case fsXFS:
		if d.tools.mkfsXFS == "" {
			return fmt.Errorf("xfs needs mkfs.xfs (xfsprogs), which this node lacks")
		}
		return nil
	}
	return fmt.Errorf("%q is not supported (ext4 or xfs)", fs)
}

// capability is a volume capability reduced to what the driver acts on.
type capability struct {
	block      bool
	fsType     string // mount only; may be empty
	mountFlags []string
	mode       csi.VolumeCapability_AccessMode_Mode
}

// parseCapability checks one volume capability; field names it in errors.
// Multi-node access modes are refused: the volume lives on one node.
func (d *Driver) parseCapability(c *csi.VolumeCapability, field string) (capability, error) {
	if c == nil {
		return capability{}, status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	var out capability
	if c.GetAccessMode() == nil {
		return capability{}, status.Errorf(codes.InvalidArgument, "%s: access_mode is required", field)
	}
	out.mode = c.GetAccessMode().GetMode()
	switch out.mode {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return capability{}, status.Errorf(codes.InvalidArgument, "%s: access mode %s is not supported: %s volumes live on one node (use a SINGLE_NODE_ mode)", field, out.mode, DriverName)
	default:
		return capability{}, status.Errorf(codes.InvalidArgument, "%s: access mode %s is not supported", field, out.mode)
	}
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Block:
		out.block = true
	case *csi.VolumeCapability_Mount:
		out.fsType = t.Mount.GetFsType()
		out.mountFlags = t.Mount.GetMountFlags()
		if out.fsType != "" {
			if err := d.checkFSType(out.fsType); err != nil {
				return capability{}, status.Errorf(codes.InvalidArgument, "%s: fs_type: %v", field, err)
			}
		}
		if _, _, err := parseMountFlags(out.mountFlags); err != nil {
			return capability{}, status.Errorf(codes.InvalidArgument, "%s: mount_flags: %v", field, err)
		}
	default:
		return capability{}, status.Errorf(codes.InvalidArgument, "%s: access_type (mount or block) is required", field)
	}
	return out, nil
}

// volumeShape is what CreateVolume's capabilities and parameters ask for:
// a block volume, or a mount volume with its file system.
type volumeShape struct {
	block  bool
	fsType string // "" for block volumes
}

// shapeOf combines the parameters with the capabilities. All capabilities
// must agree on block or mount, and on the file system.
func (d *Driver) shapeOf(caps []*csi.VolumeCapability, p Parameters) (volumeShape, error) {
	if len(caps) == 0 {
		return volumeShape{}, status.Error(codes.InvalidArgument, "volume_capabilities is required")
	}
	var shape volumeShape
	fsFrom := ""
	for i, c := range caps {
		field := fmt.Sprintf("volume_capabilities[%d]", i)
		cp, err := d.parseCapability(c, field)
		if err != nil {
			return volumeShape{}, err
		}
		if i > 0 && cp.block != shape.block {
			return volumeShape{}, status.Errorf(codes.InvalidArgument, "%s: a volume is either block or mount, not both", field)
		}
		shape.block = cp.block
		if cp.fsType != "" && shape.fsType != "" && cp.fsType != shape.fsType {
			return volumeShape{}, status.Errorf(codes.InvalidArgument, "%s: fs_type %q differs from %s's %q", field, cp.fsType, fsFrom, shape.fsType)
		}
		if cp.fsType != "" && shape.fsType == "" {
			shape.fsType, fsFrom = cp.fsType, field
		}
	}
	if shape.block {
		if p.FSType != "" {
			return volumeShape{}, status.Errorf(codes.InvalidArgument, "parameter %s: a block volume has no file system", paramFSType)
		}
		return shape, nil
	}
	if p.FSType != "" && shape.fsType != "" && p.FSType != shape.fsType {
		return volumeShape{}, status.Errorf(codes.InvalidArgument, "parameter %s %q differs from %s's fs_type %q", paramFSType, p.FSType, fsFrom, shape.fsType)
	}
	if p.FSType != "" {
		shape.fsType = p.FSType
	}
	if shape.fsType == "" {
		shape.fsType = fsExt4
	}
	return shape, nil
}

// minSize is the smallest volume of a shape.
func (s volumeShape) minSize() int64 {
	if s.fsType == fsXFS {
		return xfsMinCapacity
	}
	return minCapacity
}

// sizeFor picks a new volume's size from a capacity range: the required
// bytes (default 1 GiB) rounded up to whole MiB and to at least minSize,
// but never above the limit.
func sizeFor(r *csi.CapacityRange, minSize int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d and limit_bytes %d must not be negative", req, lim)
	}
	if lim > 0 && req > lim {
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d exceeds limit_bytes %d", req, lim)
	}
	size := req
	if size == 0 {
		size = defaultCapacity
		if lim > 0 && lim < size {
			size = lim
		}
	}
	size = roundUp(max(size, minSize), mib)
	if lim > 0 && size > lim {
		size = lim / 4096 * 4096 // the largest whole 4 KiB within the limit
		if size < max(req, minSize) {
			return 0, status.Errorf(codes.OutOfRange, "capacity_range: limit_bytes %d is below the smallest such volume (%d bytes)", lim, max(req, minSize))
		}
	}
	return size, nil
}

func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

// fits tells whether an existing size satisfies a capacity range.
func fits(size int64, r *csi.CapacityRange) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

var topologyValue = regexp.MustCompile(`^[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$`)

// validTopologyValue checks the spec's rules for a topology segment value.
func validTopologyValue(v string) error {
	if !topologyValue.MatchString(v) {
		return fmt.Errorf("%q is not a valid topology value (63 characters at most, alphanumeric at both ends, '-', '_' and '.' in between)", v)
	}
	return nil
}

// topology is where every volume of this driver is accessible: this node.
func (d *Driver) topology() *csi.Topology {
	return &csi.Topology{Segments: map[string]string{TopologyKey: d.nodeID}}
}

// onThisNode tells whether a topology names this node: every segment it
// has must be ours (keys are case-insensitive), so a topology with other
// keys (a zone, say) is not known to hold this node.
func (d *Driver) onThisNode(t *csi.Topology) bool {
	for k, v := range t.GetSegments() {
		if !strings.EqualFold(k, TopologyKey) || v != d.nodeID {
			return false
		}
	}
	return true
}

// accessible tells whether a volume on this node meets the requirement:
// one of the requisite topologies must name this node. Preferred ones
// only order the choice, and this driver has no choice.
func (d *Driver) accessible(r *csi.TopologyRequirement) bool {
	if len(r.GetRequisite()) == 0 {
		return true
	}
	for _, t := range r.GetRequisite() {
		if d.onThisNode(t) {
			return true
		}
	}
	return false
}
