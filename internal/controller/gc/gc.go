// Package gc is moorage's garbage collector, with the semantics of
// kube-controller-manager's: objects whose owners (metadata.ownerReferences)
// are all gone are deleted; owners deleted with the "orphan" finalizer have
// their dependents' references to them removed first; owners deleted with
// "foregroundDeletion" stay until their blocking dependents are deleted.
//
// Design. Metadata informers on every served resource (events excepted)
// feed one dependency graph, uid → node{identity, owners, dependents}. A
// node is virtual while it is known only from a dependent's reference.
// Graph changes put uids on two rate-limited work queues: attemptToDelete
// (dependents that may have lost their owners, virtual nodes to verify,
// owners waiting for their dependents) and attemptToOrphan (owners deleted
// with "orphan"). Workers decide what to look at from the graph, and act on
// live state only.
//
// Invariant: nothing is deleted on the graph's word. A delete follows live
// GETs of the object and of each of its owners (absent: not found, or found
// with another uid) and carries the object's uid and resourceVersion as
// preconditions; a patch of ownerReferences names the dependent's uid. A
// lagging cache or a re-created object therefore never causes a wrong delete.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/registry"
)

// initialSyncTimeout bounds the wait for the informers' first lists.
const initialSyncTimeout = 30 * time.Second

// Options tune the collector.
type Options struct {
	// Workers per queue; 0 means 5.
	Workers int
}

// Controller is the garbage collector.
type Controller struct {
	log       *slog.Logger
	meta      metadata.Interface
	byKind    map[schema.GroupKind]*registry.Resource
	reg       *registry.Registry
	graph     *graph
	absent    *absentCache
	informers metadatainformer.SharedInformerFactory
	sink      record.EventSink
	recorder  record.EventRecorder // set by Run
	workers   int

	attemptToDelete workqueue.TypedRateLimitingInterface[types.UID]
	attemptToOrphan workqueue.TypedRateLimitingInterface[types.UID]
}

// ignored tells the resources the collector does not watch, as upstream.
func ignored(gr schema.GroupResource) bool {
	return gr.Resource == "events" && (gr.Group == "" || gr.Group == "events.k8s.io")
}

// New builds a collector for the resources of reg, talking to the API at cfg.
func New(cfg *rest.Config, reg *registry.Registry, log *slog.Logger, opts Options) (*Controller, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "generic-garbage-collector")
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("garbage collector: metadata client: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("garbage collector: client: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 5
	}
	c := &Controller{
		log:       log.With("controller", "garbagecollector"),
		meta:      meta,
		reg:       reg,
		byKind:    map[schema.GroupKind]*registry.Resource{},
		absent:    &absentCache{},
		informers: metadatainformer.NewSharedInformerFactoryWithOptions(meta, 0, metadatainformer.WithTransform(trim)),
		workers:   opts.Workers,
		attemptToDelete: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.UID](),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "garbage_collector_attempt_to_delete"}),
		attemptToOrphan: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.UID](),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "garbage_collector_attempt_to_orphan"}),
	}
	c.sink = &typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")}
	c.graph = &graph{
		nodes:            map[types.UID]*node{},
		clusterScoped:    c.clusterScoped,
		toDelete:         c.attemptToDelete.Add,
		toRecheck:        c.attemptToDelete.AddRateLimited,
		toOrphan:         c.attemptToOrphan.Add,
		absent:           c.absent,
		invalidNamespace: c.reportInvalidNamespace,
	}
	for _, r := range reg.All() {
		gk := r.GVK.GroupKind()
		if _, dup := c.byKind[gk]; !dup {
			c.byKind[gk] = r
		}
		if ignored(r.GroupResource()) {
			continue
		}
		if _, err := c.informers.ForResource(r.GVR()).Informer().AddEventHandler(c.handler(r.GVK)); err != nil {
			return nil, fmt.Errorf("garbage collector: watching %s: %w", r.GVR(), err)
		}
	}
	return c, nil
}

