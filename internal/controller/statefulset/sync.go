package statefulset

import (
	"context"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/history"
)

// maxBatchSize caps a Parallel slow-start batch, as upstream.
const maxBatchSize = 500

// syncPass is one sync of one set.
type syncPass struct {
	c   *Controller
	now time.Time
}

// update is upstream's UpdateStatefulSet: it reconciles the set's pods with
// its spec, writes the status, and trims the revision history.
func (s *syncPass) update(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod) (*appsv1.StatefulSetStatus, error) {
	set = set.DeepCopy()
	selector, err := selectorOf(set)
	if err != nil {
		return nil, err
	}
	revisions, err := s.c.history.ListOwned(set, selector)
	if err != nil {
		return nil, err
	}
	history.Sort(revisions)

	current, update, status, err := s.performUpdate(ctx, set, pods, revisions)
	truncErr := s.truncateHistory(ctx, set, pods, revisions, current, update)
	if err != nil {
		return nil, utilerrors.Flatten(utilerrors.NewAggregate([]error{err, truncErr}))
	}
	return status, truncErr
}

// performUpdate settles the current and update revisions, reconciles the
// pods, and writes the status, even when reconciling failed part-way.
func (s *syncPass) performUpdate(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, revisions []*appsv1.ControllerRevision) (current, update *appsv1.ControllerRevision, status *appsv1.StatefulSetStatus, err error) {
	var collisionCount int32
	current, update, collisionCount, err = s.revisions(ctx, set, revisions)
	if err != nil {
		return current, update, nil, err
	}
	status, err = s.reconcile(ctx, set, current, update, collisionCount, pods)
	if status == nil {
		return current, update, nil, err
	}
	statusErr := s.writeStatus(ctx, set, status)
	if err == nil {
		return current, update, status, statusErr
	}
	if statusErr != nil {
		s.c.log.Warn("could not update status", "statefulset", set.Namespace+"/"+set.Name, "err", statusErr)
	}
	return current, update, status, err
}

// reconcile is upstream's updateStatefulSet: create, fix and delete pods so
// that the set converges on its spec, and return the resulting status.
func (s *syncPass) reconcile(ctx context.Context, set *appsv1.StatefulSet, currentRevision, updateRevision *appsv1.ControllerRevision, collisionCount int32, pods []*corev1.Pod) (*appsv1.StatefulSetStatus, error) {
	currentSet, err := applyRevision(set, currentRevision)
	if err != nil {
		return nil, err
	}
	updateSet, err := applyRevision(set, updateRevision)
	if err != nil {
		return nil, err
	}
	status := &appsv1.StatefulSetStatus{
		ObservedGeneration: set.Generation,
		CurrentRevision:    currentRevision.Name,
		UpdateRevision:     updateRevision.Name,
		CollisionCount:     &collisionCount,
	}
	minReady := set.Spec.MinReadySeconds
	countPods(status, minReady, s.now, currentRevision, updateRevision, pods)

	// Replicas in range by index (ordinal - start); condemned ones out of
	// range, highest ordinal first. Pods whose names carry no ordinal are
	// ignored.
	start := startOrdinal(set)
	replicas := make([]*corev1.Pod, *set.Spec.Replicas)
	var condemned []*corev1.Pod
	for _, pod := range pods {
		switch {
		case inOrdinalRange(pod, set):
			replicas[ordinalOf(pod)-start] = pod
		case ordinalOf(pod) >= 0:
			condemned = append(condemned, pod)
		}
	}
	for i := range replicas {
		if replicas[i] == nil {
			replicas[i] = newVersionedPod(currentSet, updateSet, currentRevision.Name, updateRevision.Name, start+i)
		}
	}
	sort.SliceStable(condemned, func(i, j int) bool { return ordinalOf(condemned[i]) > ordinalOf(condemned[j]) })

	// The first unhealthy pod: the lowest in range, else the lowest condemned.
	var firstUnhealthy *corev1.Pod
	for _, pod := range replicas {
		if !healthy(pod) {
			firstUnhealthy = pod
			break
		}
	}
	for i := len(condemned) - 1; i >= 0 && firstUnhealthy == nil; i-- {
		if !healthy(condemned[i]) {
			firstUnhealthy = condemned[i]
		}
	}

	if set.DeletionTimestamp != nil {
		return status, nil
	}
	monotonic := set.Spec.PodManagementPolicy != appsv1.ParallelPodManagement
	recount := func() { countPods(status, minReady, s.now, currentRevision, updateRevision, replicas, condemned) }

	// Pods in range first: create, recreate or fix them; OrderedReady stops
	// at the first that is not Running, Ready and available.
	if stop, err := forEach(replicas, monotonic, func(i int) (bool, error) {
		return s.processReplica(ctx, set, updateSet, monotonic, replicas[i])
	}); stop || err != nil {
		recount()
		return status, err
	}
	// Claims of condemned pods get their retention ownerRefs before the
	// pods go, so that the garbage collector deletes them after the pods.
	if stop, err := forEach(condemned, monotonic, func(i int) (bool, error) {
		match, err := s.claimsMatchPolicy(updateSet, condemned[i])
		if err != nil {
			return true, err
		}
		if !match {
			if err := s.updateClaimsForPolicy(ctx, updateSet, condemned[i]); err != nil {
				return true, err
			}
		}
		return false, nil
	}); stop || err != nil {
		recount()
		return status, err
	}
	// Then scale down, highest ordinal first.
	if stop, err := forEach(condemned, monotonic, func(i int) (bool, error) {
		return s.processCondemned(ctx, set, firstUnhealthy, monotonic, condemned[i])
	}); stop || err != nil {
		recount()
		return status, err
	}
	recount()

	if set.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return status, nil
	}
	return status, s.rollingUpdate(ctx, set, replicas, updateRevision, status)
}

