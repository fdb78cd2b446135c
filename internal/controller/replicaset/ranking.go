package replicaset

import (
	"math"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// PodDeletionCost is the annotation by which users rank the pods of one
// owner for scale-down: lower costs go first.
const PodDeletionCost = "controller.kubernetes.io/pod-deletion-cost"

// podsToDelete picks the n pods to delete from an owner's pods: all of
// them if n covers them, else the n first in upstream's order (see
// deletesFirst). related are the active pods of the owner and of the other
// owners with the same controller (the ReplicaSets of one Deployment):
// they say how crowded each pod's node is.
func podsToDelete(pods, related []*corev1.Pod, n int, now time.Time) []*corev1.Pod {
	if n >= len(pods) {
		return pods
	}
	onNode := map[string]int{}
	for _, p := range related {
		if podActive(p) {
			onNode[p.Spec.NodeName]++
		}
	}
	ranked := make([]rankedPod, len(pods))
	for i, p := range pods {
		ranked[i] = rankedPod{pod: p, colocated: onNode[p.Spec.NodeName]}
	}
	slices.SortStableFunc(ranked, func(a, b rankedPod) int {
		switch {
		case deletesFirst(a, b, now):
			return -1
		case deletesFirst(b, a, now):
			return 1
		}
		return 0
	})
	out := make([]*corev1.Pod, n)
	for i := range out {
		out[i] = ranked[i].pod
	}
	return out
}

// rankedPod is a pod with the number of related pods on its node.
type rankedPod struct {
	pod       *corev1.Pod
	colocated int
}

// phaseOrder ranks phases for deletion: the earlier the sooner.
var phaseOrder = map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodUnknown: 1, corev1.PodRunning: 2}

// deletesFirst tells whether a should be deleted before b, by upstream's
// rules, in this order:
//
//  1. unassigned before assigned to a node;
//  2. Pending before Unknown before Running;
//  3. not ready before ready;
//  4. lower pod-deletion-cost before higher;
//  5. more related pods on its node before fewer;
//  6. both ready: ready for less time first, times compared on a
//     logarithmic scale (ready 2 min ago ranks with 3 min ago, not with
//     1 h ago), ties broken by UID;
//  7. more container restarts before fewer;
//  8. newer before older, on the same logarithmic scale, ties by UID;
//     an empty creation time first.
func deletesFirst(a, b rankedPod, now time.Time) bool {
	pa, pb := a.pod, b.pod
	if pa.Spec.NodeName != pb.Spec.NodeName && (pa.Spec.NodeName == "" || pb.Spec.NodeName == "") {
		return pa.Spec.NodeName == ""
	}
	if oa, ob := phaseOrder[pa.Status.Phase], phaseOrder[pb.Status.Phase]; oa != ob {
		return oa < ob
	}
	if ra, rb := podReady(pa), podReady(pb); ra != rb {
		return !ra
	}
	if ca, cb := deletionCost(pa), deletionCost(pb); ca != cb {
		return ca < cb
	}
	if a.colocated != b.colocated {
		return a.colocated > b.colocated
	}
	if podReady(pa) && podReady(pb) {
		ta, tb := readySince(pa), readySince(pb)
		if !ta.Equal(tb) {
			return newerFirst(ta, tb, pa, pb, now)
		}
	}
	if ra, rb := maxRestarts(pa), maxRestarts(pb); ra != rb {
		return ra > rb
	}
	if ta, tb := pa.CreationTimestamp.Time, pb.CreationTimestamp.Time; !ta.Equal(tb) {
		return newerFirst(ta, tb, pa, pb, now)
	}
	return false
}

// newerFirst orders two different times, the newer (or zero) one first;
// times within the same power-of-two age bucket tie and fall to UIDs.
func newerFirst(ta, tb time.Time, pa, pb *corev1.Pod, now time.Time) bool {
	if now.IsZero() || ta.IsZero() || tb.IsZero() {
		if ta.IsZero() || tb.IsZero() {
			return ta.IsZero()
		}
		return ta.After(tb)
	}
	da, db := ageBucket(ta, now), ageBucket(tb, now)
	if da == db {
		return pa.UID < pb.UID
	}
	return da < db
}

// ageBucket is log2 of the age in nanoseconds, -1 for no age.
func ageBucket(t, now time.Time) int64 {
	d := now.Sub(t)
	if d <= 0 {
		return -1
	}
	return int64(math.Log2(float64(d)))
}

// deletionCost reads the pod-deletion-cost annotation: an int32 that starts
// with '-', '1'-'9' or is "0"; anything else counts as 0.
func deletionCost(pod *corev1.Pod) int32 {
	v, ok := pod.Annotations[PodDeletionCost]
	if !ok || v == "" || v[0] == '+' || (v[0] == '0' && v != "0") {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0
	}
	return int32(n)
}

func readySince(pod *corev1.Pod) time.Time {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func maxRestarts(pod *corev1.Pod) int32 {
	var n int32
	for _, s := range pod.Status.ContainerStatuses {
		n = max(n, s.RestartCount)
	}
	return n
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podAvailable tells whether the pod has been ready for minReadySeconds.
func podAvailable(pod *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	if !podReady(pod) {
		return false
	}
	if minReadySeconds == 0 {
		return true
	}
	since := readySince(pod)
	return !since.IsZero() && since.Add(time.Duration(minReadySeconds)*time.Second).Before(now)
}

// podActive tells whether a pod counts for its owner: neither terminated nor
// being deleted.
func podActive(pod *corev1.Pod) bool {
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed && pod.DeletionTimestamp == nil
}
