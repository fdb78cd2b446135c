package attachdetach

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
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

	"github.com/moorage/moorage/internal/csi/migration"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controller in events, as upstream.
const Component = "attachdetach-controller"

// annControllerManaged marks a node whose volumes the controller attaches
// and detaches (the kubelet sets it with --enable-controller-attach-detach).
const annControllerManaged = "volumes.kubernetes.io/controller-managed-attach-detach"

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// MaxWaitForUnmount is how long a volume that a node not Ready (or
	// gone) still reports in use stays attached once no pod needs it
	// (maxWaitForUnmountDuration, 6 min).
	MaxWaitForUnmount time.Duration
	// AttachTimeout is how long an attachment may stay pending, with no
	// error, before the pods get a timeout event (the CSI attacher's
	// watch timeout, 2 min).
	AttachTimeout time.Duration
	// Resync is how often every node is looked at again (the desired
	// state populator's period, 1 min).
	Resync time.Duration
	// RetryStart and RetryMax bound the per-node back-off after an API
	// error (upstream's operation back-off: 500 ms to 2 min 2 s).
	RetryStart, RetryMax time.Duration
	// Workers syncing nodes; 0 means 2.
	Workers int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller attaches and detaches CSI volumes through VolumeAttachments.
type Controller struct {
	log     *slog.Logger
	client  kubernetes.Interface
	opts    Options
	factory informers.SharedInformerFactory

	pods     corelisters.PodLister
	podIndex cache.Indexer
	nodes    corelisters.NodeLister
	claims   corelisters.PersistentVolumeClaimLister
	pvs      corelisters.PersistentVolumeLister
	drivers  storagelisters.CSIDriverLister
	vaIndex  cache.Indexer
	synced   []cache.InformerSynced

	queue    workqueue.TypedRateLimitingInterface[string] // node names
	events   record.EventBroadcaster
	recorder record.EventRecorder

	mu    sync.Mutex
	state map[string]*attachment // by VolumeAttachment name

	now func() time.Time
}

// attachment is what the controller remembers of one (volume, node).
type attachment struct {
	node string
	// detachWanted is when the volume stopped being needed (zero while
	// it is).
	detachWanted time.Time
	// pending is when the controller began waiting for the attachment
	// (zero once attached, or if it never saw it pending).
	pending time.Time
	// lastError is the attach error last reported to the pods.
	lastError string
	// multiAttachReported: pods told that the volume is attached elsewhere.
	multiAttachReported map[types.UID]bool
}

