// Package agent is moorage's node agent (upstream's kubelet): it registers
// its Node and keeps it alive through a Lease, runs the pods the scheduler
// bound to it as real containers, prepares and mounts their volumes, probes
// them, reports their status with upstream's phases, conditions and
// container states, and serves their logs and exec sessions. It also runs
// the node's CSI drivers (the built-in local.csi.moorage.io) and registers
// them as the kubelet does (csi.go).
//
// Design: like the kubelet, the agent is level-triggered. Pods come from an
// informer on pods with spec.nodeName = this node; each pod has a worker
// that brings the node to the pod's desired state (sandbox, volumes, init
// containers in order, containers with restart back-off) and writes status
// when it changed. What runs is rediscovered from disk after a restart: the
// container runtime keeps each container's state next to its bundle.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/image"
	"github.com/moorage/moorage/internal/network"
	"github.com/moorage/moorage/internal/volume"
)

// Options configure an agent.
type Options struct {
	// NodeName is the Node this agent registers; "" means the host name.
	NodeName string
	// DataDir holds the agent's state: pods/, containers/, images/.
	DataDir string
	// NodeIP is the address reported as InternalIP; "" picks one.
	NodeIP string
	// Port is where the agent serves logs and exec (the kubelet's 10250);
	// reported in the Node's daemonEndpoints.
	Port int
	// Version is the kubelet version reported; RuntimeVersion the runtime's.
	Version, RuntimeVersion string
	// ShimCommand starts the container runtime's shim (see package
	// container): the moorage binary and its hidden shim subcommand.
	ShimCommand []string
	// Runc is the runc binary; "" looks it up in PATH.
	Runc string
	// NoBuiltinCSIDriver leaves out the built-in CSI driver
	// local.csi.moorage.io (and its provisioner) on this node.
	NoBuiltinCSIDriver bool
	// DriverVersion is the version the built-in CSI driver reports
	// (moorage's own).
	DriverVersion string
	// DriverControllers runs the controllers that upstream deploys as a
	// CSI driver's sidecars (provisioner, attacher, resizer) for a driver
	// registered on this node, until ctx ends. internal/cli passes
	// internal/cli.runDriverControllers; see csi.go for why they are not
	// imported here. Nil runs none: the driver's claims are then not
	// provisioned, attached or resized by this node.
	DriverControllers func(ctx context.Context, d CSIDriver) error
}

// Agent is one node's agent.
type Agent struct {
	opts    Options
	log     *slog.Logger
	baseLog *slog.Logger // log without the agent's attributes, for the drivers it runs
	cfg     *rest.Config // for the controllers the agent runs (provisioners)
	client  kubernetes.Interface
	manager string // field manager of the agent's writes
	ip      string

	nodeUID    types.UID
	lastReport time.Time
	// statusNow asks the heartbeat to write the node status at once
	// (inuse.go).
	statusNow chan struct{}

	runtime *container.Runtime
	images  *image.Store
	// net is the node's pod network, once the node has its pod CIDR.
	net atomic.Pointer[network.Node]
	// volumes is built by Run once the CSI drivers are registered (their
	// topology labels are part of the node's), before any pod worker starts.
	volumes  *volume.Manager
	drivers  csiDrivers
	events   record.EventBroadcaster
	recorder record.EventRecorder

	// expansions remembers failed node expansions (expand.go).
	expansions expansions

	podsMu  sync.Mutex
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup

	mu       sync.Mutex
	notReady string // why the node is not ready; "" when it is
}

// New builds an agent on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Agent, error) {
	if opts.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		opts.NodeName = host
	}
	if opts.DataDir == "" {
		return nil, errors.New("agent: a data directory is required")
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, "pods"), 0o750); err != nil {
		return nil, err
	}
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "moorage-agent/"+opts.NodeName)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		opts: opts, log: log.With("node", opts.NodeName), baseLog: log, cfg: cfg, client: client,
		manager: "kubelet", ip: nodeIP(opts.NodeIP), workers: map[types.UID]*podWorker{},
		statusNow: make(chan struct{}, 1),
	}
	a.events = record.NewBroadcaster(record.WithContext(context.Background()))
	a.recorder = a.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: opts.NodeName})
	cgroupParent := "/moorage-" + opts.NodeName
	// KillAll reads it to remove the node's cgroups.
	if err := os.WriteFile(filepath.Join(opts.DataDir, "cgroup-parent"), []byte(cgroupParent), 0o600); err != nil {
		return nil, err
	}
	a.runtime, err = container.New(container.Config{
		StateDir: filepath.Join(opts.DataDir, "containers"), Runc: opts.Runc,
		CgroupParent: cgroupParent, ShimCommand: opts.ShimCommand,
		MaskPaths: []string{opts.DataDir},
	})
	if err != nil {
		a.notReady = fmt.Sprintf("container runtime is down: %v (install runc: apt-get install runc)", err)
	}
	if a.images, err = image.Open(filepath.Join(opts.DataDir, "images")); err != nil {
		return nil, err
	}
	return a, nil
}

