package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/csi/local"
	"github.com/moorage/moorage/internal/csi/registration"
)

// External CSI drivers register as with the kubelet: a driver's
// registration sidecar (upstream's node-driver-registrar; `moorage
// csi-driver --registration-dir`) puts a socket into the agent's
// plugins_registry directory. The agent's plugin watcher finds it (by
// polling the directory every pluginPollInterval; the kubelet uses
// inotify), asks it for the driver's name, CSI endpoint and versions,
// validates them as the kubelet does, registers the driver exactly as the
// built-in one (NodeGetInfo, the Node's labels and annotation, the CSINode
// entry) and tells the sidecar the outcome. A socket that disappears
// deregisters its driver: the CSINode entry and node ID annotation go,
// the topology labels stay (as upstream).
//
// The controllers upstream deploys beside a driver (provisioner, attacher,
// resizer) run in the agent too, when the driver has a controller service:
// for node-local drivers (local.csi.moorage.io run as its own process) on
// every node, for its own node's volumes; for any other driver in one agent
// at a time, chosen by a Lease in kube-system (leader election, as the
// sidecars do), since its controller service may be the same backend seen
// from every node.

const (
	pluginPollInterval  = 500 * time.Millisecond
	pluginRetryInterval = 10 * time.Second
	// controllersLeaseNamespace holds the Leases of external drivers'
	// controllers.
	controllersLeaseNamespace = "kube-system"
)

// externalDriver is a driver registered through a registration socket.
type externalDriver struct {
	socket string
	name   string
	stop   func() // stops its controllers and closes its client
}

// pluginDir is the agent's registration directory.
func (a *Agent) pluginDir() string { return filepath.Join(a.opts.DataDir, "plugins_registry") }

// watchPlugins registers and deregisters external drivers until ctx
// ends, then stops their controllers.
func (a *Agent) watchPlugins(ctx context.Context) {
	dir := a.pluginDir()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		a.log.Error("plugin registration directory; external CSI drivers cannot register", "dir", dir, "err", err)
		return
	}
	known := map[string]*externalDriver{} // by socket path
	failed := map[string]time.Time{}      // sockets refused, when
	defer func() {
		for _, d := range known {
			d.stop()
		}
	}()
	tick := time.NewTicker(pluginPollInterval)
	defer tick.Stop()
	for {
		present := map[string]time.Time{}
		entries, err := os.ReadDir(dir)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("reading the plugin registration directory", "dir", dir, "err", err)
		}
		for _, e := range entries {
			// As the kubelet: sockets only; names starting with "." are ignored.
			if strings.HasPrefix(e.Name(), ".") || e.Type()&fs.ModeSocket == 0 {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			present[filepath.Join(dir, e.Name())] = info.ModTime()
		}
		for socket, d := range known {
			if _, ok := present[socket]; !ok {
				a.deregisterExternal(ctx, d)
				delete(known, socket)
			}
		}
		for socket := range failed {
			if _, ok := present[socket]; !ok {
				delete(failed, socket)
			}
		}
		for socket, mtime := range present {
			if _, ok := known[socket]; ok {
				continue
			}
			// A refused socket is tried again after a while (the driver
			// may not have been ready), or at once when it is replaced.
			if at, ok := failed[socket]; ok && mtime.Before(at) && time.Since(at) < pluginRetryInterval {
				continue
			}
			d, err := a.registerExternal(ctx, socket)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				a.log.Error("CSI driver registration failed", "socket", socket, "err", err)
				failed[socket] = time.Now()
				continue
			}
			known[socket] = d
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// registerExternal is the kubelet's ValidatePlugin and RegisterPlugin for
// one registration socket; the plugin hears the outcome either way.
func (a *Agent) registerExternal(ctx context.Context, socket string) (_ *externalDriver, err error) {
	p, err := registration.Dial(socket)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	info, err := p.Info(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if nerr := p.Notify(ctx, err); nerr != nil && err == nil {
			a.log.Warn("telling the plugin it is registered", "driver", info.Name, "err", nerr)
		}
	}()
	if _, err := info.Validate(); err != nil {
		return nil, err
	}
	if _, ok := a.drivers.lookup(info.Name); ok {
		return nil, fmt.Errorf("kubernetes.io/csi: ValidatePlugin for CSI driver %q failed. Another driver with the same name is already registered", info.Name)
	}
	endpoint := info.Endpoint
	if !strings.HasPrefix(endpoint, "unix://") {
		endpoint = "unix://" + endpoint
	}
	dialCtx, cancel := context.WithTimeout(ctx, driverStartTimeout)
	defer cancel()
	client, err := csi.Dial(dialCtx, endpoint)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.io/csi: RegisterPlugin for CSI driver %q: %w", info.Name, err)
	}
	d, err := a.registerExternalClient(ctx, client, info.Name, endpoint)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kubernetes.io/csi: RegisterPlugin for CSI driver %q: %w", info.Name, err)
	}
	if err := a.ensureCSIDriverObject(ctx, d.name); err != nil {
		a.log.Warn("creating the CSIDriver object", "driver", d.name, "err", err)
	}
	stopControllers := a.startExternalControllers(ctx, d)
	a.log.Info("CSI driver registered", "driver", d.name, "endpoint", endpoint, "socket", socket, "nodeID", d.info.NodeID, "topology", d.info.Topology)
	return &externalDriver{socket: socket, name: d.name, stop: func() {
		stopControllers()
		_ = client.Close()
	}}, nil
}

