// Package statefulset is upstream's StatefulSet controller
// (kube-controller-manager 1.33, "statefulset-controller"): pods named
// <set>-<ordinal> from spec.ordinals.start, each with its claims
// <template>-<set>-<ordinal> created first, hostname and subdomain, and the
// pod-name, pod-index and controller-revision-hash labels. OrderedReady
// creates one pod per sync once its predecessors are Running, Ready and
// available for minReadySeconds, and deletes from the highest ordinal down;
// Parallel works in slow-start bursts. Failed or Succeeded pods are deleted,
// and created again once gone (upstream dropped the RecreatingFailedPod
// event for this in 1.30, kubernetes#123809).
//
// Updates follow ControllerRevisions in upstream's format (so kubectl
// rollout history/undo/status work): RollingUpdate deletes outdated pods
// from the highest ordinal down to the partition, and OnDelete waits for
// the user to delete them. The MaxUnavailableStatefulSet feature gate is
// taken as on: up to rollingUpdate.maxUnavailable pods in range may be
// unhealthy during a rolling update (default 1, which is the gate-off
// behaviour). persistentVolumeClaimRetentionPolicy is applied as ownerRefs
// on the claims; the garbage collector deletes them.
//
// Pods and revisions are adopted and released by selector with upstream's
// ControllerRefManager rules (package history).
//
// Beyond upstream: a set waits for minReadySeconds only as long as needed
// (upstream requeues after the full period), and a deleted claim wakes its
// set (upstream waits for the informer resync, 12 h or more, before a pod
// blocked on a stale claim is created).
package statefulset

import (
	"context"
	"log/slog"
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
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/history"

	"github.com/moorage/moorage/internal/controller/sharedinformers"

	"github.com/moorage/moorage/internal/controller/queue"
)

// Component is the event source, as upstream names it.
const Component = "statefulset-controller"

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Workers sync sets concurrently (--concurrent-statefulset-syncs, 5).
	Workers int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the StatefulSet controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	events   record.EventBroadcaster
	recorder record.EventRecorder

	sets    appslisters.StatefulSetLister
	pods    corelisters.PodLister
	claims  corelisters.PersistentVolumeClaimLister
	history history.Store
	synced  []cache.InformerSynced

	queue   workqueue.TypedRateLimitingInterface[string]
	workers int
	now     func() time.Time
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
	factory := sharedinformers.Or(opts.Informers, client)
	sets := factory.Apps().V1().StatefulSets()
	pods := factory.Core().V1().Pods()
	claims := factory.Core().V1().PersistentVolumeClaims()
	revisions := factory.Apps().V1().ControllerRevisions()
	c := &Controller{
		log:     log.With("controller", Component),
		client:  client,
		factory: factory,
		events:  record.NewBroadcaster(record.WithContext(context.Background())),
		sets:    sets.Lister(),
		pods:    pods.Lister(),
		claims:  claims.Lister(),
		history: history.Store{Client: client, Lister: revisions.Lister()},
		synced: []cache.InformerSynced{sets.Informer().HasSynced, pods.Informer().HasSynced,
			claims.Informer().HasSynced, revisions.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "statefulset"}),
		workers: opts.Workers,
		now:     time.Now,
	}
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	if _, err := sets.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	}); err != nil {
		return nil, err
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podAdded,
		UpdateFunc: c.podUpdated,
		DeleteFunc: c.podDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.claimDeleted}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run syncs sets until ctx is done.
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
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) syncFailed(key string, err error) {
	c.log.Debug("sync failed; retrying", "statefulset", key, "err", err)
}

func (c *Controller) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

// sync adopts the set's orphaned revisions and claims its pods, then
// reconciles them (upstream's sync and syncStatefulSet).
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	set, err := c.sets.StatefulSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	selector, err := selectorOf(set)
	if err != nil {
		c.log.Warn("invalid selector", "statefulset", key, "err", err)
		return nil
	}
	claimer := &history.Claimer{Client: c.client, Owner: set, Kind: setKind, Selector: selector, CanAdopt: c.canAdopt(set)}
	if err := c.adoptOrphanRevisions(ctx, set, selector, claimer); err != nil {
		return err
	}
	all, err := c.pods.Pods(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	pods, err := claimer.ClaimPods(ctx, all, func(pod *corev1.Pod) bool { return isMember(set, pod) })
	if err != nil {
		return err
	}
	pass := &syncPass{c: c, now: c.now()}
	status, err := pass.update(ctx, set, pods)
	if err != nil {
		return err
	}
	if after, ok := c.availabilityRecheck(set, status, pods, pass.now); ok {
		c.queue.AddAfter(key, after)
	}
	return nil
}

// adoptOrphanRevisions adopts the selected revisions nobody controls.
func (c *Controller) adoptOrphanRevisions(ctx context.Context, set *appsv1.StatefulSet, selector labels.Selector, claimer *history.Claimer) error {
	revisions, err := c.history.ListOwned(set, selector)
	if err != nil {
		return err
	}
	var orphans []*appsv1.ControllerRevision
	for _, r := range revisions {
		if metav1.GetControllerOfNoCopy(r) == nil {
			orphans = append(orphans, r)
		}
	}
	return claimer.AdoptRevisions(ctx, orphans)
}

// canAdopt refuses adoption when a live read shows the set gone, replaced
// or being deleted.
func (c *Controller) canAdopt(set *appsv1.StatefulSet) func(context.Context) error {
	return history.OwnerNotDeleted(set, func(ctx context.Context) (metav1.Object, error) {
		return c.client.AppsV1().StatefulSets(set.Namespace).Get(ctx, set.Name, metav1.GetOptions{})
	})
}

// availabilityRecheck says when to sync again for pods that are Ready but
// not yet available for minReadySeconds: when the first of them becomes
// available; or after minReadySeconds, as upstream, if pods are missing.
func (c *Controller) availabilityRecheck(set *appsv1.StatefulSet, status *appsv1.StatefulSetStatus, pods []*corev1.Pod, now time.Time) (time.Duration, bool) {
	minReady := time.Duration(set.Spec.MinReadySeconds) * time.Second
	if minReady == 0 || status == nil || status.AvailableReplicas == *set.Spec.Replicas {
		return 0, false
	}
	soonest := minReady
	for _, pod := range pods {
		if !runningAndReady(pod) || available(pod, set.Spec.MinReadySeconds, now) {
			continue
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && !cond.LastTransitionTime.IsZero() {
				// Available strictly after readiness + minReadySeconds.
				soonest = min(soonest, max(cond.LastTransitionTime.Add(minReady).Sub(now)+10*time.Millisecond, 0))
			}
		}
	}
	return soonest, true
}

func selectorOf(set *appsv1.StatefulSet) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(set.Spec.Selector)
}
