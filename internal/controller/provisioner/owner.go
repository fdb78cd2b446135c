package provisioner

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/csi"
)

// Immediate claims in NodeLocal mode.
//
// Nobody picks a node for an Immediate claim, yet a node-local driver can
// only create volumes on its own node. external-provisioner's node
// deployment lets every node's provisioner try to become the claim's owner
// by writing its own node into volume.kubernetes.io/selected-node, after a
// random delay (--node-deployment-base-delay 20 s, growing to
// --node-deployment-max-delay 60 s on conflicts) and a GetCapacity check;
// the claim is then provisioned like a WaitForFirstConsumer claim on that
// node. Only the owner ever provisions.
//
// moorage keeps the mechanism and makes the delay deterministic:
//
//   - Safety: a provisioner sends CreateVolume only for a claim whose
//     selected node is its own, confirmed by a read from the API just
//     before the first attempt. The annotation is written with an update
//     conditioned on the resourceVersion of a claim that had none, so of
//     two provisioners racing, one write fails with a conflict: a claim
//     gets one owner, whatever the delays.
//   - Determinism: each candidate node (nodes whose CSINode lists the
//     driver, or all nodes until CSINode objects exist, that satisfy the
//     class's allowedTopologies) is ranked by a hash of (claim uid, node
//     name), highest first (rendezvous hashing). The node of rank r waits
//     r × ImmediateDelay from when it first saw the claim, so the first
//     node normally takes it at once and the others find it taken.
//   - Liveness: if the first node is down or full (GetCapacity, when the
//     driver has it, says the claim does not fit), the next one takes
//     over after its delay. A node that gives a claim up (its CreateVolume
//     answered RESOURCE_EXHAUSTED, or GetCapacity said no) stands back
//     for one round (nodes × ImmediateDelay) before trying it again.
func (c *Controller) own(ctx context.Context, claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass) error {
	self, err := c.nodes.Get(c.opts.NodeName)
	if err != nil {
		return fmt.Errorf("node %s: %w", c.opts.NodeName, err)
	}
	if !allows(class.AllowedTopologies, self.Labels) {
		return nil // not a place for this claim
	}
	candidates := c.candidates(class)
	rank := rankOf(claim.UID, c.opts.NodeName, candidates)

	now := c.now()
	c.mu.Lock()
	first, seen := c.firstSeen[claim.UID]
	if !seen {
		first = now
		c.firstSeen[claim.UID] = now
	}
	notBefore := first.Add(time.Duration(rank) * c.opts.ImmediateDelay)
	if t := c.yieldedTill[claim.UID]; t.After(notBefore) {
		notBefore = t
	}
	c.mu.Unlock()
	if wait := notBefore.Sub(now); wait > 0 {
		c.claims.AddAfter(claim.UID, wait)
		return nil
	}
	if fits, err := c.fits(ctx, claim, class, self); err != nil {
		// As upstream: a failed check does not stop the attempt, which
		// then reports what is wrong in an event.
		c.log.Info("capacity check failed; taking the claim anyway", "claim", claim.Namespace+"/"+claim.Name, "err", err)
	} else if !fits {
		c.yield(claim.UID)
		c.claims.AddAfter(claim.UID, c.roundLength())
		return nil
	}
	updated := claim.DeepCopy()
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Annotations[annSelectedNode] = c.opts.NodeName
	if _, err := c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		// A conflict means someone else wrote first: the next sync sees
		// whom the claim belongs to now.
		return fmt.Errorf("selecting node %q for PVC failed: %w", c.opts.NodeName, err)
	}
	c.log.Info("took Immediate claim for this node", "claim", claim.Namespace+"/"+claim.Name, "rank", rank, "candidates", len(candidates))
	return nil
}

// candidates are the nodes that could take a claim of class.
func (c *Controller) candidates(class *storagev1.StorageClass) []string {
	withDriver := map[string]bool{}
	if all, err := c.csiNodes.List(labels.Everything()); err == nil {
		for _, cn := range all {
			for _, d := range cn.Spec.Drivers {
				if d.Name == c.driver {
					withDriver[cn.Name] = true
				}
			}
		}
	}
	var out []string
	nodes, _ := c.nodes.List(labels.Everything())
	for _, n := range nodes {
		if n.Name != c.opts.NodeName && len(withDriver) > 0 && !withDriver[n.Name] {
			continue
		}
		if allows(class.AllowedTopologies, n.Labels) {
			out = append(out, n.Name)
		}
	}
	return out
}

// rankOf is node's place among candidates by rendezvous hashing on the
// claim: 0 is first. A node missing from candidates ranks last.
func rankOf(uid types.UID, node string, candidates []string) int {
	score := func(n string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(uid))
		h.Write([]byte{0})
		h.Write([]byte(n))
		return h.Sum64()
	}
	sorted := append([]string(nil), candidates...)
	sort.Slice(sorted, func(i, j int) bool {
		si, sj := score(sorted[i]), score(sorted[j])
		return si > sj || (si == sj && sorted[i] < sorted[j])
	})
	for i, n := range sorted {
		if n == node {
			return i
		}
	}
	return len(sorted)
}

// yield makes this node stand back from a claim for one round.
func (c *Controller) yield(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.yieldedTill[uid] = c.now().Add(c.roundLength())
}

func (c *Controller) roundLength() time.Duration {
	n, _ := c.nodes.List(labels.Everything())
	return time.Duration(max(len(n), 1)) * c.opts.ImmediateDelay
}

// fits asks the driver whether the claim fits on this node (upstream's
// checkCapacity); a driver without GET_CAPACITY is not asked.
func (c *Controller) fits(ctx context.Context, claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, self *corev1.Node) (bool, error) {
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !c.ctrlCaps.GetCapacity || size.Value() == 0 {
		return true, nil
	}
	params, err := c.classParams(class)
	if err != nil {
		return false, err
	}
	req := csi.CapacityRequest{
		Capability: &csi.VolumeCapability{
			AccessModes: claim.Spec.AccessModes,
			Block:       claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == corev1.PersistentVolumeBlock,
			FSType:      params.fsType,
			MountFlags:  class.MountOptions,
		},
		Parameters: params.driver,
	}
	if keys := c.topologyKeys(self.Name); len(keys) > 0 {
		if t, missing := nodeTerm(self, keys); !missing {
			req.Topology = t.topology()
		}
	}
	capacity, err := c.csi.GetCapacity(ctx, req)
	if err != nil {
		return false, err
	}
	return size.Value() <= capacity.AvailableBytes, nil
}
