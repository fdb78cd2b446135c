// Package scheduler places pods on nodes as kube-scheduler 1.33's default
// profile does, and binds them through the pods/binding subresource.
//
// Design: a pure decision core with an I/O shell. Schedule(pod, snapshot)
// runs upstream's pre-filters and filters in their default order, the first
// failing filter giving a node's reasons, and returns a Decision or a
// *FitError whose text is upstream's FailedScheduling message (preemption
// part included); scoring is least-allocated, ties by node name, nodes where
// existing volumes fit preferred over provisioning. The Scheduler is one
// worker over a delaying queue of pods: a placed pod is "assumed" on its node
// (its chosen volumes too) until the API shows it, so pods placed back to
// back see each other. WaitForFirstConsumer claims are not bound here: each
// gets volume.kubernetes.io/selected-node, which moorage's PV controller (or
// a provisioner) acts on, and the pod is bound once all its claims are
// Bound (or the attempt fails after BindTimeout). Retries back off per pod
// (1 s doubling to 10 s); a pod no node fits waits for a change to nodes,
// volumes, claims, classes or placed pods.
//
// Beyond upstream, a claim to provision by a CSI driver goes only to nodes
// whose CSINode lists the driver (see driverOn).
//
// Left out for now: preemption (nothing is evicted), pod topology spread,
// volume zone, CSI node limits and storage capacity, scoring beyond
// least-allocated, nominated nodes, extenders, other profiles.
package scheduler

import (
	"context"
	"log/slog"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
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
)

// Component is the scheduler's name: the spec.schedulerName of the pods it
// places and the source of its events, as upstream.
const Component = "default-scheduler"

