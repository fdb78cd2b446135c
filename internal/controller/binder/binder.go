// Package binder is the PersistentVolume controller: it binds claims to
// volumes, keeps both sides' phases, and reclaims released volumes, with
// upstream Kubernetes' semantics (kube-controller-manager's
// persistentvolume-controller): the same annotations, phases, events and
// reasons, and the same order of writes.
//
// Design: the invariant is upstream's bi-directional pointer. A claim is Bound
// to a volume exactly when pv.spec.claimRef names the claim (with its uid) and
// claim.spec.volumeName names the volume. Binding writes the volume first
// (claimRef, then phase) and the claim second (volumeName and annotations,
// then phase and capacity), so that after a crash between any two writes the
// next sync finds a volume pre-bound to the claim and finishes the bind; no
// step ever points a claim at a volume that does not point back, so a volume
// is never bound twice. Every write is a compare-and-swap on resourceVersion:
// two workers racing for one volume cannot both win, the loser retries.
//
// Unlike upstream, claims are matched through an index (package pvmatch) and
// synced by several workers: a volume chosen by one worker is "assumed" until
// its bind is written or fails, so others skip it.
package binder

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/pvmatch"

	"github.com/moorage/moorage/internal/controller/sharedinformers"

	"github.com/moorage/moorage/internal/controller/queue"
)

// Component is the event source, as upstream names it.
const Component = "persistentvolume-controller"

// Options tune the controller; the zero value is upstream's behaviour with
// moorage's defaults.
type Options struct {
	// Workers per queue (claims, volumes); 0 means 8.
	Workers int
	// Resync is how often every claim and volume is synced again (upstream's
	// --pvclaimbinder-sync-period); 0 means 15 s.
	Resync time.Duration
	// Reclaimer deletes and scrubs volume backends; nil means the local one
	// (hostPath and local volumes on this machine).
	Reclaimer Reclaimer
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the PersistentVolume controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	recorder record.EventRecorder
	events   record.EventBroadcaster

	pvLister    corelisters.PersistentVolumeLister
	claimLister corelisters.PersistentVolumeClaimLister
	classLister storagelisters.StorageClassLister
	podLister   corelisters.PodLister
	nodeLister  corelisters.NodeLister
	synced      []cache.InformerSynced

	claims  workqueue.TypedRateLimitingInterface[string]
	volumes workqueue.TypedRateLimitingInterface[string]
	workers int
	resync  time.Duration
	reclaim Reclaimer

	// index holds the latest known volumes for matching.
	index *pvmatch.Index
	// latest keeps the newest version of each object this controller has seen,
	// from the informers or from its own writes (informers may lag behind
	// them), as upstream's storeObjectUpdate does.
	latest *latestCache

	mu      sync.Mutex
	assumed map[string]string // volume name -> claim key being bound to it
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), Component)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if opts.Workers == 0 {
		opts.Workers = 8
	}
	if opts.Resync == 0 {
		opts.Resync = 15 * time.Second
	}
	if opts.Reclaimer == nil {
		opts.Reclaimer = LocalReclaimer{}
	}
	factory := sharedinformers.Or(opts.Informers, client)
	c := &Controller{
		log:     log.With("controller", Component),
		client:  client,
		factory: factory,
		// Per-item back-off only (5 ms doubling to 30 s): no overall rate
		// limit, which would throttle a storm of binds to a trickle.
		claims:  workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, 30*time.Second), workqueue.TypedRateLimitingQueueConfig[string]{Name: "claims"}),
		volumes: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, 30*time.Second), workqueue.TypedRateLimitingQueueConfig[string]{Name: "volumes"}),
		workers: opts.Workers,
		resync:  opts.Resync,
		reclaim: opts.Reclaimer,
		index:   pvmatch.NewIndex(),
		assumed: map[string]string{},
	}
	c.latest = newLatestCache(c.index)
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	pvs := factory.Core().V1().PersistentVolumes()
	claims := factory.Core().V1().PersistentVolumeClaims()
	classes := factory.Storage().V1().StorageClasses()
	pods := factory.Core().V1().Pods()
	nodes := factory.Core().V1().Nodes()
	c.pvLister, c.claimLister, c.classLister, c.podLister, c.nodeLister = pvs.Lister(), claims.Lister(), classes.Lister(), pods.Lister(), nodes.Lister()
	c.synced = []cache.InformerSynced{pvs.Informer().HasSynced, claims.Informer().HasSynced, classes.Informer().HasSynced, pods.Informer().HasSynced, nodes.Informer().HasSynced}

	if _, err := pvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.volumeChanged(obj) },
		UpdateFunc: func(_, obj any) { c.volumeChanged(obj) },
		DeleteFunc: c.volumeDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.claimChanged(obj) },
		UpdateFunc: func(_, obj any) { c.claimChanged(obj) },
		DeleteFunc: c.claimDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := classes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		// A new or changed class may let pending claims move on.
		AddFunc:    func(any) { c.enqueuePendingClaims() },
		UpdateFunc: func(_, _ any) { c.enqueuePendingClaims() },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run syncs until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer c.claims.ShutDown()
	defer c.volumes.ShutDown()
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < c.workers; i++ {
		wg.Go(func() { queue.Work(ctx, c.claims, c.syncClaim, c.syncFailed) })
		wg.Go(func() { queue.Work(ctx, c.volumes, c.syncVolume, c.syncFailed) })
	}
	wg.Go(func() { c.resyncLoop(ctx) })
	<-ctx.Done()
	c.claims.ShutDown()
	c.volumes.ShutDown()
	wg.Wait()
}

