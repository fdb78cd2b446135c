// Package endpoints is upstream's Endpoints controller (endpoint-controller
// in kube-controller-manager). For every Service with a selector, except
// ExternalName ones, it keeps a core/v1 Endpoints object of the same name
// listing the selected pods that have an IP of the Service's first IP
// family and have not terminated:
//
//   - ready pods, and every pod when the Service publishes not-ready
//     addresses, under addresses; the others under notReadyAddresses. A pod
//     being deleted is left out, unless the Service publishes not-ready
//     addresses (then it stays ready);
//   - each address carries the pod's IP, node and a targetRef to the pod,
//     and its hostname when the pod names the Service as its subdomain;
//   - a Service port whose targetPort names no port of the pod (same
//     protocol) is left out for that pod; a headless Service without ports
//     gets subsets without ports;
//   - subsets are packed canonically: addresses sharing the same ports form
//     one subset;
//   - beyond 1000 addresses the object is truncated (ready ones kept first)
//     and annotated endpoints.kubernetes.io/over-capacity=truncated;
//   - labels are the Service's, plus service.kubernetes.io/headless for a
//     headless Service; endpoints.kubernetes.io/last-change-trigger-time
//     records the earliest change the write publishes.
//
// The Endpoints object is deleted with its Service, and Endpoints left
// without a Service are deleted at start-up (those holding a leader
// election record excepted). As upstream, a Service that loses its
// selector keeps its Endpoints as they are: selector-less Services get
// theirs from whoever manages them by hand.
package endpoints

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/endpointslice/endpointutil"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controller, as upstream.
const Component = "endpoint-controller"

const (
	// MaxCapacity is the most addresses an Endpoints object holds.
	MaxCapacity = 1000
	// OverCapacityTruncated is the value of the over-capacity annotation.
	OverCapacityTruncated = "truncated"
	// leaderAnnotation marks Endpoints used for leader election, which
	// have no Service and are not cleaned up.
	leaderAnnotation = "control-plane.alpha.kubernetes.io/leader"
	// maxRetries is how often a failing Service is retried (with upstream's
	// rate limiter, 5 ms doubling) before it waits for the next change.
	maxRetries = 15
)

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Workers is how many Services are synced at once
	// (--concurrent-endpoint-syncs, 5).
	Workers int
	// BatchPeriod delays the syncs that pod changes cause, to publish
	// several changes in one write (--endpoint-updates-batch-period, 0).
	BatchPeriod time.Duration
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the Endpoints controller.
type Controller struct {
	log       *slog.Logger
	client    kubernetes.Interface
	factory   informers.SharedInformerFactory
	services  corelisters.ServiceLister
	pods      corelisters.PodLister
	endpoints corelisters.EndpointsLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string] // Service keys
	triggers  *endpointutil.TriggerTimeTracker
	stale     staleTracker
	events    record.EventBroadcaster
	recorder  record.EventRecorder
	opts      Options
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), Component)
	// core/v1 Endpoints are deprecated in favour of EndpointSlices; the
	// warning is for people.
	cfg.WarningHandler = rest.NoWarnings{}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: client: %w", Component, err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 5
	}
	factory := sharedinformers.Or(opts.Informers, client)
	c := &Controller{
		log: log.With("controller", Component), client: client, factory: factory, opts: opts,
		services:  factory.Core().V1().Services().Lister(),
		pods:      factory.Core().V1().Pods().Lister(),
		endpoints: factory.Core().V1().Endpoints().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint"}),
		triggers: endpointutil.NewTriggerTimeTracker(),
		stale:    staleTracker{replaced: map[string]string{}},
		events:   record.NewBroadcaster(record.WithContext(context.Background())),
	}
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

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
	epInformer := factory.Core().V1().Endpoints().Informer()
	if _, err := epInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.queueService}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{svcInformer.HasSynced, podInformer.HasSynced, epInformer.HasSynced}
	return c, nil
}

// Run keeps Endpoints up to date until ctx is done.
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
	c.queueLeftovers()
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

// queueService queues the key of a Service or Endpoints object (or of
// their tombstone).
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

// queueLeftovers queues every Endpoints object once, so that those whose
// Service went while the controller was down are deleted.
func (c *Controller) queueLeftovers() {
	list, err := c.endpoints.List(labels.Everything())
	if err != nil {
		return
	}
	for _, ep := range list {
		if _, ok := ep.Annotations[leaderAnnotation]; !ok {
			c.queue.Add(ep.Namespace + "/" + ep.Name)
		}
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
		c.log.Debug("syncing endpoints, retrying", "service", key, "err", err)
		c.queue.AddRateLimited(key)
	default:
		c.log.Warn("syncing endpoints failed, dropping the service until it changes", "service", key, "err", err)
		c.queue.Forget(key)
	}
	return true
}