// Options tune the scheduler; the zero value is moorage's defaults.
type Options struct {
	// BindTimeout bounds the wait for a pod's WaitForFirstConsumer claims
	// to be bound before the pod is; 0 means 60 s (upstream: 600 s).
	BindTimeout time.Duration
	// InitialBackoff and MaxBackoff bound the per-pod retry back-off; 0
	// means upstream's 1 s and 10 s.
	InitialBackoff, MaxBackoff time.Duration
	// UnschedulableFlush is how long a pod no node fits waits for a change
	// before it is tried again anyway; 0 means upstream's 5 minutes.
	UnschedulableFlush time.Duration
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

func (o *Options) defaults() {
	if o.BindTimeout == 0 {
		o.BindTimeout = 60 * time.Second
	}
	if o.InitialBackoff == 0 {
		o.InitialBackoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.UnschedulableFlush == 0 {
		o.UnschedulableFlush = 5 * time.Minute
	}
}

// bindsAtOnce bounds the bindings written in parallel.
const bindsAtOnce = 16

// Scheduler places pods whose spec.schedulerName is "default-scheduler" (or
// empty) and that have no node.
type Scheduler struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	recorder record.EventRecorder
	events   record.EventBroadcaster
	opts     Options

	pods       corelisters.PodLister
	nodes      corelisters.NodeLister
	volumes    corelisters.PersistentVolumeLister
	claims     corelisters.PersistentVolumeClaimLister
	classes    storagelisters.StorageClassLister
	namespaces corelisters.NamespaceLister
	csiNodes   storagelisters.CSINodeLister
	csiDrivers storagelisters.CSIDriverLister
	synced     []cache.InformerSynced

	queue workqueue.TypedDelayingInterface[string]
	index *pvmatch.Index // the volumes, for WaitForFirstConsumer matching

	binds     sync.WaitGroup // bindings being written
	bindSlots chan struct{}  // bounds the bindings written at once
	placed    *placedPods    // the pods on each node, from one decision to the next
	requests  *RequestCache  // placed pods' requests, from one decision to the next
	decisions int            // snapshots taken, to rotate requests now and then

	mu       sync.Mutex
	inflight map[string]*inflight // pod key -> placement not yet seen in the API
	parked   map[string]time.Time // pods no node fits -> since when
	backoff  map[string]*backoff  // pod key -> failed attempts
	moves    int                  // counts moveParked calls (see attempt)
}

// inflight is a pod assumed on a node: chosen, its claims being bound, or
// bound and not yet seen so by the informer.
type inflight struct {
	uid       types.UID
	pod       *corev1.Pod // a copy with spec.nodeName set
	decision  Decision
	deadline  time.Time        // for its claims to be bound
	annotated sets.Set[string] // claims carrying the selected-node annotation
	binding   bool             // the binding is being written
	bound     bool             // the binding was written
}

type backoff struct {
	attempts int
	until    time.Time
}

var everything = labels.Everything()

// New builds the scheduler on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Scheduler, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), Component)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	opts.defaults()
	factory := sharedinformers.Or(opts.Informers, client)
	s := &Scheduler{
		log:       log.With("controller", "scheduler"),
		client:    client,
		factory:   factory,
		opts:      opts,
		queue:     workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "pods"}),
		index:     pvmatch.NewIndex(),
		requests:  NewRequestCache(),
		placed:    newPlacedPods(),
		bindSlots: make(chan struct{}, bindsAtOnce),
		inflight:  map[string]*inflight{},
		parked:    map[string]time.Time{},
		backoff:   map[string]*backoff{},
	}
	s.events = record.NewBroadcaster(record.WithContext(context.Background()))
	s.recorder = s.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	pods := factory.Core().V1().Pods()
	nodes := factory.Core().V1().Nodes()
	pvs := factory.Core().V1().PersistentVolumes()
	pvcs := factory.Core().V1().PersistentVolumeClaims()
	scs := factory.Storage().V1().StorageClasses()
	nss := factory.Core().V1().Namespaces()
	cns := factory.Storage().V1().CSINodes()
	drivers := factory.Storage().V1().CSIDrivers()
	s.pods, s.nodes, s.volumes, s.claims, s.classes, s.namespaces = pods.Lister(), nodes.Lister(), pvs.Lister(), pvcs.Lister(), scs.Lister(), nss.Lister()
	s.csiNodes, s.csiDrivers = cns.Lister(), drivers.Lister()
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nodes.Informer(), pvs.Informer(), pvcs.Informer(), scs.Informer(), nss.Informer(), cns.Informer(), drivers.Informer()} {
		s.synced = append(s.synced, inf.HasSynced)
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{pods.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: s.podAdded, UpdateFunc: s.podUpdated, DeleteFunc: s.podDeleted}},
		{nodes.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.moveParked() },
			UpdateFunc: func(old, cur any) { s.nodeUpdated(old, cur) },
		}},
		{pvs.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    s.volumeChanged,
			UpdateFunc: func(_, cur any) { s.volumeChanged(cur) },
			DeleteFunc: s.volumeDeleted,
		}},
		{pvcs.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    s.claimChanged,
			UpdateFunc: func(_, cur any) { s.claimChanged(cur) },
		}},
		{scs.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.moveParked() },
			UpdateFunc: func(any, any) { s.moveParked() },
		}},
		// A driver registered on a node (or a new CSIDriver) may be what a
		// claim to provision waits for, as upstream's VolumeBinding
		// registers for CSINode and CSIDriver events.
		{cns.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.moveParked() },
			UpdateFunc: func(any, any) { s.moveParked() },
			DeleteFunc: func(any) { s.moveParked() },
		}},
		{drivers.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.moveParked() },
			UpdateFunc: func(any, any) { s.moveParked() },
			DeleteFunc: func(any) { s.moveParked() },
		}},
		{nss.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { s.moveParked() },
			UpdateFunc: func(old, cur any) {
				if o, ok := old.(*corev1.Namespace); ok {
					if c, ok := cur.(*corev1.Namespace); ok && !reflect.DeepEqual(o.Labels, c.Labels) {
						s.moveParked()
					}
				}
			},
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run schedules until ctx is done.
func (s *Scheduler) Run(ctx context.Context) {
	defer s.queue.ShutDown()
	s.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.client.CoreV1().Events("")})
	defer s.events.Shutdown()
	s.factory.Start(ctx.Done())
	defer s.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			key, quit := s.queue.Get()
			if quit {
				return
			}
			s.sync(ctx, key)
			s.queue.Done(key)
		}
	})
	wg.Go(func() { s.flushLoop(ctx) })
	<-ctx.Done()
	s.queue.ShutDown()
	wg.Wait()
	s.binds.Wait()
}

// responsible: the pod is this scheduler's to place.
func responsible(pod *corev1.Pod) bool {
	return pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == Component
}

func podKey(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

func (s *Scheduler) podAdded(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName != "" {
		s.placed.set(pod)
		s.forget(podKey(pod))
		s.moveParked() // a placed pod may be what another's affinity waits for
		return
	}
	if responsible(pod) {
		s.queue.Add(podKey(pod))
	}
}

func (s *Scheduler) podUpdated(oldObj, curObj any) {
	old, ok1 := oldObj.(*corev1.Pod)
	cur, ok2 := curObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return
	}
	key := podKey(cur)
	if cur.Spec.NodeName != "" {
		s.placed.set(cur)
	}
	switch {
	case cur.Spec.NodeName != "" && old.Spec.NodeName == "":
		s.forget(key)
		s.moveParked()
	case cur.Spec.NodeName != "":
		// Placed pods matter to others by their labels and while they run;
		// status updates (the agent's) change nothing here.
		if !reflect.DeepEqual(old.Labels, cur.Labels) || terminated(cur) != terminated(old) || (cur.DeletionTimestamp != nil) != (old.DeletionTimestamp != nil) {
			s.moveParked()
		}
	case responsible(cur) && specChanged(old, cur):
		s.retry(key)
	}
}

