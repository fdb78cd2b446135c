package namespace

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/retry"
)

// resourceResult is what one resource's deletion pass leaves.
type resourceResult struct {
	estimate    time.Duration // how much longer to wait; 0: no estimate
	remaining   int
	byFinalizer map[string]int
}

// deleteAllContent deletes every namespaced resource's objects in ns and
// records the outcome in ns's status conditions. It returns how long the
// remaining content should take to go (0 when nothing remains).
func (c *Controller) deleteAllContent(ctx context.Context, ns *corev1.Namespace) (time.Duration, error) {
	var errs []error
	var estimate time.Duration
	left := remaining{byResource: map[schema.GroupVersionResource]int{}, byFinalizer: map[string]int{}}
	for _, gvr := range c.resources {
		res, err := c.deleteResource(ctx, gvr, ns.Name, ns.DeletionTimestamp.Time)
		if err != nil {
			errs = append(errs, err)
		}
		estimate = max(estimate, res.estimate)
		if res.remaining > 0 {
			left.byResource[gvr] = res.remaining
			for f, n := range res.byFinalizer {
				left.byFinalizer[f] += n
			}
		}
	}
	if err := c.writeConditions(ctx, ns, failureConditions(errs, left)); err != nil && ctx.Err() == nil {
		c.log.Warn("updating namespace conditions failed", "namespace", ns.Name, "err", err)
	}
	return estimate, errors.Join(errs...)
}

// deleteResource deletes the objects of one resource in ns (with
// deletecollection, or one by one where it is not supported) and checks
// what remains.
func (c *Controller) deleteResource(ctx context.Context, gvr schema.GroupVersionResource, ns string, deletedAt time.Time) (resourceResult, error) {
	estimate, err := c.estimate(ctx, gvr, ns, deletedAt)
	if err != nil {
		return resourceResult{}, err
	}
	client := c.meta.Resource(gvr).Namespace(ns)
	// Background: the garbage collector must not orphan anything here.
	background := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &background}
	err = client.DeleteCollection(ctx, opts, metav1.ListOptions{})
	if apierrors.IsMethodNotSupported(err) || apierrors.IsNotFound(err) {
		err = c.deleteEach(ctx, gvr, ns, opts)
	}
	if err != nil {
		return resourceResult{estimate: estimate}, err
	}
	list, err := client.List(ctx, metav1.ListOptions{})
	if apierrors.IsMethodNotSupported(err) || apierrors.IsNotFound(err) {
		return resourceResult{estimate: estimate}, nil
	}
	if err != nil {
		return resourceResult{estimate: estimate}, err
	}
	if len(list.Items) == 0 {
		return resourceResult{}, nil
	}
	res := resourceResult{estimate: estimate, remaining: len(list.Items), byFinalizer: map[string]int{}}
	for _, item := range list.Items {
		for _, f := range item.Finalizers {
			res.byFinalizer[f]++
		}
	}
	switch {
	case estimate > 0:
		return res, nil
	case len(res.byFinalizer) > 0:
		// Finalizers are normal: give them time.
		res.estimate = finalizerEstimate
		return res, nil
	}
	res.byFinalizer = nil
	return res, fmt.Errorf("unexpected items still remain in namespace: %s for gvr: %v", ns, gvr)
}

// deleteEach lists the objects of a resource in ns and deletes them one by one.
func (c *Controller) deleteEach(ctx context.Context, gvr schema.GroupVersionResource, ns string, opts metav1.DeleteOptions) error {
	client := c.meta.Resource(gvr).Namespace(ns)
	list, err := client.List(ctx, metav1.ListOptions{})
	if apierrors.IsMethodNotSupported(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, item := range list.Items {
		err := client.Delete(ctx, item.Name, opts)
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) {
			return err
		}
	}
	return nil
}

// estimate is how long the graceful deletion of a resource's objects may
// take: for pods, the longest grace period of those not terminated, counted
// from the namespace's deletion; 0 for everything else.
func (c *Controller) estimate(ctx context.Context, gvr schema.GroupVersionResource, ns string, deletedAt time.Time) (time.Duration, error) {
	if gvr.GroupResource() != (schema.GroupResource{Resource: "pods"}) {
		return 0, nil
	}
	pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	var longest time.Duration
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if g := p.Spec.TerminationGracePeriodSeconds; g != nil {
			longest = max(longest, time.Duration(*g)*time.Second)
		}
	}
	if time.Since(deletedAt) >= longest {
		return 0, nil
	}
	return longest, nil
}

// writeConditions writes the namespace's deletion conditions through
// /status when they changed.
func (c *Controller) writeConditions(ctx context.Context, ns *corev1.Namespace, failures []corev1.NamespaceCondition) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if latest.UID != ns.UID || !updateConditions(&latest.Status, failures) {
			return nil
		}
		_, err = c.client.CoreV1().Namespaces().UpdateStatus(ctx, latest, metav1.UpdateOptions{})
		return err
	})
}
