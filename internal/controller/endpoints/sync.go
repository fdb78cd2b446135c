package endpoints

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/controller/endpointslice/endpointutil"
)

// errStale: the informer still shows an Endpoints object this controller
// has replaced; the sync is retried once the cache catches up.
var errStale = errors.New("endpoints informer cache is out of date")

// sync brings the Endpoints of the Service at key to what its pods say.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller queued: nothing to retry
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		err := c.client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		c.triggers.Forget(ns, name)
		c.stale.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.Selector == nil {
		return nil
	}
	pods, err := c.pods.Pods(ns).List(labels.Set(svc.Spec.Selector).AsSelectorPreValidated())
	if err != nil {
		return err
	}
	// Computed before the no-op check so that the tracker sees every sync.
	trigger := c.triggers.Compute(svc, pods)
	subsets := desiredSubsets(svc, pods)
	truncated := truncate(&subsets)

	cur, err := c.endpoints.Endpoints(ns).Get(name)
	create := apierrors.IsNotFound(err)
	switch {
	case create:
		cur = &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	case err != nil:
		return err
	case c.stale.isStale(key, cur.ResourceVersion):
		return errStale
	}
	wantLabels := endpointsLabels(svc)
	_, overCapacity := cur.Annotations[corev1.EndpointsOverCapacity]
	if !create && subsetsEqual(cur.Subsets, subsets) && maps.Equal(cur.Labels, wantLabels) && overCapacity == truncated {
		return nil
	}

	next := cur.DeepCopy()
	next.Subsets = subsets
	next.Labels = wantLabels
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	if trigger.IsZero() {
		delete(next.Annotations, corev1.EndpointsLastChangeTriggerTime)
	} else {
		next.Annotations[corev1.EndpointsLastChangeTriggerTime] = trigger.UTC().Format(time.RFC3339Nano)
	}
	if truncated {
		next.Annotations[corev1.EndpointsOverCapacity] = OverCapacityTruncated
	} else {
		delete(next.Annotations, corev1.EndpointsOverCapacity)
	}
	return c.write(ctx, key, cur, next, create)
}

func (c *Controller) write(ctx context.Context, key string, cur, next *corev1.Endpoints, create bool) error {
	api := c.client.CoreV1().Endpoints(next.Namespace)
	if create {
		_, err := api.Create(ctx, next, metav1.CreateOptions{})
		if apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil // creates fail until the namespace is gone
		}
		if err != nil && ctx.Err() == nil {
			c.recorder.Eventf(next, corev1.EventTypeWarning, "FailedToCreateEndpoint",
				"Failed to create endpoint for service %s: %v", key, err)
		}
		return err
	}
	updated, err := api.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		if ctx.Err() == nil {
			c.recorder.Eventf(next, corev1.EventTypeWarning, "FailedToUpdateEndpoint",
				"Failed to update endpoint %s: %v", key, err)
		}
		return err
	}
	if updated.ResourceVersion != cur.ResourceVersion {
		c.stale.replace(key, cur.ResourceVersion)
	}
	return nil
}

// endpointsLabels are the Service's labels, plus the headless label for a
// headless Service.
func endpointsLabels(svc *corev1.Service) map[string]string {
	out := maps.Clone(svc.Labels)
	if out == nil {
		out = map[string]string{}
	}
	if endpointutil.IsServiceIPSet(svc) {
		delete(out, corev1.IsHeadlessService)
	} else {
		out[corev1.IsHeadlessService] = ""
	}
	return out
}

// ignoreRefVersion compares subsets without the pods' resourceVersions,
// which other writers may have put in targetRefs.
var ignoreRefVersion = conversion.EqualitiesOrDie(func(a, b corev1.ObjectReference) bool {
	a.ResourceVersion, b.ResourceVersion = "", ""
	return a == b
})

func subsetsEqual(a, b []corev1.EndpointSubset) bool {
	return ignoreRefVersion.DeepEqual(a, b)
}

// staleTracker remembers, per Service, the resourceVersion of the
// Endpoints object this controller last replaced: while the informer still
// shows it, the cache is behind the controller's own write.
type staleTracker struct {
	mu       sync.Mutex
	replaced map[string]string
}

func (t *staleTracker) replace(key, rv string) {
	t.mu.Lock()
	t.replaced[key] = rv
	t.mu.Unlock()
}

func (t *staleTracker) isStale(key, rv string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.replaced[key]
	if ok && old != rv {
		delete(t.replaced, key) // caught up
	}
	return ok && old == rv
}

func (t *staleTracker) forget(key string) {
	t.mu.Lock()
	delete(t.replaced, key)
	t.mu.Unlock()
}