// specChanged: anything but status and bookkeeping changed (upstream's
// isPodUpdated); the scheduler's own condition writes change nothing.
func specChanged(old, cur *corev1.Pod) bool {
	return !reflect.DeepEqual(old.Spec, cur.Spec) || !reflect.DeepEqual(old.Labels, cur.Labels) ||
		!reflect.DeepEqual(old.Annotations, cur.Annotations) || (old.DeletionTimestamp != nil) != (cur.DeletionTimestamp != nil)
}

func (s *Scheduler) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	if pod.Spec.NodeName != "" {
		s.placed.remove(pod)
	}
	s.mu.Lock()
	if f := s.inflight[key]; f != nil && f.uid == pod.UID {
		delete(s.inflight, key)
	}
	delete(s.parked, key)
	delete(s.backoff, key)
	s.mu.Unlock()
	if pod.Spec.NodeName != "" {
		s.moveParked() // its resources, ports and claims are free
	}
}

// forget: the API shows the pod on a node (or it is gone); nothing of it
// is assumed any more.
func (s *Scheduler) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, key)
	delete(s.parked, key)
	delete(s.backoff, key)
}

func (s *Scheduler) nodeUpdated(oldObj, curObj any) {
	old, ok1 := oldObj.(*corev1.Node)
	cur, ok2 := curObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return
	}
	// Heartbeats change nothing a filter reads.
	if old.Spec.Unschedulable != cur.Spec.Unschedulable || !reflect.DeepEqual(old.Spec.Taints, cur.Spec.Taints) ||
		!reflect.DeepEqual(old.Labels, cur.Labels) || !reflect.DeepEqual(old.Status.Allocatable, cur.Status.Allocatable) ||
		notReadyTaint(old) != notReadyTaint(cur) {
		s.moveParked()
	}
}

func (s *Scheduler) volumeChanged(obj any) {
	if pv, ok := obj.(*corev1.PersistentVolume); ok {
		s.index.Upsert(pv)
		s.moveParked()
	}
}

func (s *Scheduler) volumeDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if pv, ok := obj.(*corev1.PersistentVolume); ok {
		s.index.Delete(pv.Name)
	}
}

// claimChanged wakes the pods waiting for the claim to bind, and the pods no
// node fitted (a claim created or bound may be what they lack).
func (s *Scheduler) claimChanged(obj any) {
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	s.mu.Lock()
	var waiting []string
	for key, f := range s.inflight {
		if f.pod.Namespace == claim.Namespace && !f.bound && podClaimNames(f.pod).Has(claim.Name) {
			waiting = append(waiting, key)
		}
	}
	s.mu.Unlock()
	for _, key := range waiting {
		s.queue.Add(key)
	}
	s.moveParked()
}

// moveParked sends the pods no node fitted back to the queue, each when its
// back-off ends (upstream's MoveAllToActiveOrBackoffQueue).
func (s *Scheduler) moveParked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.moves++
	now := time.Now()
	for key := range s.parked {
		s.queue.AddAfter(key, s.remainingLocked(key, now))
		delete(s.parked, key)
	}
}

// retry sends one pod back to the queue after its back-off.
func (s *Scheduler) retry(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.parked, key)
	s.queue.AddAfter(key, s.remainingLocked(key, time.Now()))
}

func (s *Scheduler) remainingLocked(key string, now time.Time) time.Duration {
	if b := s.backoff[key]; b != nil && b.until.After(now) {
		return b.until.Sub(now)
	}
	return 0
}

// flushLoop retries pods that have waited UnschedulableFlush for a change
// (upstream checks every 30 s).
func (s *Scheduler) flushLoop(ctx context.Context) {
	every := min(30*time.Second, s.opts.UnschedulableFlush)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		now := time.Now()
		for key, since := range s.parked {
			if now.Sub(since) >= s.opts.UnschedulableFlush {
				delete(s.parked, key)
				s.queue.Add(key)
			}
		}
		s.mu.Unlock()
	}
}