// Index names.
const (
	byNode = "node"
	byPV   = "pv"
)

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	if opts.MaxWaitForUnmount == 0 {
		opts.MaxWaitForUnmount = 6 * time.Minute
	}
	if opts.AttachTimeout == 0 {
		opts.AttachTimeout = 2 * time.Minute
	}
	if opts.Resync == 0 {
		opts.Resync = time.Minute
	}
	if opts.RetryStart == 0 {
		opts.RetryStart = 500 * time.Millisecond
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 2*time.Minute + 2*time.Second
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if log == nil {
		log = slog.Default()
	}
	factory := sharedinformers.Or(opts.Informers, client)
	c := &Controller{
		log: log.With("controller", Component), client: client, opts: opts, factory: factory,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RetryStart, opts.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "attachdetach"}),
		state: map[string]*attachment{},
		now:   time.Now,
	}
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	pods := factory.Core().V1().Pods()
	nodes := factory.Core().V1().Nodes()
	claims := factory.Core().V1().PersistentVolumeClaims()
	pvs := factory.Core().V1().PersistentVolumes()
	drivers := factory.Storage().V1().CSIDrivers()
	vas := factory.Storage().V1().VolumeAttachments()
	if err := sharedinformers.IndexPodsByNode(pods.Informer()); err != nil {
		return nil, err
	}
	if err := vas.Informer().AddIndexers(cache.Indexers{
		byNode: func(obj any) ([]string, error) {
			if va, ok := obj.(*storagev1.VolumeAttachment); ok {
				return []string{va.Spec.NodeName}, nil
			}
			return nil, nil
		},
		byPV: func(obj any) ([]string, error) {
			if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.Source.PersistentVolumeName != nil {
				return []string{*va.Spec.Source.PersistentVolumeName}, nil
			}
			return nil, nil
		},
	}); err != nil {
		return nil, err
	}
	c.pods, c.podIndex = pods.Lister(), pods.Informer().GetIndexer()
	c.nodes, c.claims, c.pvs, c.drivers = nodes.Lister(), claims.Lister(), pvs.Lister(), drivers.Lister()
	c.vaIndex = vas.Informer().GetIndexer()
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nodes.Informer(), claims.Informer(), pvs.Informer(), drivers.Informer(), vas.Informer()} {
		c.synced = append(c.synced, inf.HasSynced)
	}

	handlers := []struct {
		inf     cache.SharedIndexInformer
		changed func(obj any)
	}{
		{pods.Informer(), c.podChanged},
		{nodes.Informer(), c.nodeChanged},
		{claims.Informer(), c.claimChanged},
		{pvs.Informer(), c.volumeChanged},
		{drivers.Informer(), func(any) { c.enqueueAll() }},
		{vas.Informer(), c.attachmentChanged},
	}
	for _, h := range handlers {
		changed := h.changed
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    changed,
			UpdateFunc: func(_, obj any) { changed(obj) },
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				changed(obj)
			},
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run syncs nodes until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer c.queue.ShutDown()
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() { c.work(ctx) })
	}
	t := time.NewTicker(c.opts.Resync)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
			c.enqueueAll()
		}
	}
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) work(ctx context.Context) {
	for {
		node, quit := c.queue.Get()
		if quit {
			return
		}
		after, err := c.syncNode(ctx, node)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				c.log.Info("sync failed; retrying with back-off", "node", node, "err", err)
			}
			c.queue.AddRateLimited(node)
		case after > 0:
			c.queue.Forget(node)
			c.queue.AddAfter(node, after)
		default:
			c.queue.Forget(node)
		}
		c.queue.Done(node)
	}
}

func (c *Controller) enqueue(node string) {
	if node != "" {
		c.queue.Add(node)
	}
}

// enqueueAll queues every node, and every node a VolumeAttachment names
// (a deleted node's attachments too).
func (c *Controller) enqueueAll() {
	nodes, _ := c.nodes.List(labels.Everything())
	for _, n := range nodes {
		c.enqueue(n.Name)
	}
	for _, name := range c.vaIndex.ListIndexFuncValues(byNode) {
		c.enqueue(name)
	}
}

func (c *Controller) podChanged(obj any) {
	if p, ok := obj.(*corev1.Pod); ok {
		c.enqueue(p.Spec.NodeName)
	}
}

func (c *Controller) nodeChanged(obj any) {
	if n, ok := obj.(*corev1.Node); ok {
		c.enqueue(n.Name)
	}
}

func (c *Controller) attachmentChanged(obj any) {
	va, ok := obj.(*storagev1.VolumeAttachment)
	if !ok {
		return
	}
	c.enqueue(va.Spec.NodeName)
	// A volume that cannot be attached to several nodes may now go to
	// the nodes of the other pods that use it.
	if n := va.Spec.Source.PersistentVolumeName; n != nil {
		if pv, err := c.pvs.Get(*n); err == nil && pv.Spec.ClaimRef != nil {
			c.enqueueClaimUsers(pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name)
		}
	}
}

func (c *Controller) claimChanged(obj any) {
	if claim, ok := obj.(*corev1.PersistentVolumeClaim); ok {
		c.enqueueClaimUsers(claim.Namespace, claim.Name)
	}
}

func (c *Controller) volumeChanged(obj any) {
	if pv, ok := obj.(*corev1.PersistentVolume); ok && pv.Spec.ClaimRef != nil && (pv.Spec.CSI != nil || migration.Translator().IsPVMigratable(pv)) {
		c.enqueueClaimUsers(pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name)
	}
}

// enqueueClaimUsers queues the nodes of the pods that use a claim.
func (c *Controller) enqueueClaimUsers(namespace, claim string) {
	pods, err := c.pods.Pods(namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		for i := range p.Spec.Volumes {
			if claimName(p, &p.Spec.Volumes[i]) == claim {
				c.enqueue(p.Spec.NodeName)
				break
			}
		}
	}
}
