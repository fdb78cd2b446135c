package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/csi/local"
)

// CSI drivers on the node.
//
// The agent is the kubelet's CSI half. It runs the built-in driver
// local.csi.moorage.io in-process, as a gRPC server on a unix socket under
// its data directory (plugins/<driver>/csi.sock, where the kubelet finds
// node plugins' sockets), and talks to it through internal/csi exactly as
// to a driver in another process. It registers the driver as the kubelet's
// plugin watcher does (NodeGetInfo, then the Node's topology labels and
// csi.volume.kubernetes.io/nodeid annotation and the CSINode entry; see
// csinode.go), makes sure a CSIDriver object describes it, and runs its
// provisioner through Options.Provisioner (internal/cli passes
// internal/controller/provisioner in NodeLocal mode, external-provisioner's
// node deployment: it creates this node's volumes for the claims whose
// selected node is this one). The agent does not import the provisioner
// itself: the provisioner's tests start a server with internal/testserver,
// which imports internal/app and with it this package.
//
// The volume manager reaches the registered drivers through
// csiDrivers.lookup (volume.Options.CSIDrivers): one csi.NodeVolumes per
// driver, whose state directory keeps what is staged and published here.
// It is built once the drivers are registered, so that their topology
// labels are among the node labels it checks volumes' node affinity
// against.
//
// Layout under the data directory:
//
//	plugins/<driver>/csi.sock     the driver's socket
//	plugins_registry/             external drivers' registration sockets (plugins.go)
//	csi/local/                    the built-in driver's volumes (images and records)
//	csi/state/<driver>/           NodeVolumes' records (staged volumes, publish targets)
//	csi/controllers/<driver>/     the driver's controllers' state (the provisioner's journal/)
//
// Shutdown: the provisioner stops with the agent's context; the driver
// (Serve removes its socket) once the pod workers have stopped using it. Volumes stay
// staged and published, as the kubelet leaves them: a restarted agent (and
// driver) finds them in the records, the loop devices and mountinfo.

// CSIDriver is a CSI driver registered on this node, as the controllers
// that run next to it (Options.DriverControllers) need it.
type CSIDriver struct {
	Name     string
	Client   *csi.Client
	NodeName string
	// NodeLocal says the driver's volumes live on this node only (the
	// built-in driver): its controllers handle this node's volumes,
	// as external-provisioner's node deployment does.
	NodeLocal bool
	// TopologyKeys are the driver's topology keys on this node (from
	// NodeGetInfo), sorted.
	TopologyKeys []string
	// StateDir is where the controllers keep what must survive a restart
	// (the provisioner's journal), under the agent's data directory.
	StateDir string
	// Config reaches the API as the agent does.
	Config *rest.Config
	Logger *slog.Logger
}

// driverStartTimeout bounds the wait for the built-in driver's socket.
const driverStartTimeout = 30 * time.Second

// maxSocketPath is the longest path a unix socket address holds
// (sizeof(sun_path) - 1 on Linux).
const maxSocketPath = 107

// csiDriver is one CSI driver registered on this node.
type csiDriver struct {
	name    string
	client  *csi.Client
	volumes *csi.NodeVolumes
	info    csi.NodeInfo
}

// csiDrivers is the agent's registry of drivers, by name. It is safe for
// concurrent use: pod workers look drivers up while drivers come and go.
type csiDrivers struct {
	mu sync.RWMutex
	m  map[string]*csiDriver
}

func (r *csiDrivers) add(d *csiDriver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*csiDriver{}
	}
	r.m[d.name] = d
}

func (r *csiDrivers) remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, name)
}

// lookup is volume.Options.CSIDrivers: the node-side volumes of a
// registered driver.
func (r *csiDrivers) lookup(name string) (*csi.NodeVolumes, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.m[name]
	if !ok {
		return nil, false
	}
	return d.volumes, true
}

// topologyLabels are the node labels the registered drivers' topology
// segments add.
func (r *csiDrivers) topologyLabels() map[string]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[string]string{}
	for _, d := range r.m {
		maps.Copy(out, d.info.Topology)
	}
	return out
}

// startCSI writes the node's CSINode object, starts the built-in driver
// (unless disabled) and registers it, builds the volume manager with
// the drivers it found, and starts the watcher of external drivers'
// registration sockets (plugins.go). A driver that cannot start is logged and left out:
// pods that do not use it run regardless. The returned function stops what
// was started; call it once the pod workers are done.
func (a *Agent) startCSI(ctx context.Context) (stop func()) {
	if err := a.ensureCSINode(ctx); err != nil && ctx.Err() == nil {
		a.log.Warn("creating the CSINode object", "err", err)
	}
	stop = func() {}
	if !a.opts.NoBuiltinCSIDriver {
		s, err := a.startBuiltinDriver(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("the built-in CSI driver did not start; volumes of its classes cannot be provisioned or mounted on this node", "driver", local.DriverName, "err", err)
			}
		} else {
			stop = s
		}
	}
	a.volumes = a.newVolumeManager()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.watchPlugins(watchCtx)
	}()
	stopBuiltin := stop
	return func() {
		stopWatch()
		<-watched
		stopBuiltin()
	}
}

