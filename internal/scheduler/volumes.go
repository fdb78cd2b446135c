package scheduler

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-helpers/storage/ephemeral"
	volumehelpers "k8s.io/component-helpers/storage/volume"

	"github.com/moorage/moorage/internal/pvmatch"
)

// Upstream's VolumeBinding and VolumeRestrictions reasons, and the
// annotations the volume flow uses.
const (
	errVolumeNodeConflict       = "node(s) had volume node affinity conflict"
	errVolumeBindConflict       = "node(s) didn't find available persistent volumes to bind"
	errPVNotExist               = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
	errUnboundImmediate         = "pod has unbound immediate PersistentVolumeClaims"
	errReadWriteOncePodConflict = "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"

	// AnnSelectedNode is set on a WaitForFirstConsumer claim to the node its
	// first pod goes to; the binder then binds it to a volume reachable
	// from there, or a provisioner creates one there.
	AnnSelectedNode         = "volume.kubernetes.io/selected-node"
	annBindCompleted        = "pv.kubernetes.io/bind-completed"
	notSupportedProvisioner = "kubernetes.io/no-provisioner"
)

func claimNotFound(name string) string {
	return fmt.Sprintf("persistentvolumeclaim %q not found", name)
}

// claimBound is upstream's isPVCFullyBound: the claim names its volume and
// the binder has finished the bind.
func claimBound(c *corev1.PersistentVolumeClaim) bool {
	_, done := c.Annotations[annBindCompleted]
	return c.Spec.VolumeName != "" && done
}

func hasAccessMode(modes []corev1.PersistentVolumeAccessMode, m corev1.PersistentVolumeAccessMode) bool {
	for _, x := range modes {
		if x == m {
			return true
		}
	}
	return false
}

// readWriteOncePodPreFilter is upstream's VolumeRestrictions PreFilter: every
// claim volume must exist, and a ReadWriteOncePod claim already used by a
// placed pod conflicts on every node (a Filter verdict, Unschedulable).
func readWriteOncePodPreFilter(pod *corev1.Pod, c *cluster) (bool, *status) {
	var rwop []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		name := v.PersistentVolumeClaim.ClaimName
		claim := c.claims[pod.Namespace+"/"+name]
		if claim == nil {
			return false, reject(unresolvable, claimNotFound(name))
		}
		if hasAccessMode(claim.Spec.AccessModes, corev1.ReadWriteOncePod) {
			rwop = append(rwop, name)
		}
	}
	for _, name := range rwop {
		for _, p := range c.allPods() {
			if p.Namespace == pod.Namespace && usesClaim(p, name) {
				return true, nil
			}
		}
	}
	return false, nil
}

func usesClaim(p *corev1.Pod, name string) bool {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == name {
			return true
		}
	}
	return false
}

// volumeState is what VolumeBinding's PreFilter learned about the pod's
// claims.
type volumeState struct {
	bound   []*corev1.PersistentVolumeClaim
	delayed []*corev1.PersistentVolumeClaim // unbound WaitForFirstConsumer, smallest request first
	// eligibleNodes: the nodes that the bound local volumes allow (by
	// their kubernetes.io/hostname affinity); nil is every node.
	eligibleNodes sets.Set[string]
}

