package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	goruntime "runtime"
	"slices"

	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/csi/local"
)

// The API side of CSI driver registration, as the kubelet's
// nodeinfomanager writes it (kubernetes/kubernetes
// pkg/volume/csi/nodeinfomanager): the Node gets the driver's topology
// segments as labels and its node ID in the csi.volume.kubernetes.io/nodeid
// annotation (a JSON map, driver → node ID); the CSINode object named after
// the node, owned by the Node, lists each driver with its node ID, sorted
// topology keys and, when the driver sets a limit, allocatable.count.

// annCSINodeID is the kubelet's annotation of driver node IDs on the Node.
const annCSINodeID = "csi.volume.kubernetes.io/nodeid"

// annMigratedPlugins lists, on the CSINode, the in-tree plugins whose
// volumes this node sets up through their CSI drivers (CSI migration;
// internal/volume/migration.go): all that upstream 1.33 migrates, as the
// kubelet writes it (sorted, comma-separated).
const (
	annMigratedPlugins = "storage.alpha.kubernetes.io/migrated-plugins"
	migratedPlugins    = "kubernetes.io/aws-ebs,kubernetes.io/azure-disk,kubernetes.io/azure-file,kubernetes.io/cinder,kubernetes.io/gce-pd,kubernetes.io/portworx-volume,kubernetes.io/vsphere-volume"
)

// ensureCSINode creates the node's CSINode object (without drivers) if it
// is missing, as the kubelet does at start, and points its owner
// reference at the current Node.
func (a *Agent) ensureCSINode(ctx context.Context) error {
	_, err := a.csiNode(ctx)
	return err
}

// csiNode is the node's CSINode, created if missing. An owner reference to
// an earlier Node of the same name (deleted and registered again) is
// replaced, or the garbage collector would delete the object.
func (a *Agent) csiNode(ctx context.Context) (*storagev1.CSINode, error) {
	csiNodes := a.client.StorageV1().CSINodes()
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: a.opts.NodeName, UID: a.nodeUID}
	cn, err := csiNodes.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cn = &storagev1.CSINode{
			ObjectMeta: metav1.ObjectMeta{
				Name: a.opts.NodeName, OwnerReferences: []metav1.OwnerReference{owner},
				Annotations: map[string]string{annMigratedPlugins: migratedPlugins},
			},
			Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{}},
		}
		cn, err = csiNodes.Create(ctx, cn, metav1.CreateOptions{FieldManager: a.manager})
		if apierrors.IsAlreadyExists(err) {
			cn, err = csiNodes.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, err
	}
	for i, ref := range cn.OwnerReferences {
		if ref.Kind == "Node" && ref.Name == a.opts.NodeName && ref.UID != a.nodeUID && a.nodeUID != "" {
			cn.OwnerReferences[i] = owner
			return csiNodes.Update(ctx, cn, metav1.UpdateOptions{FieldManager: a.manager})
		}
	}
	return cn, nil
}

// installDriver records a registered driver in the Node and the CSINode
// (the kubelet's InstallCSIDriver), retrying on write conflicts.
func (a *Agent) installDriver(ctx context.Context, d *csiDriver) error {
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return a.installDriverInNode(ctx, d) }); err != nil {
		return fmt.Errorf("error updating Node object with CSI driver node info: %w", err)
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return a.installDriverInCSINode(ctx, d) }); err != nil {
		return fmt.Errorf("error updating CSINode object with CSI driver node info: %w", err)
	}
	return nil
}

