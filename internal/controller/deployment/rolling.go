package deployment

import (
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
)

// rolloutRolling moves one step of a rolling update: scale the new
// ReplicaSet up within maxSurge, or else the old ones down within
// maxUnavailable, then write the status.
func (c *Controller) rolloutRolling(ctx context.Context, d *appsv1.Deployment, rss []*appsv1.ReplicaSet) error {
	newRS, old, err := c.replicaSetsAndSyncRevision(ctx, d, rss, true)
	if err != nil {
		return err
	}
	all := append(slices.Clone(old), newRS)

	scaledUp, err := c.reconcileNewReplicaSet(ctx, all, newRS, d)
	if err != nil {
		return err
	}
	if scaledUp {
		return c.syncRolloutStatus(ctx, all, newRS, d)
	}
	scaledDown, err := c.reconcileOldReplicaSets(ctx, all, active(old), newRS, d)
	if err != nil {
		return err
	}
	if scaledDown {
		return c.syncRolloutStatus(ctx, all, newRS, d)
	}
	if deploymentComplete(d, &d.Status) {
		if err := c.cleanup(ctx, old, d); err != nil {
			return err
		}
	}
	return c.syncRolloutStatus(ctx, all, newRS, d)
}

// reconcileNewReplicaSet scales the new ReplicaSet toward spec.replicas.
func (c *Controller) reconcileNewReplicaSet(ctx context.Context, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) (bool, error) {
	if *newRS.Spec.Replicas == *d.Spec.Replicas {
		return false, nil
	}
	if *newRS.Spec.Replicas > *d.Spec.Replicas {
		scaled, _, err := c.scaleReplicaSetAndRecordEvent(ctx, newRS, *d.Spec.Replicas, d)
		return scaled, err
	}
	n, err := newReplicaSetReplicas(d, all, newRS)
	if err != nil {
		return false, err
	}
	scaled, _, err := c.scaleReplicaSetAndRecordEvent(ctx, newRS, n, d)
	return scaled, err
}

// reconcileOldReplicaSets scales old ReplicaSets down as far as keeping
// spec.replicas - maxUnavailable pods available allows: first their pods
// that are not available, then available ones.
func (c *Controller) reconcileOldReplicaSets(ctx context.Context, all, old []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet, d *appsv1.Deployment) (bool, error) {
	if specReplicas(old) == 0 {
		return false, nil
	}
	minAvailable := *d.Spec.Replicas - maxUnavailable(d)
	newUnavailable := *newRS.Spec.Replicas - newRS.Status.AvailableReplicas
	// Pods unavailable in the new ReplicaSet will take their time: count
	// them against what may go, so that a broken new template cannot
	// scale the old pods away.
	maxScaledDown := specReplicas(all) - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return false, nil
	}
	old, cleaned, err := c.cleanupUnhealthyReplicas(ctx, old, d, maxScaledDown)
	if err != nil {
		return false, err
	}
	all = append(slices.Clone(old), newRS)
	scaledDown, err := c.scaleDownOldReplicaSets(ctx, all, old, d)
	if err != nil {
		return false, err
	}
	return cleaned+scaledDown > 0, nil
}

// cleanupUnhealthyReplicas scales old ReplicaSets down by their pods that
// are not available, oldest first, at most max in all.
func (c *Controller) cleanupUnhealthyReplicas(ctx context.Context, old []*appsv1.ReplicaSet, d *appsv1.Deployment, max int32) ([]*appsv1.ReplicaSet, int32, error) {
	old = slices.Clone(old)
	slices.SortFunc(old, byCreation)
	var done int32
	for i, rs := range old {
		if done >= max {
			break
		}
		if *rs.Spec.Replicas == 0 || *rs.Spec.Replicas == rs.Status.AvailableReplicas {
			continue
		}
		n := min(max-done, *rs.Spec.Replicas-rs.Status.AvailableReplicas)
		size := *rs.Spec.Replicas - n
		if size > *rs.Spec.Replicas {
			return nil, 0, fmt.Errorf("when cleaning up unhealthy replicas, got invalid request to scale down %s/%s %d -> %d", rs.Namespace, rs.Name, *rs.Spec.Replicas, size)
		}
		_, updated, err := c.scaleReplicaSetAndRecordEvent(ctx, rs, size, d)
		if err != nil {
			return nil, done, err
		}
		done += n
		old[i] = updated
	}
	return old, done, nil
}

// scaleDownOldReplicaSets scales old ReplicaSets down, oldest first, by as
// many pods as are available beyond spec.replicas - maxUnavailable.
func (c *Controller) scaleDownOldReplicaSets(ctx context.Context, all, old []*appsv1.ReplicaSet, d *appsv1.Deployment) (int32, error) {
	minAvailable := *d.Spec.Replicas - maxUnavailable(d)
	available := availableReplicas(all)
	if available <= minAvailable {
		return 0, nil
	}
	old = slices.Clone(old)
	slices.SortFunc(old, byCreation)
	toScaleDown := available - minAvailable
	var done int32
	for _, rs := range old {
		if done >= toScaleDown {
			break
		}
		if *rs.Spec.Replicas == 0 {
			continue
		}
		n := min(*rs.Spec.Replicas, toScaleDown-done)
		size := *rs.Spec.Replicas - n
		if size > *rs.Spec.Replicas {
			return 0, fmt.Errorf("when scaling down old replica sets, got invalid request to scale down %s/%s %d -> %d", rs.Namespace, rs.Name, *rs.Spec.Replicas, size)
		}
		if _, _, err := c.scaleReplicaSetAndRecordEvent(ctx, rs, size, d); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}
