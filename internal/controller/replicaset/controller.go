// Package replicaset is upstream's ReplicaSet controller
// (replicaset-controller). The same code runs ReplicationControllers
// (replication-controller), as upstream does: the controller sees an RC as
// the ReplicaSet it converts to, its label map as a matchLabels selector.
//
// A sync of an owner (a ReplicaSet or an RC):
//
//   - claims the active pods of its namespace: it adopts orphans its
//     selector matches and releases its own pods that no longer match;
//   - creates missing pods, named "<owner>-" plus a random suffix, in
//     slow-start batches of 1, 2, 4, ... that stop at the first error;
//   - deletes surplus pods, the least valuable first (ranking.go);
//   - creates or deletes at most BurstReplicas pods a sync, and waits for
//     the informer to see them (expectations.go) before it acts again, so
//     that it never creates or deletes twice;
//   - writes the status: replicas, fullyLabeledReplicas, readyReplicas,
//     availableReplicas (ready for minReadySeconds), observedGeneration and
//     the ReplicaFailure condition while creating or deleting fails.
//
// Events on the owner use upstream's reasons and text: SuccessfulCreate
// "Created pod: web-abcde", SuccessfulDelete "Deleted pod: web-abcde",
// FailedCreate "Error creating: ...", FailedDelete "Error deleting: ...".
package replicaset

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controllers in events, as upstream.
const (
	Component            = "replicaset-controller"
	ReplicationComponent = "replication-controller"
)

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Workers syncing owners concurrently (--concurrent-replicaset-syncs
	// and --concurrent-rc-syncs, 5).
	Workers int
	// BurstReplicas bounds the pods one sync creates or deletes (500).
	BurstReplicas int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller keeps the pods of ReplicaSets, or of ReplicationControllers,
// at their replica counts.
type Controller struct {
	log     *slog.Logger
	client  kubernetes.Interface
	opts    Options
	kind    *kind
	factory informers.SharedInformerFactory
	pods    corelisters.PodLister
	// podIndex finds pods by podsByController: an owner's own pods and
	// its namespace's orphans, without walking the namespace.
	podIndex cache.Indexer
	synced   []cache.InformerSynced

	queue        workqueue.TypedRateLimitingInterface[string] // owner keys
	expectations *expectations
	events       record.EventBroadcaster
	recorder     record.EventRecorder
	now          func() time.Time
}

// New builds the ReplicaSet controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	return newController(cfg, log, opts, Component, replicaSets)
}

// NewForReplicationControllers builds the ReplicationController controller
// (upstream's replication manager) on a client of the API.
func NewForReplicationControllers(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	return newController(cfg, log, opts, ReplicationComponent, replicationControllers)
}

func newController(cfg *rest.Config, log *slog.Logger, opts Options, component string, newKind func(kubernetes.Interface, informers.SharedInformerFactory) *kind) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), component))
	if err != nil {
		return nil, err
	}
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if opts.BurstReplicas == 0 {
		opts.BurstReplicas = 500
	}
	if log == nil {
		log = slog.Default()
	}
	factory := sharedinformers.Or(opts.Informers, client)
	k := newKind(client, factory)
	c := &Controller{
		log: log.With("controller", component), client: client, opts: opts, kind: k, factory: factory,
		pods: factory.Core().V1().Pods().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: k.queueName}),
		expectations: newExpectations(),
		now:          time.Now,
	}
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component})

	podInformer := factory.Core().V1().Pods().Informer()
	// The ReplicaSet and ReplicationController controllers share one pod
	// informer: the first adds the index.
	if _, ok := podInformer.GetIndexer().GetIndexers()[podsByController]; !ok {
		if err := podInformer.AddIndexers(cache.Indexers{podsByController: indexPodByController}); err != nil {
			return nil, err
		}
	}
	c.podIndex = podInformer.GetIndexer()
	if err := k.informer.AddIndexers(cache.Indexers{byControllerUID: indexByControllerUID}); err != nil {
		return nil, err
	}
	if _, err := k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.ownerAdded,
		UpdateFunc: c.ownerUpdated,
		DeleteFunc: c.ownerDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podAdded,
		UpdateFunc: c.podUpdated,
		DeleteFunc: c.podDeleted,
	}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{k.informer.HasSynced, podInformer.HasSynced}
	return c, nil
}

// Run syncs owners until ctx is done.
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

// processNext syncs one owner; it returns false once the queue shuts down.
// As upstream, a failed sync is retried with the rate limiter, forever.
func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		switch {
		case ctx.Err() != nil:
		case apierrors.IsConflict(err): // a stale cache; the retry reads the update
			c.log.Debug("syncing", "kind", c.kind.gvk.Kind, "key", key, "err", err)
		default:
			c.log.Warn("syncing", "kind", c.kind.gvk.Kind, "key", key, "err", err)
		}
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *Controller) enqueue(rs objectKey) {
	c.queue.Add(keyOf(rs))
}

// objectKey is the part of an object its queue key is made of.
type objectKey interface {
	GetNamespace() string
	GetName() string
}

func keyOf(o objectKey) string {
	return fmt.Sprintf("%s/%s", o.GetNamespace(), o.GetName())
}