// newVolumeManager builds the volume manager for the node: its labels
// (with the registered CSI drivers' topology, as they are at each check),
// its allocatable resources, and the registered drivers.
func (a *Agent) newVolumeManager() *volume.Manager {
	_, allocatable := a.nodeResources()
	return volume.NewManager(a.opts.DataDir, apiGetter{a.client}, volume.Options{
		NodeName: a.opts.NodeName, NodeLabels: a.nodeLabels,
		NodeAllocatable: allocatable,
		CSIDrivers:      a.drivers.lookup,
		CSIDriver:       apiGetter{a.client}.CSIDriver,
		// Attach: inuse.go.
		VolumeAttachment:   apiGetter{a.client}.VolumeAttachment,
		ReportVolumesInUse: a.reportVolumesInUse,
		// Node expansion: expand.go.
		NodeExpand: a.nodeExpand,
		// Projected service account tokens: token.go.
		TokenSource: tokenSource{a.client},
	})
}

// Images is the node's image store.
func (a *Agent) Images() *image.Store { return a.images }

// apiGetter reads what volumes need straight from the API.
type apiGetter struct{ client kubernetes.Interface }

func (g apiGetter) ConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return g.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (g apiGetter) Secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	return g.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}

func (g apiGetter) PersistentVolumeClaim(ctx context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	return g.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
}

func (g apiGetter) PersistentVolume(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	return g.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
}

func (g apiGetter) CSIDriver(ctx context.Context, name string) (*storagev1.CSIDriver, error) {
	return g.client.StorageV1().CSIDrivers().Get(ctx, name, metav1.GetOptions{})
}

// NodeName is the name of the Node this agent runs.
func (a *Agent) NodeName() string { return a.opts.NodeName }

// readiness reports whether the node is ready for pods, and the message of
// its Ready condition.
func (a *Agent) readiness() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.notReady != "" {
		return false, a.notReady
	}
	if a.runtime != nil && a.net.Load() == nil {
		return false, "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:moorage: the node has no pod network yet (waiting for its pod CIDR)"
	}
	return true, "kubelet is posting ready status"
}

// Run registers the node and serves it until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	for {
		err := a.registerNode(ctx)
		if err == nil {
			break
		}
		a.log.Warn("registering node", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err := a.renewLease(ctx); err != nil {
		a.log.Warn("creating node lease", "err", err)
	}
	a.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer a.events.Shutdown()
	var services sync.WaitGroup
	defer func() {
		services.Wait()
		if n := a.net.Load(); n != nil {
			if err := n.CloseIfIdle(); err != nil {
				a.log.Warn("closing the pod network", "err", err)
			}
		}
	}()
	netReady := make(chan struct{})
	services.Go(func() {
		n, err := a.openNetwork(ctx)
		close(netReady)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("opening the pod network", "err", err)
			}
			return
		}
		a.net.Store(n)
		select { // the node is Ready now: say so at once
		case a.statusNow <- struct{}{}:
		default:
		}
		a.pruneNetworks()
		a.serveClusterIPs(ctx, n, &services)
	})
	// Pods normally find the network up; past this they wait for it.
	select {
	case <-netReady:
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	// Deferred before the pod workers start, so it runs after they stop.
	defer a.startCSI(ctx)()
	if a.runtime != nil {
		factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.opts.NodeName).String()
		}))
		pods := factory.Core().V1().Pods().Informer()
		if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { a.podChanged(ctx, obj) },
			UpdateFunc: func(_, obj any) { a.podChanged(ctx, obj) },
			DeleteFunc: a.podDeleted,
		}); err != nil {
			return err
		}
		factory.Start(ctx.Done())
		defer factory.Shutdown()
	}
	a.heartbeat(ctx)
	a.wg.Wait()
	return nil
}
