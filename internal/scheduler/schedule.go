package scheduler

import (
	"errors"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/moorage/moorage/internal/pvmatch"
)

// Snapshot is the cluster state one decision reads. Schedule does not modify
// it, and the objects in it are shared, never copied.
type Snapshot struct {
	Nodes []*corev1.Node
	// Pods are the pods placed on nodes (spec.nodeName set), including the
	// ones the caller has assumed onto a node before the API shows it.
	// Terminated pods (Succeeded, Failed) are ignored, as upstream's
	// scheduler cache ignores them.
	Pods []*corev1.Pod
	// Placed, if set, are placed pods already grouped by node name, kept by
	// the caller between decisions; Pods then adds to them (the pods the
	// caller assumed).
	Placed  map[string]*NodePods
	Claims  []*corev1.PersistentVolumeClaim
	Volumes []*corev1.PersistentVolume
	Classes []*storagev1.StorageClass
	// Namespaces give the labels that pod affinity terms' namespaceSelector
	// match; a namespace missing here has no labels.
	Namespaces []*corev1.Namespace
	// CSINodes list the CSI drivers registered on each node, and CSIDrivers
	// are the cluster's CSIDriver objects: a claim to be provisioned by a
	// CSI driver the cluster knows of (by either) goes only to nodes whose
	// CSINode lists that driver.
	CSINodes   []*storagev1.CSINode
	CSIDrivers []*storagev1.CSIDriver
	// Index matches WaitForFirstConsumer claims to volumes (it should hold
	// Volumes); nil builds one from Volumes for this decision.
	Index *pvmatch.Index
	// Requests, if set, remembers the placed pods' requests from one
	// decision to the next; nil computes them for this decision.
	Requests *RequestCache
	// AssumedVolumes are volumes chosen for the claims of pods still being
	// placed: volume name -> claim "namespace/name". They are offered to no
	// other claim.
	AssumedVolumes map[string]string
}

// Decision is where a pod goes and what its WaitForFirstConsumer claims need
// there.
type Decision struct {
	Node string
	// Bindings are unbound WaitForFirstConsumer claims that an Available
	// volume reachable from Node fits, smallest claims first.
	Bindings []VolumeBinding
	// Provisions are unbound WaitForFirstConsumer claims that no volume on
	// Node fits and whose class provisions there (claim names).
	Provisions []string
}

// VolumeBinding pairs a claim (by name, in the pod's namespace) with the
// volume chosen for it.
type VolumeBinding struct {
	Claim, Volume string
}

// UnboundClaims are the names of the claims to be bound before the pod: the
// ones that must carry the selected-node annotation.
func (d Decision) UnboundClaims() []string {
	out := make([]string, 0, len(d.Bindings)+len(d.Provisions))
	for _, b := range d.Bindings {
		out = append(out, b.Claim)
	}
	return append(out, d.Provisions...)
}

// ErrNoNodesAvailable is upstream's error when the cluster has no node.
var ErrNoNodesAvailable = errors.New("no nodes available to schedule pods")

// ErrAssigned is returned for a pod that already names its node: placing it
// is not the scheduler's business.
var ErrAssigned = errors.New("pod already has spec.nodeName")