// registerExternalClient registers the driver behind client, which must
// call itself what its registration said.
func (a *Agent) registerExternalClient(ctx context.Context, client *csi.Client, name, endpoint string) (*csiDriver, error) {
	pi, err := client.PluginInfo(ctx)
	if err != nil {
		return nil, err
	}
	if pi.Name != name {
		return nil, fmt.Errorf("the driver at %s calls itself %q, but its registration names %q", endpoint, pi.Name, name)
	}
	return a.registerDriver(ctx, client)
}

// deregisterExternal is the kubelet's DeRegisterPlugin.
func (a *Agent) deregisterExternal(ctx context.Context, d *externalDriver) {
	d.stop()
	a.drivers.remove(d.name)
	if err := a.uninstallDriver(ctx, d.name); err != nil && ctx.Err() == nil {
		a.log.Warn("removing the deregistered CSI driver from the Node and CSINode", "driver", d.name, "err", err)
	}
	a.log.Info("CSI driver deregistered", "driver", d.name, "socket", d.socket)
}

// startExternalControllers runs the driver's controllers (see the top of
// this file) and returns what stops them.
func (a *Agent) startExternalControllers(ctx context.Context, d *csiDriver) (stop func()) {
	if a.opts.DriverControllers == nil {
		return func() {}
	}
	caps, err := d.client.PluginCapabilities(ctx)
	if err != nil || !caps.ControllerService {
		if err != nil {
			a.log.Warn("the driver's plugin capabilities; not running its controllers", "driver", d.name, "err", err)
		}
		return func() {}
	}
	nodeLocal := d.name == local.DriverName
	run := func(ctx context.Context) {
		err := a.opts.DriverControllers(ctx, CSIDriver{
			Name: d.name, Client: d.client, NodeName: a.opts.NodeName, NodeLocal: nodeLocal,
			TopologyKeys: slices.Sorted(maps.Keys(d.info.Topology)),
			StateDir:     filepath.Join(a.opts.DataDir, "csi", "controllers", d.name),
			Config:       a.cfg, Logger: a.log.With("driver", d.name),
		})
		if err != nil && ctx.Err() == nil {
			a.log.Error("the CSI driver's controllers stopped", "driver", d.name, "err", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if nodeLocal {
			run(ctx)
			return
		}
		a.runElected(ctx, controllersLease(d.name), run)
	}()
	return func() {
		cancel()
		<-done
	}
}

var notLeaseNameChar = regexp.MustCompile(`[^a-zA-Z0-9-]`)

// controllersLease names the Lease of a driver's controllers: the driver
// name sanitised as the sidecars sanitise it for theirs.
func controllersLease(driver string) string {
	return "moorage-csi-controllers-" + strings.ToLower(notLeaseNameChar.ReplaceAllString(driver, "-"))
}

// runElected runs f while this agent holds the Lease, again each time it
// gets it back, until ctx ends.
func (a *Agent) runElected(ctx context.Context, lease string, f func(context.Context)) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: controllersLeaseNamespace, Name: lease},
		Client:     a.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: a.opts.NodeName},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: lease, ReleaseOnCancel: true,
			// The sidecars' defaults.
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 5 * time.Second,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: f,
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			a.log.Error("leader election for the CSI driver's controllers", "lease", lease, "err", err)
			return
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
}

// uninstallDriver is the kubelet's UninstallCSIDriver: the driver leaves
// the CSINode object and the Node's node ID annotation.
func (a *Agent) uninstallDriver(ctx context.Context, name string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cn, err := a.client.StorageV1().CSINodes().Get(ctx, a.opts.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		i := slices.IndexFunc(cn.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == name })
		if i < 0 {
			return nil
		}
		cn.Spec.Drivers = slices.Delete(cn.Spec.Drivers, i, i+1)
		_, err = a.client.StorageV1().CSINodes().Update(ctx, cn, metav1.UpdateOptions{FieldManager: a.manager})
		return err
	})
	if err != nil {
		return fmt.Errorf("error uninstalling CSI driver from CSINode object: %w", err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ids := map[string]string{}
		if s := node.Annotations[annCSINodeID]; s != "" {
			if err := json.Unmarshal([]byte(s), &ids); err != nil {
				return errors.Join(err, fmt.Errorf("failed to parse node's %q annotation", annCSINodeID))
			}
		}
		if _, ok := ids[name]; !ok {
			return nil
		}
		delete(ids, name)
		if len(ids) == 0 {
			delete(node.Annotations, annCSINodeID)
		} else {
			b, err := json.Marshal(ids)
			if err != nil {
				return err
			}
			node.Annotations[annCSINodeID] = string(b)
		}
		_, err = a.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{FieldManager: a.manager})
		return err
	})
	if err != nil {
		return fmt.Errorf("error uninstalling CSI driver from Node object: %w", err)
	}
	return nil
}
