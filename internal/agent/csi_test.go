package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/testserver"
)

const (
	driverName  = "local.csi.moorage.io"
	topologyKey = "topology.local.csi.moorage.io/node"
)

// csiAgent is an agent run for its CSI registration, with the provisioner
// hook recording what it was given.
type csiAgent struct {
	client kubernetes.Interface
	dir    string
	stop   func() // cancels Run and waits for it to return

	mu          sync.Mutex
	log         strings.Builder
	provisioned []agent.CSIDriver
	provDone    chan struct{} // closed when the provisioner's context ends
}

func runCSIAgent(t *testing.T, node string, opts agent.Options, before func(kubernetes.Interface)) *csiAgent {
	t.Helper()
	srv := testserver.Start(t)
	ca := &csiAgent{client: testserver.Client(t, srv), dir: t.TempDir(), provDone: make(chan struct{})}
	if before != nil {
		before(ca.client)
	}
	opts.NodeName, opts.DataDir = node, ca.dir
	opts.DriverControllers = func(ctx context.Context, d agent.CSIDriver) error {
		ca.mu.Lock()
		ca.provisioned = append(ca.provisioned, d)
		ca.mu.Unlock()
		<-ctx.Done()
		close(ca.provDone)
		return nil
	}
	a, err := agent.New(srv.Loopback, slog.New(slog.NewTextHandler(logWriter{ca}, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	var once sync.Once
	ca.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Error("the agent did not stop within 15 s")
			}
		})
	}
	t.Cleanup(ca.stop)
	return ca
}

type logWriter struct{ ca *csiAgent }

func (w logWriter) Write(p []byte) (int, error) {
	w.ca.mu.Lock()
	defer w.ca.mu.Unlock()
	return w.ca.log.Write(p)
}

func (ca *csiAgent) logged() string {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.log.String()
}

func waitUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (ca *csiAgent) csiNode(t *testing.T, node string) *storagev1.CSINode {
	t.Helper()
	var cn *storagev1.CSINode
	waitUntil(t, "CSINode "+node, func() (bool, string) {
		var err error
		cn, err = ca.client.StorageV1().CSINodes().Get(context.Background(), node, metav1.GetOptions{})
		return err == nil, errString(err)
	})
	return cn
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The agent runs the built-in driver on a socket under its data directory
// and registers it as the kubelet registers a node plugin: the CSINode
// entry (owned by the Node), the node's topology label and node ID
// annotation, the CSIDriver object; it hands the driver to the provisioner,
// and on shutdown stops both and removes the socket.
func TestAgentRegistersBuiltinCSIDriver(t *testing.T) {
	ca := runCSIAgent(t, "csi-node", agent.Options{DriverVersion: "v-test"}, nil)
	ctx := context.Background()
	var cn *storagev1.CSINode
	waitUntil(t, "the driver in CSINode", func() (bool, string) {
		cn = ca.csiNode(t, "csi-node")
		return len(cn.Spec.Drivers) == 1, "drivers: " + strings.Join(driverNames(cn), ",")
	})
	want := storagev1.CSINodeDriver{Name: driverName, NodeID: "csi-node", TopologyKeys: []string{topologyKey}}
	if got := cn.Spec.Drivers[0]; got.Name != want.Name || got.NodeID != want.NodeID || strings.Join(got.TopologyKeys, ",") != topologyKey || got.Allocatable != nil {
		t.Errorf("CSINode driver = %+v, want %+v", got, want)
	}
	node, err := ca.client.CoreV1().Nodes().Get(ctx, "csi-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cn.Annotations["storage.alpha.kubernetes.io/migrated-plugins"]; got != "kubernetes.io/aws-ebs,kubernetes.io/azure-disk,kubernetes.io/azure-file,kubernetes.io/cinder,kubernetes.io/gce-pd,kubernetes.io/portworx-volume,kubernetes.io/vsphere-volume" {
		t.Errorf("migrated-plugins annotation = %q", got)
	}
	if refs := cn.OwnerReferences; len(refs) != 1 || refs[0].APIVersion != "v1" || refs[0].Kind != "Node" || refs[0].Name != "csi-node" || refs[0].UID != node.UID {
		t.Errorf("CSINode owner references = %+v, want the Node (uid %s)", refs, node.UID)
	}
	if node.Labels[topologyKey] != "csi-node" {
		t.Errorf("node labels = %v, want %s=csi-node", node.Labels, topologyKey)
	}
	var ids map[string]string
	if err := json.Unmarshal([]byte(node.Annotations["csi.volume.kubernetes.io/nodeid"]), &ids); err != nil || ids[driverName] != "csi-node" {
		t.Errorf("node ID annotation = %q (%v)", node.Annotations["csi.volume.kubernetes.io/nodeid"], err)
	}
	// The CSIDriver object is written after the CSINode entry.
	var d *storagev1.CSIDriver
	waitUntil(t, "the CSIDriver object", func() (bool, string) {
		var err error
		d, err = ca.client.StorageV1().CSIDrivers().Get(ctx, driverName, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	s := d.Spec
	if !isFalse(s.AttachRequired) || !isFalse(s.PodInfoOnMount) || !isFalse(s.RequiresRepublish) || !isFalse(s.StorageCapacity) ||
		s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.FileFSGroupPolicy ||
		len(s.VolumeLifecycleModes) != 1 || s.VolumeLifecycleModes[0] != storagev1.VolumeLifecyclePersistent {
		t.Errorf("CSIDriver spec = %+v", s)
	}

	sock := filepath.Join(ca.dir, "plugins", driverName, "csi.sock")
	if st, err := os.Stat(sock); err != nil || st.Mode()&fs.ModeSocket == 0 {
		t.Errorf("driver socket %s: %v", sock, err)
	}
	var p agent.CSIDriver
	waitUntil(t, "the provisioner hook", func() (bool, string) {
		ca.mu.Lock()
		defer ca.mu.Unlock()
		if len(ca.provisioned) > 0 {
			p = ca.provisioned[0]
		}
		return len(ca.provisioned) == 1, "not called"
	})
	if p.Name != driverName || p.NodeName != "csi-node" || strings.Join(p.TopologyKeys, ",") != topologyKey ||
		!p.NodeLocal || p.StateDir != filepath.Join(ca.dir, "csi", "controllers", driverName) || p.Config == nil || p.Logger == nil || p.Client == nil {
		t.Errorf("provisioner given %+v", p)
	}
	info, err := p.Client.PluginInfo(ctx)
	if err != nil || info.Name != driverName || info.VendorVersion != "v-test" {
		t.Errorf("PluginInfo through the provisioner's client = %+v, %v", info, err)
	}

	ca.stop()
	select {
	case <-ca.provDone:
	default:
		t.Error("the provisioner still runs after the agent stopped")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("driver socket after shutdown: %v", err)
	}
}

func isFalse(b *bool) bool { return b != nil && !*b }

func driverNames(cn *storagev1.CSINode) []string {
	var out []string
	for _, d := range cn.Spec.Drivers {
		out = append(out, d.Name)
	}
	return out
}

// Without the built-in driver, the node still gets its CSINode (as the
// kubelet writes one at start), listing nothing; no CSIDriver object, no
// socket, no provisioner.
func TestAgentWithoutBuiltinCSIDriver(t *testing.T) {
	ca := runCSIAgent(t, "plain-node", agent.Options{NoBuiltinCSIDriver: true}, nil)
	cn := ca.csiNode(t, "plain-node")
	if len(cn.Spec.Drivers) != 0 {
		t.Errorf("CSINode drivers = %v", driverNames(cn))
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := ca.client.StorageV1().CSIDrivers().Get(context.Background(), driverName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("CSIDriver object: %v, want NotFound", err)
	}
	if _, err := os.Stat(filepath.Join(ca.dir, "plugins", driverName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket directory of the disabled driver: %v", err)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if len(ca.provisioned) != 0 {
		t.Errorf("provisioner started for %+v", ca.provisioned)
	}
}

// A node already labelled with another value of the driver's topology key
// refuses the driver, with the kubelet's words; the driver is stopped and
// nothing is registered.
func TestAgentRefusesCSIDriverWithCollidingTopology(t *testing.T) {
	ca := runCSIAgent(t, "taken-node", agent.Options{}, func(c kubernetes.Interface) {
		_, err := c.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: "taken-node", Labels: map[string]string{topologyKey: "elsewhere"},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	})
	want := `detected topology value collision: driver reported \"topology.local.csi.moorage.io/node\":\"taken-node\" but existing label is \"topology.local.csi.moorage.io/node\":\"elsewhere\"`
	waitUntil(t, "the refusal", func() (bool, string) {
		return strings.Contains(ca.logged(), want), "log:\n" + ca.logged()
	})
	if _, err := os.Lstat(filepath.Join(ca.dir, "plugins", driverName, "csi.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused driver's socket: %v", err)
	}
	cn := ca.csiNode(t, "taken-node")
	if len(cn.Spec.Drivers) != 0 {
		t.Errorf("CSINode drivers = %v", driverNames(cn))
	}
	node, err := ca.client.CoreV1().Nodes().Get(context.Background(), "taken-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels[topologyKey] != "elsewhere" || node.Annotations["csi.volume.kubernetes.io/nodeid"] != "" {
		t.Errorf("node labels %v, annotations %v", node.Labels, node.Annotations)
	}
}
