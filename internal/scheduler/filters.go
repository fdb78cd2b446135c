package scheduler

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// Upstream's reasons, verbatim.
const (
	errNodeUnschedulable = "node(s) were unschedulable"
	errNodeAffinity      = "node(s) didn't match Pod's node affinity/selector"
	errNodeAffinityTerms = "pod affinity terms conflict"
	errNodePorts         = "node(s) didn't have free ports for the requested pod ports"
	errTooManyPods       = "Too many pods"
)

// nodeUnschedulable is upstream's NodeUnschedulable: a cordoned node takes
// only pods that tolerate the node.kubernetes.io/unschedulable taint.
func nodeUnschedulable(pod *corev1.Pod, node *corev1.Node) *status {
	if !node.Spec.Unschedulable {
		return nil
	}
	taint := corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}
	if corev1helpers.TolerationsTolerateTaint(pod.Spec.Tolerations, &taint) {
		return nil
	}
	return reject(unresolvable, errNodeUnschedulable)
}

// taintToleration is upstream's TaintToleration filter: the first NoSchedule
// or NoExecute taint the pod does not tolerate rejects the node. A node that
// is not Ready counts as tainted node.kubernetes.io/not-ready (Ready False)
// or node.kubernetes.io/unreachable (Ready Unknown), NoSchedule — the taints
// a node lifecycle controller puts on it — from the moment it reports so,
// before any controller has tainted it. A node that never reported a Ready
// condition is taken as is.
func taintToleration(pod *corev1.Pod, node *corev1.Node) *status {
	taints := node.Spec.Taints
	if key := notReadyTaint(node); key != "" && !hasTaint(taints, key) {
		taints = append(append([]corev1.Taint(nil), taints...), corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
	}
	taint, untolerated := corev1helpers.FindMatchingUntoleratedTaint(taints, pod.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	})
	if !untolerated {
		return nil
	}
	return reject(unresolvable, "node(s) had untolerated taint {"+taint.Key+": "+taint.Value+"}")
}

func notReadyTaint(node *corev1.Node) string {
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		switch c.Status {
		case corev1.ConditionTrue:
			return ""
		case corev1.ConditionFalse:
			return corev1.TaintNodeNotReady
		default:
			return corev1.TaintNodeUnreachable
		}
	}
	return ""
}

func hasTaint(taints []corev1.Taint, key string) bool {
	for _, t := range taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// nodeAffinityPreFilter is upstream's NodeAffinity PreFilter: required terms
// that all name nodes (matchFields metadata.name In, as DaemonSet pods carry)
// narrow the nodes to those names; terms that contradict each other reject
// the pod outright.
func nodeAffinityPreFilter(pod *corev1.Pod) (sets.Set[string], *status) {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return nil, nil
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return nil, nil
	}
	var names sets.Set[string]
	for _, t := range terms {
		var termNames sets.Set[string]
		for _, r := range t.MatchFields {
			if r.Key != metav1.ObjectNameField || r.Operator != corev1.NodeSelectorOpIn {
				continue
			}
			if termNames == nil {
				termNames = sets.New(r.Values...)
			} else {
				termNames = termNames.Intersection(sets.New(r.Values...))
			}
		}
		if termNames == nil {
			return nil, nil // this term may match any node, and terms are ORed
		}
		names = names.Union(termNames)
	}
	if names.Len() == 0 {
		return nil, reject(unresolvable, errNodeAffinityTerms)
	}
	return names, nil
}

// nodeAffinity is upstream's NodeAffinity filter: spec.nodeSelector and the
// required node affinity (terms ORed; each term's matchExpressions and
// matchFields ANDed).
func nodeAffinity(pod *corev1.Pod, node *corev1.Node) *status {
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); ok && err == nil {
		return nil
	}
	return reject(unresolvable, errNodeAffinity)
}

// hostPort is one host port a container asks for.
type hostPort struct {
	ip, protocol string
	port         int32
}

// podHostPorts are the host ports of the pod's containers (upstream counts
// neither init containers nor ports without hostPort).
func podHostPorts(pod *corev1.Pod) []hostPort {
	var out []hostPort
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort <= 0 {
				continue
			}
			hp := hostPort{ip: p.HostIP, protocol: string(p.Protocol), port: p.HostPort}
			if hp.ip == "" {
				hp.ip = "0.0.0.0"
			}
			if hp.protocol == "" {
				hp.protocol = string(corev1.ProtocolTCP)
			}
			out = append(out, hp)
		}
	}
	return out
}

