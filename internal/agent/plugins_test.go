package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/csi/local"
	"github.com/moorage/moorage/internal/csi/registration"
)

// serveExternal runs the built-in driver as its own server (as `moorage
// csi-driver --registration-dir` does) and its registration socket in the
// agent's plugins_registry; it returns the registrar and a function that
// stops both (the registration socket goes first).
func serveExternal(t *testing.T, ca *csiAgent, node string, info registration.Info) (*registration.Registrar, func()) {
	t.Helper()
	dir := t.TempDir()
	endpoint := "unix://" + filepath.Join(dir, "csi.sock")
	ctx, cancel := context.WithCancel(context.Background())
	driverDone, regDone := make(chan struct{}), make(chan struct{})
	serving := make(chan struct{})
	go func() {
		defer close(driverDone)
		if err := local.Serve(ctx, endpoint, local.Options{NodeID: node, DataDir: filepath.Join(dir, "data"), Serving: func() { close(serving) }}); err != nil {
			t.Error(err)
		}
	}()
	<-serving
	if info.Name == "" {
		info.Name = driverName
	}
	if info.Endpoint == "" {
		info.Endpoint = endpoint
	}
	ready := make(chan *registration.Registrar, 1)
	go func() {
		defer close(regDone)
		if err := registration.Serve(ctx, filepath.Join(ca.dir, "plugins_registry"), info, nil, func(r *registration.Registrar) { ready <- r }); err != nil {
			t.Error(err)
		}
	}()
	var r *registration.Registrar
	select {
	case r = <-ready:
	case <-regDone:
		t.Fatal("registration did not start")
	}
	stop := func() {
		cancel()
		<-regDone
		<-driverDone
	}
	t.Cleanup(stop)
	return r, stop
}

// waitStatus waits for the agent's answer to a registration.
func waitStatus(t *testing.T, r *registration.Registrar) (bool, string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		ok, msg, next := r.Status()
		if ok || msg != "" {
			return ok, msg
		}
		select {
		case <-next:
		case <-deadline:
			t.Fatal("the agent did not answer the registration")
		}
	}
}

// A driver in another process registers through the plugin registration
// socket, as with the kubelet: the CSINode entry, the node's label and
// annotation, its controllers started (node-local, for the built-in
// driver's volumes); when its socket goes, the entry and annotation go.
func TestAgentRegistersExternalCSIDriver(t *testing.T) {
	ca := runCSIAgent(t, "ext-node", agent.Options{NoBuiltinCSIDriver: true}, nil)
	ca.csiNode(t, "ext-node")
	r, stop := serveExternal(t, ca, "ext-node", registration.Info{})
	if ok, msg := waitStatus(t, r); !ok {
		t.Fatalf("registration refused: %s", msg)
	}
	cn := ca.csiNode(t, "ext-node")
	if got := driverNames(cn); strings.Join(got, ",") != driverName || cn.Spec.Drivers[0].NodeID != "ext-node" {
		t.Errorf("CSINode drivers = %+v", cn.Spec.Drivers)
	}
	var p agent.CSIDriver
	waitUntil(t, "the driver's controllers", func() (bool, string) {
		ca.mu.Lock()
		defer ca.mu.Unlock()
		if len(ca.provisioned) > 0 {
			p = ca.provisioned[0]
		}
		return len(ca.provisioned) == 1, "not called"
	})
	if p.Name != driverName || !p.NodeLocal || p.StateDir != filepath.Join(ca.dir, "csi", "controllers", driverName) {
		t.Errorf("controllers given %+v", p)
	}

	stop()
	waitUntil(t, "deregistration", func() (bool, string) {
		cn := ca.csiNode(t, "ext-node")
		return len(cn.Spec.Drivers) == 0, "drivers: " + strings.Join(driverNames(cn), ",")
	})
	var node *corev1.Node
	waitUntil(t, "the node ID annotation to go", func() (bool, string) {
		var err error
		if node, err = ca.client.CoreV1().Nodes().Get(context.Background(), "ext-node", metav1.GetOptions{}); err != nil {
			return false, err.Error()
		}
		var ids map[string]string
		_ = json.Unmarshal([]byte(node.Annotations["csi.volume.kubernetes.io/nodeid"]), &ids)
		_, ok := ids[driverName]
		return !ok, node.Annotations["csi.volume.kubernetes.io/nodeid"]
	})
	if node.Labels[topologyKey] != "ext-node" {
		t.Errorf("topology label removed at deregistration (upstream keeps it): %v", node.Labels)
	}
	select {
	case <-ca.provDone:
	case <-time.After(5 * time.Second):
		t.Error("the driver's controllers still run after it deregistered")
	}
}