func (a *Agent) installDriverInNode(ctx context.Context, d *csiDriver) error {
	nodes := a.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for k, v := range d.info.Topology {
		if cur, ok := node.Labels[k]; ok && cur != v {
			return fmt.Errorf("%w: driver reported %q:%q but existing label is %q:%q", errTopologyCollision, k, v, k, cur)
		}
	}
	ids := map[string]string{}
	if s := node.Annotations[annCSINodeID]; s != "" {
		if err := json.Unmarshal([]byte(s), &ids); err != nil {
			return fmt.Errorf("failed to parse node's %q annotation value (%q) err=%v", annCSINodeID, s, err)
		}
	}
	changed := ids[d.name] != d.info.NodeID
	ids[d.name] = d.info.NodeID
	for k, v := range d.info.Topology {
		changed = changed || node.Labels[k] != v
	}
	if !changed {
		return nil
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	maps.Copy(node.Labels, d.info.Topology)
	if node.Annotations == nil {
		node.Annotations = map[string]string{}
	}
	node.Annotations[annCSINodeID] = string(b)
	_, err = nodes.Update(ctx, node, metav1.UpdateOptions{FieldManager: a.manager})
	return err
}

func (a *Agent) installDriverInCSINode(ctx context.Context, d *csiDriver) error {
	cn, err := a.csiNode(ctx)
	if err != nil {
		return err
	}
	keys := slices.Sorted(maps.Keys(d.info.Topology))
	entry := storagev1.CSINodeDriver{Name: d.name, NodeID: d.info.NodeID, TopologyKeys: keys}
	if n := d.info.MaxVolumes; n > 0 {
		entry.Allocatable = &storagev1.VolumeNodeResources{Count: ptr.To(int32(min(n, math.MaxInt32)))}
	}
	drivers := make([]storagev1.CSINodeDriver, 0, len(cn.Spec.Drivers)+1)
	for _, old := range cn.Spec.Drivers {
		if old.Name != d.name {
			drivers = append(drivers, old)
			continue
		}
		// Upstream rewrites the entry only when the node ID or the
		// topology keys changed; the allocatable count is compared too.
		oldKeys := slices.Sorted(slices.Values(old.TopologyKeys))
		if old.NodeID == entry.NodeID && slices.Equal(oldKeys, keys) && ptr.Equal(count(old.Allocatable), count(entry.Allocatable)) {
			return nil
		}
	}
	cn.Spec.Drivers = append(drivers, entry)
	_, err = a.client.StorageV1().CSINodes().Update(ctx, cn, metav1.UpdateOptions{FieldManager: a.manager})
	return err
}

func count(r *storagev1.VolumeNodeResources) *int32 {
	if r == nil {
		return nil
	}
	return r.Count
}

// builtinCSIDriver is the CSIDriver object of local.csi.moorage.io: no
// attach step (a volume lives on its node), no pod information on mount,
// persistent volumes only, fsGroup applied by ownership (the driver makes
// ordinary file systems), no republishing and no CSIStorageCapacity
// objects (the scheduler keeps to CSINode and topology).
func builtinCSIDriver() *storagev1.CSIDriver {
	return &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: local.DriverName},
		Spec: storagev1.CSIDriverSpec{
			AttachRequired:       ptr.To(false),
			PodInfoOnMount:       ptr.To(false),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
			FSGroupPolicy:        ptr.To(storagev1.FileFSGroupPolicy),
			RequiresRepublish:    ptr.To(false),
			StorageCapacity:      ptr.To(false),
		},
	}
}

// ensureCSIDriverObject creates the CSIDriver object of a driver the agent
// starts, if none exists; one that exists (another node's agent made it,
// or an administrator changed it) is left as it is.
func (a *Agent) ensureCSIDriverObject(ctx context.Context, name string) error {
	if name != local.DriverName {
		return nil // only the built-in driver's description is known here
	}
	drivers := a.client.StorageV1().CSIDrivers()
	if _, err := drivers.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return err
	}
	_, err := drivers.Create(ctx, builtinCSIDriver(), metav1.CreateOptions{FieldManager: a.manager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// nodeLabels are the labels the volume manager matches volumes' node
// affinity against: the agent's own and its drivers' topology.
func (a *Agent) nodeLabels() map[string]string {
	labels := a.drivers.topologyLabels()
	maps.Copy(labels, map[string]string{labelHostname: a.opts.NodeName, labelOS: goruntime.GOOS, labelArch: goruntime.GOARCH})
	return labels
}