// nodePorts is upstream's NodePorts filter: a host port conflicts with one in
// use for the same protocol and port when either IP is 0.0.0.0 or both are
// equal.
func nodePorts(want []hostPort, onNode []*corev1.Pod) *status {
	if len(want) == 0 {
		return nil
	}
	for _, p := range onNode {
		for _, used := range podHostPorts(p) {
			for _, w := range want {
				if w.port == used.port && w.protocol == used.protocol &&
					(w.ip == used.ip || w.ip == "0.0.0.0" || used.ip == "0.0.0.0") {
					return reject(unschedulable, errNodePorts)
				}
			}
		}
	}
	return nil
}

// resources is a pod's (or a node's) amounts in upstream's units: millicores,
// bytes, and the integer value of other ("scalar") resources.
type resources struct {
	milliCPU, memory, ephemeral int64
	scalar                      map[corev1.ResourceName]int64
}

// Scoring counts a container that requests no cpu or memory as requesting
// these (upstream's DefaultMilliCPURequest and DefaultMemoryRequest).
var nonZeroDefaults = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("100m"),
	corev1.ResourceMemory: resource.MustParse("200Mi"),
}

// podRequests is what the pod requests: the larger of the sum of its
// containers (restartable init containers included) and its largest init
// container, plus pod overhead (component-helpers' PodRequests, the
// function upstream uses).
func podRequests(pod *corev1.Pod) resources {
	return toResources(resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{}))
}

func toResources(list corev1.ResourceList) resources {
	var r resources
	for name, q := range list {
		switch name {
		case corev1.ResourceCPU:
			r.milliCPU = q.MilliValue()
		case corev1.ResourceMemory:
			r.memory = q.Value()
		case corev1.ResourceEphemeralStorage:
			r.ephemeral = q.Value()
		default:
			if isScalar(name) {
				if r.scalar == nil {
					r.scalar = map[corev1.ResourceName]int64{}
				}
				r.scalar[name] = q.Value()
			}
		}
	}
	return r
}

// isScalar: extended resources (domain/name), hugepages and prefixed native
// resources, the ones upstream checks besides cpu, memory and storage.
func isScalar(name corev1.ResourceName) bool {
	return strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) || strings.Contains(string(name), "/")
}

func (r *resources) add(o resources) {
	r.milliCPU += o.milliCPU
	r.memory += o.memory
	r.ephemeral += o.ephemeral
	for n, v := range o.scalar {
		if r.scalar == nil {
			r.scalar = map[corev1.ResourceName]int64{}
		}
		r.scalar[n] += v
	}
}

// resourcesFit is upstream's NodeResourcesFit filter against the node's
// allocatable less what the pods on it request. Every shortfall is a reason,
// in upstream's order; all are Unschedulable in 1.33 (preemption may help).
func resourcesFit(want resources, node *corev1.Node, used resources, pods int) *status {
	alloc := toResources(node.Status.Allocatable)
	var reasons []string
	if int64(pods+1) > node.Status.Allocatable.Pods().Value() {
		reasons = append(reasons, errTooManyPods)
	}
	if want.milliCPU > 0 && want.milliCPU > alloc.milliCPU-used.milliCPU {
		reasons = append(reasons, "Insufficient cpu")
	}
	if want.memory > 0 && want.memory > alloc.memory-used.memory {
		reasons = append(reasons, "Insufficient memory")
	}
	if want.ephemeral > 0 && want.ephemeral > alloc.ephemeral-used.ephemeral {
		reasons = append(reasons, "Insufficient ephemeral-storage")
	}
	names := make([]string, 0, len(want.scalar))
	for n := range want.scalar {
		names = append(names, string(n))
	}
	sort.Strings(names) // upstream walks a map; sorted here for stable messages
	for _, n := range names {
		q := want.scalar[corev1.ResourceName(n)]
		if q > 0 && q > alloc.scalar[corev1.ResourceName(n)]-used.scalar[corev1.ResourceName(n)] {
			reasons = append(reasons, "Insufficient "+n)
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	return reject(unschedulable, reasons...)
}

// leastAllocated is upstream's default NodeResourcesFit score
// (LeastAllocated, cpu and memory weighted 1): the mean over both of
// (allocatable - requested) * 100 / allocatable, requested counting the
// pods on the node and this one with defaults for containers that request
// nothing.
func leastAllocated(pod resources, node *corev1.Node, onNode resources) int64 {
	req := resources{milliCPU: pod.milliCPU + onNode.milliCPU, memory: pod.memory + onNode.memory}
	alloc := toResources(node.Status.Allocatable)
	var sum, weights int64
	for _, pair := range [][2]int64{{req.milliCPU, alloc.milliCPU}, {req.memory, alloc.memory}} {
		requested, capacity := pair[0], pair[1]
		if capacity == 0 {
			continue
		}
		weights++
		if requested <= capacity {
			sum += (capacity - requested) * 100 / capacity
		}
	}
	if weights == 0 {
		return 0
	}
	return sum / weights
}