// Run collects garbage until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	events := record.NewBroadcaster()
	events.StartRecordingToSink(c.sink)
	defer events.Shutdown()
	c.recorder = events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "garbage-collector-controller"})
	c.informers.Start(ctx.Done())
	defer c.informers.Shutdown()
	// As upstream, collect even if some resource cannot be listed: the
	// graph only triggers work, live state decides.
	syncCtx, cancel := context.WithTimeout(ctx, initialSyncTimeout)
	for gvr, ok := range c.informers.WaitForCacheSync(syncCtx.Done()) {
		if !ok && ctx.Err() == nil {
			c.log.Warn("resource not synced, proceeding anyway", "resource", gvr)
		}
	}
	cancel()

	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() { run(ctx, c.attemptToDelete, c.attemptToDeleteItem, c.log) })
		wg.Go(func() { run(ctx, c.attemptToOrphan, c.attemptToOrphanItem, c.log) })
	}
	<-ctx.Done()
	c.attemptToDelete.ShutDown()
	c.attemptToOrphan.ShutDown()
	wg.Wait()
}

// run works on q until it shuts down: an item whose processing fails is
// retried with back-off.
func run(ctx context.Context, q workqueue.TypedRateLimitingInterface[types.UID], process func(context.Context, types.UID) error, log *slog.Logger) {
	for {
		uid, quit := q.Get()
		if quit {
			return
		}
		err := process(ctx, uid)
		switch {
		case err == nil || errors.Is(err, errClusterScopedWithNamespacedOwner):
			q.Forget(uid)
		case errors.Is(err, errNotObserved):
			q.AddRateLimited(uid)
		default:
			if ctx.Err() == nil {
				log.Debug("retrying", "uid", uid, "err", err)
			}
			q.AddRateLimited(uid)
		}
		q.Done(uid)
	}
}

// handler feeds the graph with one resource's informer events.
func (c *Controller) handler(gvk schema.GroupVersionKind) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
				c.graph.observe(gvk, nil, m)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*metav1.PartialObjectMetadata)
			m, ok2 := obj.(*metav1.PartialObjectMetadata)
			if ok1 && ok2 {
				c.graph.observe(gvk, o, m)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
				c.graph.deleted(m.UID)
			}
		},
	}
}

// resourceFor maps an apiVersion and kind to the served resource, by group
// and kind when the version is not served (as upstream's REST mapper).
func (c *Controller) resourceFor(apiVersion, kind string) (*registry.Resource, error) {
	gvk := schema.FromAPIVersionAndKind(apiVersion, kind)
	if r, ok := c.reg.ForKind(gvk); ok {
		return r, nil
	}
	if r, ok := c.byKind[gvk.GroupKind()]; ok {
		return r, nil
	}
	return nil, fmt.Errorf("unable to get REST mapping for kind: %s, version: %s", kind, apiVersion)
}

func (c *Controller) clusterScoped(apiVersion, kind string) bool {
	r, err := c.resourceFor(apiVersion, kind)
	return err == nil && !r.Namespaced
}

// reportInvalidNamespace records upstream's warning event on a dependent
// whose owner reference names an object of another namespace.
func (c *Controller) reportInvalidNamespace(dep objectRef, owner metav1.OwnerReference) {
	ref := &corev1.ObjectReference{Kind: dep.Kind, APIVersion: dep.APIVersion, Namespace: dep.Namespace, Name: dep.Name, UID: dep.UID}
	invalid := objectRef{APIVersion: owner.APIVersion, Kind: owner.Kind, Namespace: dep.Namespace, Name: owner.Name, UID: owner.UID}
	c.recorder.Eventf(ref, corev1.EventTypeWarning, "OwnerRefInvalidNamespace", "ownerRef %s does not exist in namespace %q", invalid, dep.Namespace)
}

// trim keeps in the informers' caches only the metadata the graph uses.
func trim(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.ManagedFields, m.Annotations, m.Labels = nil, nil, nil
	}
	return obj, nil
}