// The agent refuses what the kubelet refuses, and says why to the driver's
// registrar: unsupported versions; a second driver of a registered name.
func TestAgentRefusesExternalCSIDriver(t *testing.T) {
	ca := runCSIAgent(t, "ref-node", agent.Options{}, nil) // the built-in driver is registered
	waitUntil(t, "the built-in driver", func() (bool, string) {
		cn := ca.csiNode(t, "ref-node")
		return len(cn.Spec.Drivers) == 1, "not yet"
	})
	r, _ := serveExternal(t, ca, "ref-node", registration.Info{Name: "other.example.com", Versions: []string{"1.0.0"}})
	// The built-in driver server answers with its own name: refused.
	if ok, msg := waitStatus(t, r); ok || !strings.Contains(msg, `calls itself "local.csi.moorage.io", but its registration names "other.example.com"`) {
		t.Errorf("status = %v %q", ok, msg)
	}
	r, _ = serveExternal(t, ca, "ref-node", registration.Info{})
	if ok, msg := waitStatus(t, r); ok || !strings.Contains(msg, `CSI driver "local.csi.moorage.io" failed. Another driver with the same name is already registered`) {
		t.Errorf("status = %v %q", ok, msg)
	}
	if cn := ca.csiNode(t, "ref-node"); len(cn.Spec.Drivers) != 1 {
		t.Errorf("CSINode drivers = %v", driverNames(cn))
	}
}

// extDriver is a minimal CSI driver of another name, with a controller
// service: the agent runs its controllers under a Lease.
type extDriver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedNodeServer
	csipb.UnimplementedControllerServer
}

func (extDriver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: "ext.example.com", VendorVersion: "1"}, nil
}

func (extDriver) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	return &csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{{Type: &csipb.PluginCapability_Service_{
		Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}}}}}, nil
}

func (extDriver) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: "ext-id-1", MaxVolumesPerNode: 7}, nil
}

func TestExternalDriverLease(t *testing.T) {
	ca := runCSIAgent(t, "lease-node", agent.Options{NoBuiltinCSIDriver: true}, nil)
	ca.csiNode(t, "lease-node")
	dir := t.TempDir()
	sock := filepath.Join(dir, "ext.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csipb.RegisterIdentityServer(srv, extDriver{})
	csipb.RegisterNodeServer(srv, extDriver{})
	csipb.RegisterControllerServer(srv, extDriver{})
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *registration.Registrar, 1)
	served := make(chan error, 1)
	go func() {
		served <- registration.Serve(ctx, filepath.Join(ca.dir, "plugins_registry"), registration.Info{Name: "ext.example.com", Endpoint: sock}, nil, func(r *registration.Registrar) { ready <- r })
	}()
	select {
	case r := <-ready:
		if ok, msg := waitStatus(t, r); !ok {
			t.Fatalf("refused: %s", msg)
		}
	case err := <-served:
		t.Fatalf("registration.Serve: %v", err)
	}
	cn := ca.csiNode(t, "lease-node")
	if len(cn.Spec.Drivers) != 1 || cn.Spec.Drivers[0].NodeID != "ext-id-1" || cn.Spec.Drivers[0].Allocatable == nil || *cn.Spec.Drivers[0].Allocatable.Count != 7 {
		t.Errorf("CSINode drivers = %+v", cn.Spec.Drivers)
	}
	waitUntil(t, "the controllers", func() (bool, string) {
		ca.mu.Lock()
		defer ca.mu.Unlock()
		return len(ca.provisioned) == 1 && !ca.provisioned[0].NodeLocal && ca.provisioned[0].Name == "ext.example.com", fmt.Sprintf("%+v", ca.provisioned)
	})
	lease, err := ca.client.CoordinationV1().Leases("kube-system").Get(ctx, "moorage-csi-controllers-ext-example-com", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "lease-node" {
		t.Errorf("lease holder = %v", lease.Spec.HolderIdentity)
	}
}
