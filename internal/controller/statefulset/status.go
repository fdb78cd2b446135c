package statefulset

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// countPods sets the status's pod counts from the lists of pods:
//   - replicas: pods created (with a phase);
//   - readyReplicas: Running and Ready;
//   - availableReplicas: of those, Ready for minReadySeconds;
//   - currentReplicas, updatedReplicas: created pods not being deleted at
//     the current or update revision.
func countPods(status *appsv1.StatefulSetStatus, minReadySeconds int32, now time.Time, current, update *appsv1.ControllerRevision, lists ...[]*corev1.Pod) {
	status.Replicas, status.ReadyReplicas, status.AvailableReplicas = 0, 0, 0
	status.CurrentReplicas, status.UpdatedReplicas = 0, 0
	for _, pods := range lists {
		for _, pod := range pods {
			if created(pod) {
				status.Replicas++
			}
			if runningAndReady(pod) {
				status.ReadyReplicas++
				if available(pod, minReadySeconds, now) {
					status.AvailableReplicas++
				}
			}
			if created(pod) && !terminating(pod) {
				if revisionOf(pod) == current.Name {
					status.CurrentReplicas++
				}
				if revisionOf(pod) == update.Name {
					status.UpdatedReplicas++
				}
			}
		}
	}
}

// completeRollingUpdate makes the update revision current once every
// replica is updated and ready (RollingUpdate only).
func completeRollingUpdate(set *appsv1.StatefulSet, status *appsv1.StatefulSetStatus) {
	want := *set.Spec.Replicas
	if set.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType &&
		status.UpdatedReplicas == want && status.ReadyReplicas == want && status.Replicas == want {
		status.CurrentReplicas = status.UpdatedReplicas
		status.CurrentRevision = status.UpdateRevision
	}
}

// statusChanged says whether status says something the set's does not.
func statusChanged(set *appsv1.StatefulSet, status *appsv1.StatefulSetStatus) bool {
	old := &set.Status
	return status.ObservedGeneration > old.ObservedGeneration ||
		status.Replicas != old.Replicas ||
		status.CurrentReplicas != old.CurrentReplicas ||
		status.ReadyReplicas != old.ReadyReplicas ||
		status.UpdatedReplicas != old.UpdatedReplicas ||
		status.CurrentRevision != old.CurrentRevision ||
		status.AvailableReplicas != old.AvailableReplicas ||
		status.UpdateRevision != old.UpdateRevision
}

// writeStatus completes a finished rolling update and writes the status if
// it changed, retrying conflicts on the cached set.
func (s *syncPass) writeStatus(ctx context.Context, set *appsv1.StatefulSet, status *appsv1.StatefulSetStatus) error {
	completeRollingUpdate(set, status)
	if !statusChanged(set, status) {
		return nil
	}
	set = set.DeepCopy()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		set.Status = *status
		_, err := s.c.client.AppsV1().StatefulSets(set.Namespace).UpdateStatus(ctx, set, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if cached, gerr := s.c.sets.StatefulSets(set.Namespace).Get(set.Name); gerr == nil {
			set = cached.DeepCopy()
		}
		return err
	})
}
