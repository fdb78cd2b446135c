package replicaset

import (
	"context"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// slowStartInitialBatch is the size of the first batch of creates.
const slowStartInitialBatch = 1

// sync brings one owner's pods to its replica count and writes its status.
func (c *Controller) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	rs, err := c.kind.cached(namespace, name)
	if apierrors.IsNotFound(err) {
		c.expectations.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	mayAct := c.expectations.satisfied(key)
	selector, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		c.log.Warn("invalid selector", "kind", c.kind.gvk.Kind, "key", key, "err", err)
		return nil // retrying will not fix it; an update of the owner will
	}
	// Its own pods, selected or not (it releases those the selector no
	// longer matches), and the orphans it may adopt: the only pods
	// claimPods acts on, read from an index as upstream's
	// PodControllerUIDIndex, not by walking every pod of the namespace
	// at every sync.
	all, err := c.ownedOrOrphan(rs)
	if err != nil {
		return err
	}
	var active []*corev1.Pod
	for _, p := range all {
		if podActive(p) {
			active = append(active, p)
		}
	}
	owned, err := c.claimPods(ctx, rs, selector, active)
	if err != nil {
		return err
	}
	var manageErr error
	if mayAct && rs.DeletionTimestamp == nil {
		manageErr = c.manageReplicas(ctx, key, owned, rs)
	}
	now := c.now()
	rs = rs.DeepCopy()
	updated, err := c.writeStatus(ctx, rs, calculateStatus(rs, owned, manageErr, now))
	if err != nil {
		return err
	}
	// Pods ready but not yet for minReadySeconds become available with no
	// event to say so.
	if manageErr == nil && updated.Spec.MinReadySeconds > 0 &&
		updated.Status.ReadyReplicas == *updated.Spec.Replicas && updated.Status.AvailableReplicas != *updated.Spec.Replicas {
		c.queue.AddAfter(key, time.Duration(updated.Spec.MinReadySeconds)*time.Second)
	}
	return manageErr
}

// manageReplicas creates or deletes pods so that rs owns spec.replicas
// active pods, at most BurstReplicas of them this sync.
func (c *Controller) manageReplicas(ctx context.Context, key string, owned []*corev1.Pod, rs *appsv1.ReplicaSet) error {
	diff := len(owned) - int(*rs.Spec.Replicas)
	switch {
	case diff < 0:
		n := min(-diff, c.opts.BurstReplicas)
		// Expect all the creates first: the informer may show a pod
		// before its create returns.
		c.expectations.expectCreations(key, n)
		created, err := slowStartBatch(n, slowStartInitialBatch, func() error {
			err := c.createPod(ctx, rs)
			if err != nil && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return nil // every create fails until the namespace is gone
			}
			return err
		})
		// The creates never made or failed will never be observed.
		for range n - created {
			c.expectations.creationObserved(key)
		}
		return err
	case diff > 0:
		n := min(diff, c.opts.BurstReplicas)
		victims := podsToDelete(owned, c.relatedPods(rs), n, c.now())
		keys := make([]string, len(victims))
		for i, p := range victims {
			keys[i] = podKey(p)
		}
		c.expectations.expectDeletions(key, keys)
		errs := make([]error, len(victims))
		var wg sync.WaitGroup
		for i, p := range victims {
			wg.Go(func() {
				if err := c.deletePod(ctx, rs, p.Name); err != nil {
					// No delete event will come for this one.
					c.expectations.deletionObserved(key, podKey(p))
					if !apierrors.IsNotFound(err) {
						errs[i] = err
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err // the first, as upstream reports one
			}
		}
	}
	return nil
}

// slowStartBatch calls fn count times, in batches that start at initial
// and double while every call of a batch succeeds; the calls of a batch run
// in parallel. It returns how many calls succeeded and the first error, and
// makes no call after a batch with an error. A quota or a broken template
// thus costs one failed call, not hundreds.
func slowStartBatch(count, initial int, fn func() error) (int, error) {
	remaining, done := count, 0
	for batch := min(remaining, initial); batch > 0; batch = min(2*batch, remaining) {
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for range batch {
			wg.Go(func() {
				if err := fn(); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		failed := len(errs)
		done += batch - failed
		if failed > 0 {
			return done, <-errs
		}
		remaining -= batch
	}
	return done, nil
}

// relatedPods are the pods selected by rs and by the other owners of its
// controller (the ReplicaSets of one Deployment), each once. An owner with
// no controller has none, as upstream: node crowding then ranks no pod.
func (c *Controller) relatedPods(rs *appsv1.ReplicaSet) []*corev1.Pod {
	seen := map[types.UID]bool{}
	var out []*corev1.Pod
	for _, other := range c.kind.withSameController(rs) {
		selector, err := metav1.LabelSelectorAsSelector(other.Spec.Selector)
		if err != nil {
			continue
		}
		pods, err := c.pods.Pods(other.Namespace).List(selector)
		if err != nil {
			continue
		}
		for _, p := range pods {
			if !seen[p.UID] {
				seen[p.UID] = true
				out = append(out, p)
			}
		}
	}
	return out
}