// processReplica acts on one pod in range; it returns true when an
// OrderedReady set must go no further in this sync.
func (s *syncPass) processReplica(ctx context.Context, set, updateSet *appsv1.StatefulSet, monotonic bool, pod *corev1.Pod) (bool, error) {
	// A pod that ran to completion (evicted, node rebooted...) is deleted,
	// and created again in a later sync.
	if finished(pod) {
		if pod.DeletionTimestamp == nil {
			if err := s.deletePod(ctx, set, pod); err != nil {
				return true, err
			}
		}
		return true, nil
	}
	if !created(pod) {
		if stale, err := s.claimIsStale(set, pod); err != nil || stale {
			return true, err
		}
		if err := s.createPod(ctx, set, pod); err != nil {
			return true, err
		}
		if monotonic {
			return true, nil
		}
	}
	if pending(pod) {
		if err := s.createMissingClaims(ctx, set, pod); err != nil {
			return true, err
		}
	}
	if monotonic && (terminating(pod) || !runningAndReady(pod) || !available(pod, set.Spec.MinReadySeconds, s.now)) {
		return true, nil
	}
	// Restore identity, storage and claim ownership if they drifted. An
	// error here is expected while the pod is being updated: treat as match.
	retentionMatch, err := s.claimsMatchPolicy(updateSet, pod)
	if err != nil {
		retentionMatch = true
	}
	if identityMatches(set, pod) && storageMatches(set, pod) && retentionMatch {
		return false, nil
	}
	if err := s.updatePod(ctx, updateSet, pod.DeepCopy()); err != nil {
		return true, err
	}
	return false, nil
}

// processCondemned deletes one pod out of range; OrderedReady waits for a
// terminating pod to go, and for an unhealthy one unless it is the first
// unhealthy pod of the set.
func (s *syncPass) processCondemned(ctx context.Context, set *appsv1.StatefulSet, firstUnhealthy *corev1.Pod, monotonic bool, pod *corev1.Pod) (bool, error) {
	if terminating(pod) {
		return monotonic, nil
	}
	if monotonic && pod != firstUnhealthy && (!runningAndReady(pod) || !available(pod, set.Spec.MinReadySeconds, s.now)) {
		return true, nil
	}
	return true, s.deletePod(ctx, set, pod)
}

// rollingUpdate deletes outdated pods from the highest ordinal down to the
// partition, at most maxUnavailable of the pods in range being unhealthy
// (the MaxUnavailableStatefulSet behaviour); they come back at the update
// revision in later syncs.
func (s *syncPass) rollingUpdate(ctx context.Context, set *appsv1.StatefulSet, replicas []*corev1.Pod, updateRevision *appsv1.ControllerRevision, status *appsv1.StatefulSetStatus) error {
	partition, maxUnavailable := 0, 1
	if ru := set.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		partition = int(ptr.Deref(ru.Partition, 0))
		n, err := maxUnavailableOf(ru.MaxUnavailable, len(replicas))
		if err != nil {
			return err
		}
		maxUnavailable = n
	}
	unavailable := 0
	for _, pod := range replicas {
		if !healthy(pod) {
			unavailable++
		}
	}
	if unavailable >= maxUnavailable {
		return nil
	}
	deleted := 0
	for i := len(replicas) - 1; i >= partition && deleted < maxUnavailable-unavailable; i-- {
		pod := replicas[i]
		if revisionOf(pod) == updateRevision.Name || terminating(pod) {
			continue
		}
		if err := s.deletePod(ctx, set, pod); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		deleted++
		status.CurrentReplicas--
	}
	return nil
}

// maxUnavailableOf resolves rollingUpdate.maxUnavailable (default 1) against
// the replicas, rounding a percentage down, and never less than 1.
func maxUnavailableOf(v *intstr.IntOrString, replicas int) (int, error) {
	n, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(v, intstr.FromInt32(1)), replicas, false)
	if err != nil {
		return 0, err
	}
	return max(n, 1), nil
}

// forEach runs fn over the pods: one after the other, stopping at the first
// that asks to (OrderedReady); or in slow-start batches of 1, 2, 4, ... up
// to 500, stopping after a batch with an error (Parallel).
func forEach(pods []*corev1.Pod, monotonic bool, fn func(i int) (bool, error)) (bool, error) {
	if monotonic {
		for i := range pods {
			if stop, err := fn(i); stop || err != nil {
				return true, err
			}
		}
		return false, nil
	}
	next := 0
	for batch := min(1, len(pods)); batch > 0; batch = min(2*batch, len(pods)-next, maxBatchSize) {
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for i := next; i < next+batch; i++ {
			wg.Go(func() {
				if _, err := fn(i); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		next += batch
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		if len(all) > 0 {
			return true, utilerrors.NewAggregate(all)
		}
	}
	return false, nil
}
