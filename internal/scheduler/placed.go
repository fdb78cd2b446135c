package scheduler

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// NodePods are the pods placed on one node (terminated ones left out), as a
// Snapshot's Placed gives them. A NodePods is never modified once in a
// Snapshot; what its pods take is summed by the first decision that needs
// it and kept for the next ones.
type NodePods struct {
	Pods []*corev1.Pod

	once  sync.Once
	usage nodeUsage

	antiOnce sync.Once
	anti     []*corev1.Pod // those with required anti-affinity terms
}

// placedPods keeps the pods placed on each node between decisions, updated
// from the pod informer's events, so that a decision reads them grouped by
// node (and their requests summed) instead of listing and grouping every pod
// of the cluster: upstream's scheduler cache does the same with its
// NodeInfos. A node's NodePods is rebuilt only after its pods changed.
type placedPods struct {
	mu    sync.Mutex
	nodes map[string]*nodeEntry
	where map[string]string // pod key -> node
}

type nodeEntry struct {
	pods map[string]*corev1.Pod // by pod key
	view *NodePods              // nil once pods changed
}

func newPlacedPods() *placedPods {
	return &placedPods{nodes: map[string]*nodeEntry{}, where: map[string]string{}}
}

// set records the pod's current version: placed and running, or gone from
// its node once terminated or unplaced.
func (p *placedPods) set(pod *corev1.Pod) {
	if pod.Spec.NodeName == "" || terminated(pod) {
		p.remove(pod)
		return
	}
	key := podKey(pod)
	p.mu.Lock()
	defer p.mu.Unlock()
	if node, ok := p.where[key]; ok && node != pod.Spec.NodeName {
		p.removeLocked(key)
	}
	e := p.nodes[pod.Spec.NodeName]
	if e == nil {
		e = &nodeEntry{pods: map[string]*corev1.Pod{}}
		p.nodes[pod.Spec.NodeName] = e
	}
	e.pods[key], e.view = pod, nil
	p.where[key] = pod.Spec.NodeName
}

func (p *placedPods) remove(pod *corev1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(podKey(pod))
}

func (p *placedPods) removeLocked(key string) {
	node, ok := p.where[key]
	if !ok {
		return
	}
	delete(p.where, key)
	if e := p.nodes[node]; e != nil {
		delete(e.pods, key)
		e.view = nil
		if len(e.pods) == 0 {
			delete(p.nodes, node)
		}
	}
}

// snapshot returns every node's pods (unchanged nodes share their NodePods
// with the previous snapshot) and, at the same moment, which of the given
// pod keys are among them.
func (p *placedPods) snapshot(keys []string) (map[string]*NodePods, []bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	has := make([]bool, len(keys))
	for i, key := range keys {
		_, has[i] = p.where[key]
	}
	out := make(map[string]*NodePods, len(p.nodes))
	for node, e := range p.nodes {
		if e.view == nil {
			pods := make([]*corev1.Pod, 0, len(e.pods))
			for _, pod := range e.pods {
				pods = append(pods, pod)
			}
			e.view = &NodePods{Pods: pods}
		}
		out[node] = e.view
	}
	return out, has
}