// volumeBindingPreFilter is upstream's VolumeBinding PreFilter: each claim
// (named, or an ephemeral volume's "<pod>-<volume>") must exist, not be
// Lost, not be deleting, and an ephemeral one must belong to the pod; then
// every claim not WaitForFirstConsumer must already be bound.
func volumeBindingPreFilter(pod *corev1.Pod, c *cluster) (*volumeState, *status, error) {
	var refs []*corev1.PersistentVolumeClaim
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		var name string
		isEphemeral := false
		switch {
		case v.PersistentVolumeClaim != nil:
			name = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			name, isEphemeral = ephemeral.VolumeClaimName(pod, v), true
		default:
			continue
		}
		claim := c.claims[pod.Namespace+"/"+name]
		switch {
		case claim == nil && isEphemeral:
			return nil, reject(unresolvable, fmt.Sprintf("waiting for ephemeral volume controller to create the persistentvolumeclaim %q", name)), nil
		case claim == nil:
			return nil, reject(unresolvable, claimNotFound(name)), nil
		case claim.Status.Phase == corev1.ClaimLost:
			return nil, reject(unresolvable, fmt.Sprintf("persistentvolumeclaim %q bound to non-existent persistentvolume %q", claim.Name, claim.Spec.VolumeName)), nil
		case claim.DeletionTimestamp != nil:
			return nil, reject(unresolvable, fmt.Sprintf("persistentvolumeclaim %q is being deleted", claim.Name)), nil
		}
		if isEphemeral {
			if err := ephemeral.VolumeIsForPod(pod, claim); err != nil {
				return nil, reject(unresolvable, err.Error()), nil
			}
		}
		refs = append(refs, claim)
	}
	if len(refs) == 0 {
		return nil, nil, nil
	}
	vs := &volumeState{}
	seen := sets.New[string]()
	immediate := false
	for _, claim := range refs {
		if seen.Has(claim.Name) {
			continue
		}
		seen.Insert(claim.Name)
		if claimBound(claim) {
			vs.bound = append(vs.bound, claim)
			continue
		}
		delay, err := delayBinding(claim, c)
		if err != nil {
			return nil, nil, err
		}
		if delay && claim.Spec.VolumeName == "" {
			vs.delayed = append(vs.delayed, claim)
		} else {
			immediate = true // the binder binds these, the pod waits for it
		}
	}
	if immediate {
		return nil, reject(unresolvable, errUnboundImmediate), nil
	}
	sort.SliceStable(vs.delayed, func(i, j int) bool {
		a, b := vs.delayed[i].Spec.Resources.Requests[corev1.ResourceStorage], vs.delayed[j].Spec.Resources.Requests[corev1.ResourceStorage]
		if cmp := a.Cmp(b); cmp != 0 {
			return cmp < 0
		}
		return vs.delayed[i].Name < vs.delayed[j].Name
	})
	vs.eligibleNodes = eligibleNodes(vs.bound, c)
	return vs, nil, nil
}

// delayBinding is upstream's IsDelayBindingMode: the claim's class exists
// and binds WaitForFirstConsumer.
func delayBinding(claim *corev1.PersistentVolumeClaim, c *cluster) (bool, error) {
	name := pvmatch.ClaimClass(claim)
	if name == "" {
		return false, nil
	}
	sc := c.classes[name]
	if sc == nil {
		return false, nil
	}
	if sc.VolumeBindingMode == nil {
		return false, fmt.Errorf("VolumeBindingMode not set for StorageClass %q", name)
	}
	return *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer, nil
}

// eligibleNodes is upstream's GetEligibleNodes: the nodes named by the
// kubernetes.io/hostname In requirements of bound volumes' node affinity,
// intersected over the volumes; nil when no volume narrows the nodes or one
// is missing.
func eligibleNodes(bound []*corev1.PersistentVolumeClaim, c *cluster) sets.Set[string] {
	var out sets.Set[string]
	for _, claim := range bound {
		pv := c.volumes[claim.Spec.VolumeName]
		if pv == nil {
			return nil
		}
		names := localVolumeNodes(pv)
		if names.Len() == 0 {
			continue
		}
		if out == nil {
			out = names
		} else {
			out = out.Intersection(names)
		}
	}
	return out
}

func localVolumeNodes(pv *corev1.PersistentVolume) sets.Set[string] {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return nil
	}
	var out sets.Set[string]
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		var names sets.Set[string]
		for _, r := range term.MatchExpressions {
			if r.Key != corev1.LabelHostname || r.Operator != corev1.NodeSelectorOpIn {
				continue
			}
			if names == nil {
				names = sets.New(r.Values...)
			} else {
				names = names.Intersection(sets.New(r.Values...))
			}
		}
		out = out.Union(names)
	}
	return out
}

// volumePlan is what a node needs for the pod's WaitForFirstConsumer claims.
type volumePlan struct {
	bindings   []VolumeBinding
	provisions []string
}

