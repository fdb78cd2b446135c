// Package daemonset is upstream's DaemonSet controller (kube-controller-manager
// 1.33, "daemonset-controller"): one pod per eligible node. A node is
// eligible when the template's nodeName, nodeSelector and required node
// affinity match it and its NoSchedule and NoExecute taints are tolerated,
// counting the tolerations every daemon pod gets (not-ready and unreachable
// NoExecute; disk-, memory- and pid-pressure and unschedulable NoSchedule;
// network-unavailable for hostNetwork pods); a pod may stay on a node whose
// only untolerated taints are NoSchedule. Pods are created with the node
// affinity metadata.name In [node] and left to the scheduler.
//
// Each template is recorded in a ControllerRevision (the pods carry its
// controller-revision-hash), so kubectl rollout history/undo/status work.
// RollingUpdate replaces pods within maxUnavailable, or maxSurge extra pods;
// OnDelete replaces pods only when they are deleted. Failed pods are
// deleted with a per-node back-off, succeeded ones at once. Pods get the
// pod-template-generation label only when the API server sets the daemon
// set's deprecated.daemonset.template.generation annotation.
package daemonset

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/history"

	"github.com/moorage/moorage/internal/controller/sharedinformers"

	"github.com/moorage/moorage/internal/controller/queue"
)

// Component is the event source, as upstream names it.
const Component = "daemonset-controller"

var dsKind = appsv1.SchemeGroupVersion.WithKind("DaemonSet")

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Workers sync daemon sets concurrently (--concurrent-daemonset-syncs, 2).
	Workers int
	// FailedPodBackoff and FailedPodMaxBackoff bound the back-off between
	// deletions of failed pods on one node (1 s doubling to 15 min).
	FailedPodBackoff, FailedPodMaxBackoff time.Duration
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the DaemonSet controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	events   record.EventBroadcaster
	recorder record.EventRecorder

	daemonSets appslisters.DaemonSetLister
	revisions  appslisters.ControllerRevisionLister
	pods       corelisters.PodLister
	nodes      corelisters.NodeLister
	synced     []cache.InformerSynced

	queue         workqueue.TypedRateLimitingInterface[string]
	expectations  *expectations
	failedBackoff *flowcontrol.Backoff
	workers       int
	now           func() time.Time
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.FailedPodBackoff == 0 {
		opts.FailedPodBackoff = time.Second
	}
	if opts.FailedPodMaxBackoff == 0 {
		opts.FailedPodMaxBackoff = 15 * time.Minute
	}
	factory := sharedinformers.Or(opts.Informers, client)
	daemonSets := factory.Apps().V1().DaemonSets()
	revisions := factory.Apps().V1().ControllerRevisions()
	pods := factory.Core().V1().Pods()
	nodes := factory.Core().V1().Nodes()
	c := &Controller{
		log:        log.With("controller", Component),
		client:     client,
		factory:    factory,
		events:     record.NewBroadcaster(record.WithContext(context.Background())),
		daemonSets: daemonSets.Lister(),
		revisions:  revisions.Lister(),
		pods:       pods.Lister(),
		nodes:      nodes.Lister(),
		synced: []cache.InformerSynced{daemonSets.Informer().HasSynced, revisions.Informer().HasSynced,
			pods.Informer().HasSynced, nodes.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "daemonset"}),
		expectations:  newExpectations(time.Now),
		failedBackoff: flowcontrol.NewBackOff(opts.FailedPodBackoff, opts.FailedPodMaxBackoff),
		workers:       opts.Workers,
		now:           time.Now,
	}
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	for _, h := range []struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{daemonSets.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.daemonSetAdded, UpdateFunc: c.daemonSetUpdated, DeleteFunc: c.daemonSetDeleted}},
		{revisions.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.revisionAdded, UpdateFunc: c.revisionUpdated, DeleteFunc: c.revisionDeleted}},
		{pods.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.podAdded, UpdateFunc: c.podUpdated, DeleteFunc: c.podDeleted}},
		{nodes.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.nodeAdded, UpdateFunc: c.nodeUpdated}},
	} {
		if _, err := h.informer.AddEventHandler(h.handler); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run syncs daemon sets until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() { queue.Work(ctx, c.queue, c.sync, c.syncFailed) })
	}
	wg.Go(func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.failedBackoff.GC()
			}
		}
	})
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) syncFailed(key string, err error) {
	c.log.Debug("sync failed; retrying", "daemonset", key, "err", err)
}

func keyOf(ds *appsv1.DaemonSet) string { return ds.Namespace + "/" + ds.Name }

func (c *Controller) enqueue(ds *appsv1.DaemonSet) { c.queue.Add(keyOf(ds)) }

func (c *Controller) enqueueAfter(ds *appsv1.DaemonSet, after time.Duration) {
	c.queue.AddAfter(keyOf(ds), after)
}

// sync is upstream's syncDaemonSet: revisions first, then, once earlier
// creations and deletions have been observed, pods and the rolling update,
// then the status.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	ds, err := c.daemonSets.DaemonSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.expectations.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	if reflect.DeepEqual(ds.Spec.Selector, &metav1.LabelSelector{}) {
		c.recorder.Eventf(ds, corev1.EventTypeWarning, "SelectingAll", "This daemon set is selecting all pods. A non-empty selector is required.")
		return nil
	}
	// A daemon set being deleted may have lost its revisions already: its
	// status cannot be computed reliably.
	if ds.DeletionTimestamp != nil {
		return nil
	}
	cur, old, err := c.constructHistory(ctx, ds)
	if err != nil {
		return fmt.Errorf("failed to construct revisions of DaemonSet: %w", err)
	}
	hash := cur.Labels[hashLabel]
	if !c.expectations.satisfied(key) {
		return c.updateStatus(ctx, ds, nodes, hash, false)
	}
	err = c.update(ctx, ds, nodes, hash, key, old)
	statusErr := c.updateStatus(ctx, ds, nodes, hash, true)
	if err != nil {
		if statusErr != nil {
			c.log.Warn("failed to update status", "daemonset", key, "err", statusErr)
		}
		return err
	}
	return statusErr
}

// update manages pods, runs the rolling update and trims the history.
func (c *Controller) update(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash, key string, old []*appsv1.ControllerRevision) error {
	if err := c.manage(ctx, ds, nodes, hash); err != nil {
		return err
	}
	if c.expectations.satisfied(key) && ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if err := c.rollingUpdate(ctx, ds, nodes, hash); err != nil {
			return err
		}
	}
	if err := c.cleanupHistory(ctx, ds, old); err != nil {
		return fmt.Errorf("failed to clean up revisions of DaemonSet: %w", err)
	}
	return nil
}

// claimer adopts and releases the daemon set's pods and revisions.
func (c *Controller) claimer(ds *appsv1.DaemonSet, selector labels.Selector) *history.Claimer {
	return &history.Claimer{
		Client: c.client, Owner: ds, Kind: dsKind, Selector: selector,
		CanAdopt: history.OwnerNotDeleted(ds, func(ctx context.Context) (metav1.Object, error) {
			return c.client.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
		}),
	}
}
