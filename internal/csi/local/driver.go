// Package local is local.csi.moorage.io, moorage's built-in CSI driver for
// node-local volumes. Each volume is a sparse image file in the driver's
// data directory; the node service attaches it as a loop device and either
// formats and mounts it (ext4 or xfs) or hands the device over raw (block
// volumes). A volume lives on the node that created it, which its topology
// says. One process serves the identity, controller and node services.
//
// All state is on disk: a JSON record beside each image, the kernel's loop
// devices (found by backing file) and mounts (found in mountinfo), so a
// restarted driver picks up where it stopped.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// DriverName is the driver's CSI name (a StorageClass's provisioner).
	DriverName = "local.csi.moorage.io"
	// TopologyKey is the topology segment naming the node a volume lives on.
	TopologyKey = "topology.local.csi.moorage.io/node"
)

// Options configure a Driver.
type Options struct {
	// NodeID names this node; it is the value of TopologyKey, so it must
	// be a valid topology value (63 characters at most, alphanumeric at
	// both ends, '-', '_' and '.' in between).
	NodeID string
	// DataDir holds the volumes (DataDir/volumes/<id>.img and <id>.json).
	DataDir string
	// Version is reported by GetPluginInfo.
	Version string
	// Logger receives one line per failed call (and, at debug level, per
	// call). Nil discards.
	Logger *slog.Logger
	// Serving, if set, is called by Serve once the socket accepts
	// connections.
	Serving func()
}

// Driver implements the CSI identity, controller and node services. Its
// methods may be called directly (as the tests do) or through Serve.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	nodeID  string
	version string
	dataDir string // absolute, symlinks resolved: loop backing files are compared by path
	volDir  string
	log     *slog.Logger
	tools   tools

	// mu serialises every call: operations are short, and one lock keeps
	// a volume's record, image, loop devices and mounts consistent.
	mu      sync.Mutex
	volumes map[string]*volume // by ID
}

// New opens (creating if needed) the data directory and loads the volumes
// recorded there.
func New(opts Options) (*Driver, error) {
	if err := validTopologyValue(opts.NodeID); err != nil {
		return nil, fmt.Errorf("node ID: %w", err)
	}
	if opts.DataDir == "" {
		return nil, errors.New("data directory: empty")
	}
	if opts.Version == "" {
		opts.Version = "unknown"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, "volumes"), 0o700); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	d := &Driver{
		nodeID:  opts.NodeID,
		version: opts.Version,
		dataDir: abs,
		volDir:  filepath.Join(abs, "volumes"),
		log:     log,
		tools:   findTools(),
	}
	if d.volumes, err = d.loadVolumes(); err != nil {
		return nil, err
	}
	return d, nil
}

// ---------------------------------------------------------------- identity

// GetPluginInfo reports the driver's name and moorage's version.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: DriverName, VendorVersion: d.version}, nil
}

// GetPluginCapabilities: a controller service, topology, online expansion.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	service := func(t csi.PluginCapability_Service_Type) *csi.PluginCapability {
		return &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: t}}}
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		service(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		service(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE,
		}}},
	}}, nil
}

// Probe is ready when the data directory and /dev/loop-control are there.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if _, err := os.Stat(d.volDir); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "data directory: %v", err)
	}
	if _, err := os.Stat(loopControl); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "loop devices: %v", err)
	}
	return &csi.ProbeResponse{}, nil
}
