// Package endpointslice is upstream's EndpointSlice controller
// (endpointslice-controller in kube-controller-manager). For every Service
// with a selector, except ExternalName ones, it keeps discovery.k8s.io/v1
// EndpointSlices, per IP family of the Service, listing the selected pods
// that have an IP and have not terminated:
//
//   - slices are named by generateName "<service>-", owned by the Service
//     (so the garbage collector deletes them with it), labelled
//     kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by
//     = endpointslice-controller.k8s.io, plus the Service's labels and
//     service.kubernetes.io/headless for a headless Service;
//   - one endpoint per pod: its IPs of the slice's family, conditions
//     ready (serving and not terminating, or always when the Service
//     publishes not-ready addresses), serving (the pod is Ready) and
//     terminating (the pod is being deleted), a targetRef to the pod, its
//     node, the node's topology.kubernetes.io/zone, and its hostname when
//     it names the Service as its subdomain;
//   - pods are grouped by the ports their Service ports resolve to (a
//     named targetPort may differ per pod), at most 100 endpoints a slice;
//     a Service that selects nothing gets one empty slice;
//   - changes are applied in place where possible (an endpoint whose
//     conditions change stays in its slice), new endpoints fill the slices
//     being written first, then the unchanged slice they fill best, then
//     new slices;
//   - endpoints.kubernetes.io/last-change-trigger-time records the earliest
//     change a write publishes.
//
// A pod bound to a node that does not exist is left out (and the Service
// retried) unless the Service publishes not-ready addresses. As upstream, a
// Service that loses its selector keeps its slices as they are; topology
// hints (trafficDistribution, the topology-mode annotation) are not set.
//
// The controller remembers its own writes so that a sync never acts on a
// cache older than them (it would create slices twice): a sync that sees
// one is retried once the cache has caught up.
package endpointslice

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/endpointslice/endpointutil"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controller, as upstream.
const Component = "endpointslice-controller"

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
// slices this controller manages.
const ManagedBy = "endpointslice-controller.k8s.io"

const (
	// eventSource is the component upstream's events name.
	eventSource = "endpoint-slice-controller"
	// maxRetries is how often a failing Service is retried (1 s doubling,
	// at most 1000 s) before it waits for the next change.
	maxRetries = 15
	// sliceChangeDelay is the least delay before a change to a slice
	// causes a sync, to batch changes to several slices.
	sliceChangeDelay = time.Second
)

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Workers is how many Services are synced at once
	// (--concurrent-service-endpoint-syncs, 5).
	Workers int
	// MaxEndpointsPerSlice (--max-endpoints-per-slice, 100).
	MaxEndpointsPerSlice int
	// BatchPeriod delays the syncs that pod changes cause, to publish
	// several changes in one write (--endpointslice-updates-batch-period, 0).
	BatchPeriod time.Duration
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the EndpointSlice controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	services corelisters.ServiceLister
	pods     corelisters.PodLister
	slices   discoverylisters.EndpointSliceLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string] // Service keys
	triggers *endpointutil.TriggerTimeTracker
	tracker  *sliceTracker
	rec      *reconciler
	events   record.EventBroadcaster
	recorder record.EventRecorder
	opts     Options
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, fmt.Errorf("%s: client: %w", Component, err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 5
	}
	if opts.MaxEndpointsPerSlice <= 0 {
		opts.MaxEndpointsPerSlice = 100
	}
	factory := sharedinformers.Or(opts.Informers, client)
	c := &Controller{
		log: log.With("controller", Component), client: client, factory: factory, opts: opts,
		services: factory.Core().V1().Services().Lister(),
		pods:     factory.Core().V1().Pods().Lister(),
		slices:   factory.Discovery().V1().EndpointSlices().Lister(),
		// Slower retries than most controllers (1 s rather than 5 ms): a
		// sync may rewrite many slices.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedMaxOfRateLimiter(
				workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 1000*time.Second),
				&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(10, 100)},
			),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint_slice"}),
		triggers: endpointutil.NewTriggerTimeTracker(),
		tracker:  newSliceTracker(),
		events:   record.NewBroadcaster(record.WithContext(context.Background())),
	}
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: eventSource})
	c.rec = &reconciler{client: client, nodes: factory.Core().V1().Nodes().Lister(), maxPerSlice: opts.MaxEndpointsPerSlice, tracker: c.tracker}

	svcInformer := factory.Core().V1().Services().Informer()
	if _, err := svcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.queueService,
		UpdateFunc: func(_, obj any) { c.queueService(obj) },
		DeleteFunc: c.queueService,
	}); err != nil {
		return nil, err
	}
	podInformer := factory.Core().V1().Pods().Informer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.queuePodServices(obj.(*corev1.Pod)) },
		UpdateFunc: func(old, cur any) {
			for _, key := range endpointutil.ServicesToSync(c.services, old.(*corev1.Pod), cur.(*corev1.Pod)) {
				c.queue.AddAfter(key, c.opts.BatchPeriod)
			}
		},
		DeleteFunc: func(obj any) {
			if pod := endpointutil.PodFromDeletion(obj); pod != nil {
				c.queuePodServices(pod)
			}
		},
	}); err != nil {
		return nil, err
	}
	sliceInformer := factory.Discovery().V1().EndpointSlices().Informer()
	if _, err := sliceInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.sliceAdded,
		UpdateFunc: c.sliceUpdated,
		DeleteFunc: c.sliceDeleted,
	}); err != nil {
		return nil, err
	}
	nodeInformer := factory.Core().V1().Nodes().Informer()
	c.synced = []cache.InformerSynced{svcInformer.HasSynced, podInformer.HasSynced, sliceInformer.HasSynced, nodeInformer.HasSynced}
	return c, nil
}