// socketPath is where a driver the agent runs serves: plugins/<driver>/csi.sock
// under the data directory, or, when that path is too long for a unix
// socket, a directory of the temporary directory named by a hash of it.
func (a *Agent) socketPath(driver string) string {
	p := filepath.Join(a.opts.DataDir, "plugins", driver, "csi.sock")
	if len(p) <= maxSocketPath {
		return p
	}
	sum := sha256.Sum256([]byte(p))
	return filepath.Join(os.TempDir(), "moorage-csi-"+hex.EncodeToString(sum[:8]), "csi.sock")
}

// startBuiltinDriver serves local.csi.moorage.io on its socket, dials it,
// registers it and starts its provisioner. The returned function stops the
// provisioner, then the driver.
func (a *Agent) startBuiltinDriver(ctx context.Context) (stop func(), err error) {
	endpoint := "unix://" + a.socketPath(local.DriverName)
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan struct{})
	var serveErr error
	var registered atomic.Bool
	go func() {
		defer close(served)
		serveErr = local.Serve(serveCtx, endpoint, local.Options{
			NodeID:  a.opts.NodeName,
			DataDir: filepath.Join(a.opts.DataDir, "csi", "local"),
			Version: a.opts.DriverVersion,
			Logger:  a.baseLog,
		})
		if registered.Load() && serveCtx.Err() == nil {
			a.log.Error("the built-in CSI driver stopped; its volumes cannot be mounted on this node until the agent restarts", "driver", local.DriverName, "err", serveErr)
		}
	}()
	stopDriver := func() {
		stopServe()
		<-served
	}
	defer func() {
		if err != nil {
			stopDriver()
		}
	}()

	dialCtx, cancelDial := context.WithTimeout(ctx, driverStartTimeout)
	defer cancelDial()
	go func() {
		select {
		case <-served: // Serve failed: stop waiting for its socket
			cancelDial()
		case <-dialCtx.Done():
		}
	}()
	waitForSocket(dialCtx, strings.TrimPrefix(endpoint, "unix://"))
	client, err := csi.Dial(dialCtx, endpoint)
	if err != nil {
		select {
		case <-served:
			if serveErr != nil {
				return nil, serveErr
			}
		default:
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = client.Close()
		}
	}()
	d, err := a.registerDriver(ctx, client)
	if err != nil {
		return nil, err
	}
	if err := a.ensureCSIDriverObject(ctx, d.name); err != nil {
		a.log.Warn("creating the CSIDriver object", "driver", d.name, "err", err)
	}

	// The provisioner stops with the agent's context (its watches would
	// fail once the API goes); the driver outlives the pod workers.
	provCtx, stopProv := context.WithCancel(ctx)
	provDone := make(chan struct{})
	go func() {
		defer close(provDone)
		if a.opts.DriverControllers == nil {
			return
		}
		err := a.opts.DriverControllers(provCtx, CSIDriver{
			Name: d.name, Client: client, NodeName: a.opts.NodeName, NodeLocal: true,
			TopologyKeys: slices.Sorted(maps.Keys(d.info.Topology)),
			StateDir:     filepath.Join(a.opts.DataDir, "csi", "controllers", d.name),
			Config:       a.cfg, Logger: a.log,
		})
		if err != nil && provCtx.Err() == nil {
			a.log.Error("the CSI driver's controllers stopped; its volumes are not provisioned, attached or resized by this node", "driver", d.name, "err", err)
		}
	}()
	registered.Store(true)
	a.log.Info("CSI driver registered", "driver", d.name, "endpoint", endpoint, "nodeID", d.info.NodeID, "topology", d.info.Topology)
	return func() {
		stopProv()
		<-provDone
		a.drivers.remove(d.name)
		_ = client.Close()
		stopDriver()
	}, nil
}

// waitForSocket waits until a socket file exists at path or ctx ends:
// dialling earlier would cost gRPC's one-second back-off after the failed
// first connection.
func waitForSocket(ctx context.Context, path string) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// registerDriver is the kubelet's registration of a node plugin: the
// driver's name and node information, its NodeVolumes, and the Node and
// CSINode objects that announce it (installDriver).
func (a *Agent) registerDriver(ctx context.Context, client *csi.Client) (*csiDriver, error) {
	info, err := client.PluginInfo(ctx)
	if err != nil {
		return nil, err
	}
	node, err := client.NodeGetInfo(ctx)
	if err != nil {
		return nil, err
	}
	vols, err := csi.OpenNodeVolumes(filepath.Join(a.opts.DataDir, "csi", "state", info.Name), client)
	if err != nil {
		return nil, fmt.Errorf("node volume state of %s: %w", info.Name, err)
	}
	d := &csiDriver{name: info.Name, client: client, volumes: vols, info: node}
	if err := a.installDriver(ctx, d); err != nil {
		return nil, err
	}
	a.drivers.add(d)
	return d, nil
}

// errTopologyCollision is the kubelet's refusal of a driver whose topology
// contradicts the node's labels.
var errTopologyCollision = errors.New("detected topology value collision")