// Schedule decides where pod goes, as kube-scheduler 1.33 with its default
// plugins decides (see the package comment for what is left out). When no
// node fits, the error is a *FitError whose message is upstream's
// FailedScheduling text; other errors are the scheduler's own failures
// (upstream's SchedulerError).
func Schedule(pod *corev1.Pod, snap *Snapshot) (Decision, error) {
	if pod.Spec.NodeName != "" {
		return Decision{}, ErrAssigned
	}
	c := newCluster(snap)
	if len(c.nodes) == 0 {
		return Decision{}, ErrNoNodesAvailable
	}
	cy, rejected, err := preFilter(pod, c)
	if err != nil {
		return Decision{}, err
	}
	d := &diagnosis{numAll: len(c.nodes), statuses: map[string]*status{}}
	if rejected != nil {
		// Every node gets the pre-filter's verdict.
		d.preFilterMsg, d.absent = rejected.message(), rejected
		return Decision{}, d.fitError(preemption(pod, c, d))
	}
	var feasible []*candidate
	for _, node := range c.nodes {
		if cy.nodeNames != nil && !cy.nodeNames.Has(node.Name) {
			continue
		}
		cand, st, err := cy.filter(node)
		if err != nil {
			return Decision{}, err
		}
		if st != nil {
			d.statuses[node.Name] = st
			continue
		}
		feasible = append(feasible, cand)
	}
	if cy.nodeNames != nil {
		d.absent = reject(unresolvable, "node is filtered out by the prefilter result")
	}
	if len(feasible) == 0 {
		return Decision{}, d.fitError(preemption(pod, c, d))
	}
	return best(feasible).decision(), nil
}

// candidate is a node that passed every filter, with what placing the pod
// there takes.
type candidate struct {
	node  *corev1.Node
	score int64 // least-allocated score, 0..100
	plan  volumePlan
}

func (c *candidate) decision() Decision {
	return Decision{Node: c.node.Name, Bindings: c.plan.bindings, Provisions: c.plan.provisions}
}

// best orders candidates: fewest claims to provision (a node whose existing
// volumes fit is preferred, beyond upstream, which scores both alike), then
// the least allocated (upstream's default NodeResourcesFit score), then by
// name, where upstream picks at random among equal scores.
func best(cands []*candidate) *candidate {
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if len(a.plan.provisions) != len(b.plan.provisions) {
			return len(a.plan.provisions) < len(b.plan.provisions)
		}
		if a.score != b.score {
			return a.score > b.score
		}
		return a.node.Name < b.node.Name
	})
	return cands[0]
}

// cluster is a Snapshot indexed for one decision.
type cluster struct {
	nodes    []*corev1.Node // by name
	node     map[string]*corev1.Node
	pods     []*corev1.Pod            // placed, not terminated; see allPods
	podsOn   map[string][]*corev1.Pod // by node name
	placed   map[string]*NodePods     // the snapshot's Placed; podsOn is these plus extra
	extra    map[string][]*corev1.Pod // by node name: the snapshot's Pods, when it has Placed
	used     map[string]nodeUsage     // by node name, filled as nodes are filtered
	requests *RequestCache
	claims   map[string]*corev1.PersistentVolumeClaim
	volumes  map[string]*corev1.PersistentVolume
	classes  map[string]*storagev1.StorageClass
	nsLabels map[string]labels.Set
	index    *pvmatch.Index
	assumed  map[string]string
	// csiDrivers maps each CSI driver the cluster knows of (a CSIDriver
	// object, or an entry in some CSINode) to the nodes whose CSINode
	// lists it.
	csiDrivers map[string]sets.Set[string]
}