// Run keeps EndpointSlices up to date until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		c.queue.ShutDown()
		return
	}
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) queueService(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

func (c *Controller) queuePodServices(pod *corev1.Pod) {
	keys, err := endpointutil.ServicesForPod(c.services, pod)
	if err != nil {
		return // the lister reads memory: it does not fail
	}
	for _, key := range keys {
		c.queue.AddAfter(key, c.opts.BatchPeriod)
	}
}

// queueSliceService queues the Service of a slice, after a delay that
// batches changes to several slices.
func (c *Controller) queueSliceService(s *discoveryv1.EndpointSlice) {
	if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
		c.queue.AddAfter(s.Namespace+"/"+name, max(sliceChangeDelay, c.opts.BatchPeriod))
	}
}

func managed(s *discoveryv1.EndpointSlice) bool {
	return s.Labels[discoveryv1.LabelManagedBy] == ManagedBy
}

// sliceAdded syncs the Service of a managed slice this controller did not
// just write.
func (c *Controller) sliceAdded(obj any) {
	if s := obj.(*discoveryv1.EndpointSlice); managed(s) && c.tracker.observe(s) {
		c.queueSliceService(s)
	}
}

func (c *Controller) sliceUpdated(oldObj, obj any) {
	old, s := oldObj.(*discoveryv1.EndpointSlice), obj.(*discoveryv1.EndpointSlice)
	if old.Labels[discoveryv1.LabelServiceName] != s.Labels[discoveryv1.LabelServiceName] {
		c.queueSliceService(s)
		c.queueSliceService(old)
		return
	}
	if managed(old) != managed(s) || (managed(s) && c.tracker.observe(s)) {
		c.queueSliceService(s)
	}
}

func (c *Controller) sliceDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok && managed(s) && c.tracker.observeDeletion(s) {
		c.queueSliceService(s)
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	err := c.sync(ctx, key)
	switch {
	case err == nil:
		c.queue.Forget(key)
	case ctx.Err() != nil:
	case c.queue.NumRequeues(key) < maxRetries:
		c.log.Debug("syncing endpoint slices, retrying", "service", key, "err", err)
		c.queue.AddRateLimited(key)
	default:
		c.log.Warn("syncing endpoint slices failed, dropping the service until it changes", "service", key, "err", err)
		c.queue.Forget(key)
	}
	return true
}

// sync brings the slices of the Service at key to what its pods say.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller queued: nothing to retry
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// The garbage collector deletes the slices the Service owned.
		c.triggers.Forget(ns, name)
		c.tracker.forget(key)
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
	listed, err := c.slices.EndpointSlices(ns).List(labels.Set{
		discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: ManagedBy,
	}.AsSelectorPreValidated())
	if err != nil {
		return err
	}
	var existing []*discoveryv1.EndpointSlice
	for _, s := range listed {
		if s.DeletionTimestamp == nil { // a slice being deleted would block the sync
			existing = append(existing, s)
		}
	}
	if c.tracker.stale(key, existing) {
		return errStale
	}
	// Computed before reconciling so that the tracker sees every sync.
	trigger := c.triggers.Compute(svc, pods)
	if err := c.rec.reconcile(ctx, svc, pods, existing, trigger); err != nil {
		if ctx.Err() == nil {
			c.recorder.Eventf(svc, corev1.EventTypeWarning, "FailedToUpdateEndpointSlices",
				"Error updating Endpoint Slices for Service %s: %v", key, err)
		}
		return err
	}
	return nil
}
