package replicaset

import (
	"context"
	"reflect"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Reasons of the ReplicaFailure condition.
const (
	ReasonFailedCreateCondition = "FailedCreate"
	ReasonFailedDeleteCondition = "FailedDelete"
)

// calculateStatus is rs's status given the pods it owns and the error of
// this sync's creates or deletes, if any.
func calculateStatus(rs *appsv1.ReplicaSet, owned []*corev1.Pod, manageErr error, now time.Time) appsv1.ReplicaSetStatus {
	status := *rs.Status.DeepCopy()
	templateLabels := labels.SelectorFromSet(rs.Spec.Template.Labels)
	var fullyLabeled, ready, available int32
	for _, p := range owned {
		if templateLabels.Matches(labels.Set(p.Labels)) {
			fullyLabeled++
		}
		if podReady(p) {
			ready++
			if podAvailable(p, rs.Spec.MinReadySeconds, now) {
				available++
			}
		}
	}
	failure := replicaFailure(status.Conditions)
	switch {
	case manageErr != nil && failure == nil:
		reason := ""
		if diff := len(owned) - int(*rs.Spec.Replicas); diff < 0 {
			reason = ReasonFailedCreateCondition
		} else if diff > 0 {
			reason = ReasonFailedDeleteCondition
		}
		status.Conditions = append(status.Conditions, appsv1.ReplicaSetCondition{
			Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now), Reason: reason, Message: manageErr.Error(),
		})
	case manageErr == nil && failure != nil:
		kept := status.Conditions[:0]
		for _, c := range status.Conditions {
			if c.Type != appsv1.ReplicaSetReplicaFailure {
				kept = append(kept, c)
			}
		}
		status.Conditions = kept
		if len(kept) == 0 {
			status.Conditions = nil
		}
	}
	status.Replicas = int32(len(owned))
	status.FullyLabeledReplicas = fullyLabeled
	status.ReadyReplicas = ready
	status.AvailableReplicas = available
	return status
}

func replicaFailure(conds []appsv1.ReplicaSetCondition) *appsv1.ReplicaSetCondition {
	for i := range conds {
		if conds[i].Type == appsv1.ReplicaSetReplicaFailure {
			return &conds[i]
		}
	}
	return nil
}

// writeStatus writes status, with observedGeneration, unless it is already
// there; as upstream it tries once more on a fresh copy after an error.
func (c *Controller) writeStatus(ctx context.Context, rs *appsv1.ReplicaSet, status appsv1.ReplicaSetStatus) (*appsv1.ReplicaSet, error) {
	if rs.Status.Replicas == status.Replicas &&
		rs.Status.FullyLabeledReplicas == status.FullyLabeledReplicas &&
		rs.Status.ReadyReplicas == status.ReadyReplicas &&
		rs.Status.AvailableReplicas == status.AvailableReplicas &&
		rs.Generation == rs.Status.ObservedGeneration &&
		reflect.DeepEqual(rs.Status.Conditions, status.Conditions) {
		return rs, nil
	}
	status.ObservedGeneration = rs.Generation
	rs.Status = status
	updated, err := c.kind.updateStatus(ctx, rs)
	if err == nil {
		return updated, nil
	}
	fresh, getErr := c.kind.fetch(ctx, rs.Namespace, rs.Name)
	if getErr != nil {
		return nil, getErr
	}
	fresh.Status = status
	return c.kind.updateStatus(ctx, fresh)
}
