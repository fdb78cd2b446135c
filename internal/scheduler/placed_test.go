package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maybeAntiAffinity labels some pods app=web, and gives some of them
// required anti-affinity to app=web pods on the same node.
func maybeAntiAffinity(rng *rand.Rand, p *corev1.Pod) {
	if rng.IntN(4) == 0 {
		p.Labels = map[string]string{"app": "web"}
	}
	if rng.IntN(8) == 0 {
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				TopologyKey:   corev1.LabelHostname,
			}},
		}}
	}
}

// A decision on pods grouped by node (the scheduler's placedPods, with
// assumed pods added, and requests remembered between decisions) is the
// decision on the same pods listed.
func TestPlacedPodsDecideAsListedPods(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	nodes := []*corev1.Node{testNode("node-a"), testNode("node-b"), testNode("node-c")}
	placed, cache := newPlacedPods(), NewRequestCache()
	var all []*corev1.Pod // what the API shows placed
	for i := range 300 {
		// Change the cluster a little: a pod placed, or one removed.
		if len(all) > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(len(all))
			placed.remove(all[j])
			all = append(all[:j], all[j+1:]...)
		} else {
			p := testPod(fmt.Sprintf("placed-%d", i), fmt.Sprintf("%dm", 100+rng.IntN(900)))
			p.Spec.NodeName = nodes[rng.IntN(len(nodes))].Name
			maybeAntiAffinity(rng, p)
			placed.set(p)
			all = append(all, p)
		}
		var extra []*corev1.Pod // assumed, not shown yet
		for k := range rng.IntN(3) {
			p := testPod(fmt.Sprintf("assumed-%d-%d", i, k), "500m")
			p.Spec.NodeName = nodes[rng.IntN(len(nodes))].Name
			extra = append(extra, p)
		}
		pod := testPod(fmt.Sprintf("new-%d", i), fmt.Sprintf("%dm", 100+rng.IntN(3000)))
		maybeAntiAffinity(rng, pod)
		view, _ := placed.snapshot(nil)
		grouped := &Snapshot{Nodes: nodes, Placed: view, Pods: extra, Requests: cache}
		listed := &Snapshot{Nodes: nodes, Pods: append(append([]*corev1.Pod(nil), all...), extra...)}
		d1, err1 := Schedule(pod, grouped)
		d2, err2 := Schedule(pod, listed)
		if fmt.Sprint(d1, err1) != fmt.Sprint(d2, err2) {
			t.Fatalf("round %d: grouped %v %v, listed %v %v", i, d1, err1, d2, err2)
		}
		if i%50 == 0 {
			cache.Rotate()
		}
	}
}
