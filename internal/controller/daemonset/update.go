package daemonset

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/kubectl/pkg/util/podutils"
)

// rollingUpdate replaces outdated pods within the strategy's bounds, as
// upstream. Without surge it deletes old pods while fewer than
// maxUnavailable nodes are unavailable (an unavailable old pod may always
// go) and lets manage create their successors. With maxSurge it creates new
// pods beside old ones (at once for unavailable old pods, up to maxSurge
// for available ones) and deletes an old pod once its successor is
// available.
func (c *Controller) rollingUpdate(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash string) error {
	byNode, err := c.nodesToDaemonPods(ctx, ds, false)
	if err != nil {
		return fmt.Errorf("couldn't get node to daemon pod mapping for daemon set %q: %v", ds.Name, err)
	}
	maxSurge, maxUnavailable, desired, err := c.updateBounds(ds, nodes, byNode)
	if err != nil {
		return fmt.Errorf("couldn't get unavailable numbers: %v", err)
	}
	now := metav1.NewTime(c.now())
	isAvailable := func(pod *corev1.Pod) bool { return podutils.IsPodAvailable(pod, ds.Spec.MinReadySeconds, now) }

	if maxSurge == 0 {
		unavailable := 0
		var replace, candidates []string
		for _, pods := range byNode {
			newPod, oldPod, ok := updatedPodsOnNode(ds, pods, hash)
			switch {
			case !ok:
				// Excess pods: manage prunes them; count the node unavailable.
				unavailable++
			case oldPod == nil && newPod == nil, oldPod != nil && newPod != nil:
				unavailable++
			case newPod != nil:
				if !isAvailable(newPod) {
					unavailable++
				}
			case !isAvailable(oldPod):
				replace = append(replace, oldPod.Name)
				unavailable++
			case unavailable < maxUnavailable:
				candidates = append(candidates, oldPod.Name)
			}
		}
		room := min(max(maxUnavailable-unavailable, 0), len(candidates))
		return c.syncNodes(ctx, ds, append(replace, candidates[:room]...), nil, hash)
	}

	var toDelete, misplaced, surgeCandidates, surgeAllowed []string
	surging, available := 0, 0
	for nodeName, pods := range byNode {
		newPod, oldPod, ok := updatedPodsOnNode(ds, pods, hash)
		if !ok {
			surging++
			continue
		}
		switch {
		case oldPod != nil && isAvailable(oldPod), oldPod == nil && newPod != nil && isAvailable(newPod):
			available++
		}
		switch {
		case oldPod == nil:
			// manage handles it
		case newPod == nil:
			node, err := c.nodes.Get(nodeName)
			if err != nil {
				return fmt.Errorf("couldn't get node for nodeName %q: %v", nodeName, err)
			}
			run, _ := shouldRun(node, ds)
			switch {
			case !isAvailable(oldPod) && !run:
				toDelete = append(toDelete, oldPod.Name)
			case !isAvailable(oldPod):
				surgeAllowed = append(surgeAllowed, nodeName)
			case !run:
				misplaced = append(misplaced, oldPod.Name)
			case surging < maxSurge:
				surgeCandidates = append(surgeCandidates, nodeName)
			}
		case !isAvailable(newPod):
			surging++
		default:
			toDelete = append(toDelete, oldPod.Name)
		}
	}
	// Pods on nodes the daemon set left go only as pods elsewhere become
	// available, so that availability never drops.
	if deletable := min(available-desired, len(misplaced)); deletable > 0 {
		for _, name := range misplaced[:deletable] {
			if _, err := c.pods.Pods(ds.Namespace).Get(name); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return fmt.Errorf("couldn't get pod which should be deleted due to scheduling constraints %q: %v", name, err)
			}
			toDelete = append(toDelete, name)
		}
	}
	room := min(max(maxSurge-surging, 0), len(surgeCandidates))
	return c.syncNodes(ctx, ds, toDelete, append(surgeAllowed, surgeCandidates[:room]...), hash)
}

// updatedPodsOnNode returns the node's new and old pod, not counting pods
// being deleted; ok is false when there are several of either.
func updatedPodsOnNode(ds *appsv1.DaemonSet, pods []*corev1.Pod, hash string) (newPod, oldPod *corev1.Pod, ok bool) {
	generation := templateGeneration(ds)
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		if hasHash(pod, hash, generation) {
			if newPod != nil {
				return nil, nil, false
			}
			newPod = pod
		} else {
			if oldPod != nil {
				return nil, nil, false
			}
			oldPod = pod
		}
	}
	return newPod, oldPod, true
}

// updateBounds counts the nodes that should run a pod (adding them, with
// no pods, to byNode) and resolves maxSurge and maxUnavailable against that
// count; with both zero, one node may be unavailable.
func (c *Controller) updateBounds(ds *appsv1.DaemonSet, nodes []*corev1.Node, byNode map[string][]*corev1.Pod) (maxSurge, maxUnavailable, desired int, _ error) {
	for _, node := range nodes {
		if run, _ := shouldRun(node, ds); !run {
			continue
		}
		desired++
		if _, ok := byNode[node.Name]; !ok {
			byNode[node.Name] = nil
		}
	}
	maxUnavailable, err := unavailableCount(ds, desired)
	if err != nil {
		return -1, -1, -1, fmt.Errorf("invalid value for MaxUnavailable: %v", err)
	}
	maxSurge, err = surgeCount(ds, desired)
	if err != nil {
		return -1, -1, -1, fmt.Errorf("invalid value for MaxSurge: %v", err)
	}
	if desired > 0 && maxUnavailable == 0 && maxSurge == 0 {
		maxUnavailable = 1
	}
	return maxSurge, maxUnavailable, desired, nil
}

// surgeCount is rollingUpdate.maxSurge of n, rounded up; 0 when unset or
// not RollingUpdate.
func surgeCount(ds *appsv1.DaemonSet, n int) (int, error) {
	r := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || r == nil || r.MaxSurge == nil {
		return 0, nil
	}
	return intstr.GetScaledValueFromIntOrPercent(r.MaxSurge, n, true)
}

// unavailableCount is rollingUpdate.maxUnavailable of n, rounded up; 0 when
// not RollingUpdate.
func unavailableCount(ds *appsv1.DaemonSet, n int) (int, error) {
	r := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || r == nil {
		return 0, nil
	}
	return intstr.GetScaledValueFromIntOrPercent(r.MaxUnavailable, n, true)
}

// allowsSurge says whether a node may run two pods during an update.
func allowsSurge(ds *appsv1.DaemonSet) bool {
	n, err := surgeCount(ds, 1)
	return err == nil && n > 0
}
