// Package namespace is moorage's namespace controller, with the semantics
// of kube-controller-manager's: the content of a namespace being deleted is
// deleted, resource by resource; progress shows in the namespace's status
// conditions; once nothing is left, "kubernetes" is removed from
// spec.finalizers (through /finalize), which lets the API server delete the
// namespace.
package namespace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/registry"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Options tune the controller.
type Options struct {
	// Workers is the number of namespaces deleted at once; 0 means 2.
	Workers int
	// DeletionDelay is how long a namespace stays Terminating, untouched,
	// before its content is deleted: upstream waits 5 s (its default here) so
	// that last-moment creations are seen, and clients can rely on seeing
	// the Terminating phase. Negative means no delay.
	DeletionDelay time.Duration
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the namespace controller.
type Controller struct {
	log       *slog.Logger
	client    kubernetes.Interface
	meta      metadata.Interface
	resources []schema.GroupVersionResource // every namespaced resource
	factory   informers.SharedInformerFactory
	limiter   workqueue.TypedRateLimiter[string]
	queue     workqueue.TypedRateLimitingInterface[string]
	workers   int
}

const (
	// resyncPeriod re-examines every namespace now and then, as upstream.
	resyncPeriod = 5 * time.Minute
	// finalizerEstimate is upstream's guess of how long finalizers of
	// remaining objects take.
	finalizerEstimate = 15 * time.Second
)

// New builds a namespace controller for the namespaced resources of reg.
func New(cfg *rest.Config, reg *registry.Registry, log *slog.Logger, opts Options) (*Controller, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "namespace-controller")
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("namespace controller: client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("namespace controller: metadata client: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	// Retries start fast and back off to a minute at most, as upstream.
	limiter := workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, time.Minute)
	c := &Controller{
		log:     log.With("controller", "namespace"),
		client:  client,
		meta:    meta,
		factory: sharedinformers.Or(opts.Informers, client),
		limiter: limiter,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[string]{Name: "namespace"}),
		workers: opts.Workers,
	}
	for _, r := range reg.All() {
		if r.Namespaced {
			c.resources = append(c.resources, r.GVR())
		}
	}
	delay := opts.DeletionDelay
	switch {
	case delay == 0:
		delay = 5 * time.Second
	case delay < 0:
		delay = 0
	}
	enqueue := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok && ns.DeletionTimestamp != nil {
			c.queue.AddAfter(ns.Name, delay)
		}
	}
	_, err = c.factory.Core().V1().Namespaces().Informer().AddEventHandlerWithResyncPeriod(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}, resyncPeriod)
	if err != nil {
		return nil, fmt.Errorf("namespace controller: watching namespaces: %w", err)
	}
	return c, nil
}

// Run deletes namespaces until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	c.factory.WaitForCacheSync(ctx.Done())
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) processNext(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	err := c.sync(ctx, name)
	var left *remainingError
	switch {
	case err == nil:
		c.queue.Forget(name)
	case errors.As(err, &left):
		// Wait for the remaining content, with back-off, never longer than
		// upstream's fixed wait (half the estimate).
		delay := min(c.limiter.When(name), left.estimate/2+time.Second)
		c.queue.AddAfter(name, delay)
	default:
		if ctx.Err() == nil {
			c.log.Warn("deleting namespace failed", "namespace", name, "err", err)
		}
		c.queue.AddRateLimited(name)
	}
	return true
}

// remainingError says content remains that should go within estimate.
type remainingError struct{ estimate time.Duration }

func (e *remainingError) Error() string {
	return fmt.Sprintf("some content remains in the namespace, estimate %d seconds before it is removed", int64(e.estimate/time.Second))
}

// sync deletes the content of namespace name if it is being deleted, then
// finalizes it.
func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp == nil {
		return nil
	}
	ns, err = c.retryOnConflict(ctx, ns, c.ensureTerminating)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ns.Spec.Finalizers) == 0 {
		return nil // finalized already
	}
	estimate, err := c.deleteAllContent(ctx, ns)
	if err != nil {
		return err
	}
	if estimate > 0 {
		return &remainingError{estimate: estimate}
	}
	_, err = c.retryOnConflict(ctx, ns, c.finalize)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// retryOnConflict runs fn on the latest namespace until it does not
// conflict; the namespace must keep its uid.
func (c *Controller) retryOnConflict(ctx context.Context, ns *corev1.Namespace, fn func(context.Context, *corev1.Namespace) (*corev1.Namespace, error)) (*corev1.Namespace, error) {
	for {
		out, err := fn(ctx, ns)
		if !apierrors.IsConflict(err) {
			return out, err
		}
		latest, err := c.client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if latest.UID != ns.UID {
			return nil, fmt.Errorf("namespace uid has changed across retries")
		}
		ns = latest
	}
}

// ensureTerminating sets status.phase Terminating if it is not yet.
func (c *Controller) ensureTerminating(ctx context.Context, ns *corev1.Namespace) (*corev1.Namespace, error) {
	if ns.Status.Phase == corev1.NamespaceTerminating {
		return ns, nil
	}
	ns = ns.DeepCopy()
	ns.Status.Phase = corev1.NamespaceTerminating
	return c.client.CoreV1().Namespaces().UpdateStatus(ctx, ns, metav1.UpdateOptions{})
}

// finalize removes "kubernetes" from spec.finalizers.
func (c *Controller) finalize(ctx context.Context, ns *corev1.Namespace) (*corev1.Namespace, error) {
	out := &corev1.Namespace{ObjectMeta: ns.ObjectMeta, Spec: ns.Spec}
	keep := map[corev1.FinalizerName]bool{}
	for _, f := range ns.Spec.Finalizers {
		if f != corev1.FinalizerKubernetes {
			keep[f] = true
		}
	}
	out.Spec.Finalizers = make([]corev1.FinalizerName, 0, len(keep))
	for f := range keep {
		out.Spec.Finalizers = append(out.Spec.Finalizers, f)
	}
	sort.Slice(out.Spec.Finalizers, func(i, j int) bool { return out.Spec.Finalizers[i] < out.Spec.Finalizers[j] })
	res, err := c.client.CoreV1().Namespaces().Finalize(ctx, out, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return ns, nil
	}
	return res, err
}