func (c *Controller) syncFailed(key string, err error) {
	c.log.Debug("sync failed; retrying", "key", key, "err", err)
}

// resyncLoop enqueues everything periodically, as upstream: events for
// pending claims are repeated, and anything a lost watch event missed heals.
func (c *Controller) resyncLoop(ctx context.Context) {
	t := time.NewTicker(c.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if pvs, err := c.pvLister.List(everything); err == nil {
			for _, pv := range pvs {
				c.volumes.Add(pv.Name)
			}
		}
		if claims, err := c.claimLister.List(everything); err == nil {
			for _, claim := range claims {
				c.claims.Add(claimKey(claim))
			}
		}
	}
}

func (c *Controller) volumeChanged(obj any) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return
	}
	c.latest.put(pv)
	c.volumes.Add(pv.Name)
	if ref := pv.Spec.ClaimRef; ref != nil {
		// A volume pre-bound to a claim that is still Pending (say, the
		// claim named it in spec.volumeName before the volume existed):
		// bind now rather than at the next resync (upstream waits for it).
		key := ref.Namespace + "/" + ref.Name
		if claim := c.latest.claim(key); claim != nil && claim.Status.Phase != corev1.ClaimBound {
			c.claims.Add(key)
		}
	}
	if pv.Spec.ClaimRef == nil && pv.DeletionTimestamp == nil {
		// A free volume may be what a pending claim waits for: look again
		// now rather than at the next resync (upstream waits for it).
		for _, key := range c.latest.pendingClaims(pvmatch.VolumeClass(pv), pendingWakeups) {
			c.claims.Add(key)
		}
	}
}

// pendingWakeups bounds how many pending claims one new volume wakes; the
// periodic resync reaches any others.
const pendingWakeups = 64

func (c *Controller) volumeDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return
	}
	c.latest.remove(pv)
	// Its claim becomes Lost at once, as upstream.
	if ref := pv.Spec.ClaimRef; ref != nil {
		c.claims.Add(ref.Namespace + "/" + ref.Name)
	}
}

func (c *Controller) claimChanged(obj any) {
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	c.latest.put(claim)
	c.claims.Add(claimKey(claim))
}

func (c *Controller) claimDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	c.latest.remove(claim)
	// Its volume becomes Released at once, as upstream.
	if claim.Spec.VolumeName != "" {
		c.volumes.Add(claim.Spec.VolumeName)
	}
}

func (c *Controller) enqueuePendingClaims() {
	claims, err := c.claimLister.List(everything)
	if err != nil {
		return
	}
	for _, claim := range claims {
		if claim.Spec.VolumeName == "" {
			c.claims.Add(claimKey(claim))
		}
	}
}

// assume reserves a volume for a claim's bind; false if another claim holds it.
func (c *Controller) assume(volume, claim string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if holder, ok := c.assumed[volume]; ok && holder != claim {
		return false
	}
	c.assumed[volume] = claim
	return true
}

func (c *Controller) forget(volume string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.assumed, volume)
}

func (c *Controller) isAssumedByOther(claim string) func(string) bool {
	return func(volume string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		holder, ok := c.assumed[volume]
		return ok && holder != claim
	}
}

func claimKey(claim *corev1.PersistentVolumeClaim) string {
	return claim.Namespace + "/" + claim.Name
}

// class returns a StorageClass by name (nil, nil when it does not exist).
func (c *Controller) class(name string) (*storagev1.StorageClass, error) {
	sc, err := c.classLister.Get(name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return sc, nil
}

// newer tells whether a has a newer resourceVersion than b.
func newer(a, b runtime.Object) bool {
	ra, _ := strconv.ParseInt(metaRV(a), 10, 64)
	rb, _ := strconv.ParseInt(metaRV(b), 10, 64)
	return ra > rb
}