func newCluster(s *Snapshot) *cluster {
	c := &cluster{
		node:     make(map[string]*corev1.Node, len(s.Nodes)),
		claims:   make(map[string]*corev1.PersistentVolumeClaim, len(s.Claims)),
		volumes:  make(map[string]*corev1.PersistentVolume, len(s.Volumes)),
		classes:  make(map[string]*storagev1.StorageClass, len(s.Classes)),
		nsLabels: make(map[string]labels.Set, len(s.Namespaces)),
		index:    s.Index,
		assumed:  s.AssumedVolumes,
		requests: s.Requests,
	}
	for _, n := range s.Nodes {
		if _, dup := c.node[n.Name]; !dup {
			c.node[n.Name] = n
			c.nodes = append(c.nodes, n)
		}
	}
	sort.Slice(c.nodes, func(i, j int) bool { return c.nodes[i].Name < c.nodes[j].Name })
	if s.Placed != nil {
		c.setPlaced(s.Placed, s.Pods)
	} else {
		c.setPods(s.Pods, nil)
	}
	for _, pvc := range s.Claims {
		c.claims[pvc.Namespace+"/"+pvc.Name] = pvc
	}
	for _, pv := range s.Volumes {
		c.volumes[pv.Name] = pv
	}
	for _, sc := range s.Classes {
		c.classes[sc.Name] = sc
	}
	for _, ns := range s.Namespaces {
		c.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	c.csiDrivers = map[string]sets.Set[string]{}
	for _, d := range s.CSIDrivers {
		if c.csiDrivers[d.Name] == nil {
			c.csiDrivers[d.Name] = sets.New[string]()
		}
	}
	for _, cn := range s.CSINodes {
		for _, d := range cn.Spec.Drivers {
			if c.csiDrivers[d.Name] == nil {
				c.csiDrivers[d.Name] = sets.New[string]()
			}
			c.csiDrivers[d.Name].Insert(cn.Name)
		}
	}
	if c.index == nil {
		c.index = pvmatch.NewIndex()
		for _, pv := range s.Volumes {
			c.index.Upsert(pv)
		}
	}
	return c
}

// setPods records the placed pods, leaving out terminated ones and those in
// skip (preemption victims).
func (c *cluster) setPods(pods []*corev1.Pod, skip sets.Set[*corev1.Pod]) {
	c.pods, c.podsOn, c.used, c.placed, c.extra = nil, map[string][]*corev1.Pod{}, map[string]nodeUsage{}, nil, nil
	for _, p := range pods {
		if p.Spec.NodeName == "" || terminated(p) || skip.Has(p) {
			continue
		}
		c.pods = append(c.pods, p)
		c.podsOn[p.Spec.NodeName] = append(c.podsOn[p.Spec.NodeName], p)
	}
}

// setPlaced takes the pods grouped by node, adding extra (assumed) pods.
func (c *cluster) setPlaced(placed map[string]*NodePods, extra []*corev1.Pod) {
	c.pods, c.used, c.extra = nil, map[string]nodeUsage{}, nil
	c.podsOn = make(map[string][]*corev1.Pod, len(placed))
	c.placed = placed
	for node, np := range placed {
		c.podsOn[node] = np.Pods
	}
	for _, p := range extra {
		if p.Spec.NodeName == "" || terminated(p) {
			continue
		}
		node := p.Spec.NodeName
		if c.extra == nil {
			c.extra = map[string][]*corev1.Pod{}
		}
		if c.extra[node] == nil && c.placed[node] != nil {
			// A new slice: the snapshot's is shared.
			c.podsOn[node] = append(make([]*corev1.Pod, 0, len(c.podsOn[node])+1), c.podsOn[node]...)
		}
		c.extra[node] = append(c.extra[node], p)
		c.podsOn[node] = append(c.podsOn[node], p)
	}
}

// allPods are the placed pods of every node, gathered when first needed.
func (c *cluster) allPods() []*corev1.Pod {
	if c.pods == nil {
		for _, node := range c.nodes {
			c.pods = append(c.pods, c.podsOn[node.Name]...)
		}
		for name, pods := range c.podsOn {
			if _, known := c.node[name]; !known {
				c.pods = append(c.pods, pods...)
			}
		}
	}
	return c.pods
}

// without is the cluster with some pods removed (a preemption dry run).
func (c *cluster) without(victims []*corev1.Pod) *cluster {
	out := *c
	out.setPods(c.allPods(), sets.New(victims...))
	return &out
}

func terminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// cycle is what the pre-filters computed for one pod, read by the filters of
// every node (upstream's CycleState).
type cycle struct {
	pod   *corev1.Pod
	c     *cluster
	req   resources // the pod's requests (max rule for init containers, overhead)
	score resources // the same with the non-zero defaults, for scoring
	ports []hostPort
	// nodeNames narrows the nodes to consider (upstream's PreFilterResult);
	// nil is every node.
	nodeNames    sets.Set[string]
	rwopConflict bool
	vol          *volumeState
	aff          *affinityState
}

// preFilter runs upstream's PreFilter plugins in their default order. A
// non-nil status rejects the pod on every node; an error is the scheduler's
// own failure.
func preFilter(pod *corev1.Pod, c *cluster) (*cycle, *status, error) {
	u := usageOf(pod)
	cy := &cycle{pod: pod, c: c, req: u.req, score: u.nonZero, ports: podHostPorts(pod)}
	var later *status // an Unschedulable verdict: the rest still run (preemption may help)
	var narrowedBy []string
	narrow := func(plugin string, names sets.Set[string]) *status {
		if names == nil {
			return nil
		}
		narrowedBy = append(narrowedBy, plugin)
		if cy.nodeNames == nil {
			cy.nodeNames = names
		} else {
			cy.nodeNames = cy.nodeNames.Intersection(names)
		}
		if cy.nodeNames.Len() > 0 {
			return nil
		}
		if len(narrowedBy) == 1 {
			return reject(unresolvable, "node(s) didn't satisfy plugin "+narrowedBy[0])
		}
		return reject(unresolvable, "node(s) didn't satisfy plugin(s) "+bracketList(narrowedBy)+" simultaneously")
	}
	steps := []func() (*status, error){
		func() (*status, error) { // NodeAffinity
			names, st := nodeAffinityPreFilter(pod)
			if st != nil {
				return st, nil
			}
			return narrow("NodeAffinity", names), nil
		},
		func() (*status, error) { // VolumeRestrictions
			conflict, st := readWriteOncePodPreFilter(pod, c)
			cy.rwopConflict = conflict
			return st, nil
		},
		func() (*status, error) { // VolumeBinding
			vs, st, err := volumeBindingPreFilter(pod, c)
			if err != nil || st != nil || vs == nil {
				return st, err
			}
			cy.vol = vs
			return narrow("VolumeBinding", vs.eligibleNodes), nil
		},
		func() (*status, error) { // InterPodAffinity
			as, err := interPodAffinityPreFilter(pod, c)
			cy.aff = as
			return nil, err
		},
	}
	for _, step := range steps {
		st, err := step()
		switch {
		case err != nil:
			return nil, nil, err
		case st == nil:
		case st.code == unresolvable:
			return nil, st, nil
		default:
			later = st
		}
	}
	return cy, later, nil
}

// filter runs upstream's Filter plugins on one node in their default order;
// the first that rejects the node gives its verdict.
func (cy *cycle) filter(node *corev1.Node) (*candidate, *status, error) {
	onNode := cy.c.podsOn[node.Name]
	if st := nodeUnschedulable(cy.pod, node); st != nil {
		return nil, st, nil
	}
	if st := taintToleration(cy.pod, node); st != nil {
		return nil, st, nil
	}
	if st := nodeAffinity(cy.pod, node); st != nil {
		return nil, st, nil
	}
	if st := nodePorts(cy.ports, onNode); st != nil {
		return nil, st, nil
	}
	used := cy.c.usedOn(node.Name)
	if st := resourcesFit(cy.req, node, used.req, used.pods); st != nil {
		return nil, st, nil
	}
	if cy.rwopConflict {
		return nil, reject(unschedulable, errReadWriteOncePodConflict), nil
	}
	plan, st, err := cy.vol.filter(cy.pod, node, cy.c)
	if err != nil || st != nil {
		return nil, st, err
	}
	if st := cy.aff.filter(node); st != nil {
		return nil, st, nil
	}
	return &candidate{node: node, score: leastAllocated(cy.score, node, used.nonZero), plan: plan}, nil, nil
}

func bracketList(names []string) string {
	s := "["
	for i, n := range names {
		if i > 0 {
			s += " "
		}
		s += n
	}
	return s + "]"
}