// filter is upstream's VolumeBinding filter (FindPodVolumes) on one node:
// bound claims' volumes must be reachable from it; each WaitForFirstConsumer
// claim needs an Available volume reachable from it (pvmatch, the
// scheduler's way; a volume is used once per pod and never when assumed for
// another claim) or a class that provisions and whose allowedTopologies
// admit it (and, for a CSI driver, whose CSINode lists it: see driverOn).
//
// Unlike upstream, a claim that already carries the selected-node
// annotation is matched like the others on that node: in moorage the
// scheduler annotates every WaitForFirstConsumer claim, and the binder binds
// it to a fitting volume or hands it to the provisioner. On any other node
// it fails at once, as upstream.
func (vs *volumeState) filter(pod *corev1.Pod, node *corev1.Node, c *cluster) (volumePlan, *status, error) {
	var plan volumePlan
	if vs == nil {
		return plan, nil, nil
	}
	boundOK, volumesFound := true, true
	for _, claim := range vs.bound {
		pv := c.volumes[claim.Spec.VolumeName]
		if pv == nil {
			volumesFound = false
			break
		}
		if volumehelpers.CheckNodeAffinity(pv, node.Labels) != nil {
			boundOK = false
			break
		}
	}
	plan, unboundOK, err := vs.planDelayed(pod, node, c)
	if err != nil {
		return plan, nil, err
	}
	var reasons []string
	if !boundOK {
		reasons = append(reasons, errVolumeNodeConflict)
	}
	if !unboundOK {
		reasons = append(reasons, errVolumeBindConflict)
	}
	if !volumesFound {
		reasons = append(reasons, errPVNotExist)
	}
	if len(reasons) > 0 {
		return plan, reject(unresolvable, reasons...), nil
	}
	return plan, nil, nil
}

func (vs *volumeState) planDelayed(pod *corev1.Pod, node *corev1.Node, c *cluster) (volumePlan, bool, error) {
	var plan volumePlan
	for _, claim := range vs.delayed {
		if sel, ok := claim.Annotations[AnnSelectedNode]; ok && sel != node.Name {
			return plan, false, nil
		}
	}
	chosen := sets.New[string]()
	var toProvision []*corev1.PersistentVolumeClaim
	for _, claim := range vs.delayed {
		key := claim.Namespace + "/" + claim.Name
		pv, err := c.index.Find(claim, pvmatch.Options{Node: node, Exclude: func(name string) bool {
			holder, assumed := c.assumed[name]
			return chosen.Has(name) || (assumed && holder != key)
		}})
		if err != nil {
			return plan, false, err
		}
		if pv == nil {
			toProvision = append(toProvision, claim)
			continue
		}
		chosen.Insert(pv.Name)
		plan.bindings = append(plan.bindings, VolumeBinding{Claim: claim.Name, Volume: pv.Name})
	}
	for _, claim := range toProvision {
		name := pvmatch.ClaimClass(claim)
		sc := c.classes[name]
		if sc == nil {
			return plan, false, fmt.Errorf("failed to find storage class %q", name)
		}
		if sc.Provisioner == "" || sc.Provisioner == notSupportedProvisioner {
			return plan, false, nil
		}
		if !matchTopology(sc.AllowedTopologies, node.Labels) {
			return plan, false, nil
		}
		if !c.driverOn(sc.Provisioner, node.Name) {
			return plan, false, nil
		}
		plan.provisions = append(plan.provisions, claim.Name)
	}
	return plan, true, nil
}

// driverOn says whether provisioner can create a volume usable on node: a
// provisioner that is a CSI driver the cluster knows of (a CSIDriver object
// names it, or some node's CSINode lists it) only where the node's CSINode
// lists it, since its node plugin must mount the volume there and, for a
// node-local driver, create it there; any other provisioner (an external
// one that is not CSI, or a CSI driver not yet registered anywhere)
// everywhere, as upstream.
//
// Upstream's checkVolumeProvisions does not look at CSINode: it would send
// the pod to a node without the driver, where provisioning fails (or, for a
// node-local driver, never starts) and the pod waits for the bind timeout.
// The verdict on such a node is upstream's for a class that cannot
// provision there, ErrReasonBindConflict.
func (c *cluster) driverOn(provisioner, node string) bool {
	nodes, known := c.csiDrivers[provisioner]
	return !known || nodes.Has(node)
}

// matchTopology is upstream's MatchTopologySelectorTerms: no terms match
// every node; terms are ORed, an empty term matches nothing, and within a
// term every key must be on the node with one of the listed values.
func matchTopology(terms []corev1.TopologySelectorTerm, nodeLabels map[string]string) bool {
	if len(terms) == 0 {
		return true
	}
	for _, t := range terms {
		if len(t.MatchLabelExpressions) == 0 {
			continue
		}
		ok := true
		for _, r := range t.MatchLabelExpressions {
			v, has := nodeLabels[r.Key]
			if !has || !contains(r.Values, v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
