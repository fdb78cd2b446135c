// Package deployment is upstream's Deployment controller
// (deployment-controller). A Deployment owns ReplicaSets, one per pod
// template it has had, and the ReplicaSet controller owns the pods.
//
// The ReplicaSet of the current template (the "new" one) is named
// "<deployment>-<hash>", the hash being upstream's (hash.go) and also the
// value of its pod-template-hash label and selector. Every ReplicaSet
// carries the deployment.kubernetes.io/revision annotation (the new one
// the highest, 1 + the highest of the others), which kubectl rollout
// history and undo read; undo puts an old template back in the Deployment,
// and the ReplicaSet of that template becomes the new one again.
//
// A sync, in upstream's order:
//
//   - claims ReplicaSets by selector and controllerRef, as pods are claimed;
//   - moves the Progressing condition to DeploymentPaused/DeploymentResumed
//     when spec.paused changes;
//   - if paused, or if only spec.replicas changed (a ReplicaSet's
//     desired-replicas annotation differs), scales the ReplicaSets in
//     proportion and stops there: no rollout;
//   - else rolls out: RollingUpdate within maxSurge and maxUnavailable,
//     or Recreate (all old pods gone before the new ones are created);
//   - once complete, deletes old ReplicaSets beyond revisionHistoryLimit;
//   - writes status and the Progressing and Available conditions, and
//     times the rollout out after progressDeadlineSeconds without progress.
package deployment

import (
	"context"
	"log/slog"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controller in events, as upstream.
const Component = "deployment-controller"

// maxRetries is how many times a Deployment is retried before it is
// dropped from the queue until its next change.
const maxRetries = 15

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Workers syncing Deployments concurrently
	// (--concurrent-deployment-syncs, 5).
	Workers int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller rolls Deployments out through their ReplicaSets.
type Controller struct {
	log         *slog.Logger
	client      kubernetes.Interface
	opts        Options
	factory     informers.SharedInformerFactory
	deployments appslisters.DeploymentLister
	rss         appslisters.ReplicaSetLister
	pods        corelisters.PodLister
	synced      []cache.InformerSynced

	queue    workqueue.TypedRateLimitingInterface[string]
	events   record.EventBroadcaster
	recorder record.EventRecorder
	now      func() time.Time
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if log == nil {
		log = slog.Default()
	}
	factory := sharedinformers.Or(opts.Informers, client)
	dInformer := factory.Apps().V1().Deployments()
	rsInformer := factory.Apps().V1().ReplicaSets()
	podInformer := factory.Core().V1().Pods()
	c := &Controller{
		log: log.With("controller", Component), client: client, opts: opts, factory: factory,
		deployments: dInformer.Lister(), rss: rsInformer.Lister(), pods: podInformer.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "deployment"}),
		now: time.Now,
	}
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	if _, err := dInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueObject,
		UpdateFunc: func(_, cur any) { c.enqueueObject(cur) },
		DeleteFunc: c.enqueueObject,
	}); err != nil {
		return nil, err
	}
	if _, err := rsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.replicaSetAdded,
		UpdateFunc: c.replicaSetUpdated,
		DeleteFunc: c.replicaSetDeleted,
	}); err != nil {
		return nil, err
	}
	// Pods matter only to Recreate, which waits for the old ones to go.
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.podDeleted}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{dInformer.Informer().HasSynced, rsInformer.Informer().HasSynced, podInformer.Informer().HasSynced}
	return c, nil
}

// Run syncs Deployments until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	for range c.opts.Workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	err := c.sync(ctx, key)
	switch {
	case err == nil || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		c.queue.Forget(key)
	case c.queue.NumRequeues(key) < maxRetries:
		if ctx.Err() == nil && !apierrors.IsConflict(err) {
			c.log.Debug("syncing deployment", "key", key, "err", err)
		}
		c.queue.AddRateLimited(key)
	default:
		c.log.Warn("dropping deployment out of the queue", "key", key, "err", err)
		c.queue.Forget(key)
	}
	return true
}

func (c *Controller) enqueue(d *appsv1.Deployment) { c.queue.Add(d.Namespace + "/" + d.Name) }

func (c *Controller) enqueueAfter(d *appsv1.Deployment, after time.Duration) {
	c.queue.AddAfter(d.Namespace+"/"+d.Name, after)
}

func (c *Controller) enqueueObject(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if d, ok := obj.(*appsv1.Deployment); ok {
		c.enqueue(d)
	}
}
