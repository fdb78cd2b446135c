package resizer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/csi"
)

// Options configure a Controller. Zero values get external-resizer's
// defaults.
type Options struct {
	// DriverName is the driver whose PVs (spec.csi.driver) are resized;
	// "" means the driver's GetPluginInfo name.
	DriverName string
	// NodeLocal: the driver's volumes live on one node each and its
	// controller service reaches only this node's (the built-in driver).
	// Only PVs whose node affinity matches NodeName are resized here.
	NodeLocal bool
	NodeName  string
	// Workers is how many claims are resized at once; 0 means 10
	// (--workers).
	Workers int
	// RetryStart and RetryMax bound the per-claim exponential back-off
	// after a failure (--retry-interval-start, --retry-interval-max); 0
	// means 1 s and 5 min. RetryMax is also how long a claim whose
	// expansion was infeasible waits before the same size is tried again.
	RetryStart, RetryMax time.Duration
	// Resync is how often every claim is looked at again; 0 means 10 min
	// (--resync-period).
	Resync time.Duration
}

// Controller resizes the volumes of one CSI driver.
type Controller struct {
	log    *slog.Logger
	client kubernetes.Interface
	csi    *csi.Client
	opts   Options

	// Set by Run from the driver.
	driver string
	// controllerExpand: the driver has the controller EXPAND_VOLUME
	// capability. Without it (but with node expansion) no RPC is made
	// here: the claim goes straight to NodeResizePending, as upstream's
	// trivial resizer does.
	controllerExpand bool
	recorder         record.EventRecorder

	factory    informers.SharedInformerFactory
	claimStore cache.Store
	claims     corelisters.PersistentVolumeClaimLister
	pvStore    cache.Store
	pvs        corelisters.PersistentVolumeLister
	nodes      corelisters.NodeLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// finalErr: claims whose last ControllerExpandVolume failed with a
	// final error (upstream's finalErrorPVCs).
	finalErr map[string]bool
	// slow: claims whose expansion was infeasible, and since when
	// (upstream's slowSet); the same size is not tried again before
	// RetryMax has passed.
	slow map[string]time.Time

	now func() time.Time
}

// New builds a resizer for the driver behind client. It does not call the
// driver; Run does.
func New(cfg *rest.Config, client *csi.Client, log *slog.Logger, opts Options) (*Controller, error) {
	if client == nil {
		return nil, errors.New("resizer: no CSI client")
	}
	if opts.NodeLocal && opts.NodeName == "" {
		return nil, errors.New("resizer: NodeLocal needs Options.NodeName")
	}
	if opts.Workers == 0 {
		opts.Workers = 10
	}
	if opts.RetryStart == 0 {
		opts.RetryStart = time.Second
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 5 * time.Minute
	}
	if opts.Resync == 0 {
		opts.Resync = 10 * time.Minute
	}
	kube, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "csi-resizer"))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Controller{
		log:      log.With("controller", "resizer"),
		client:   kube,
		csi:      client,
		opts:     opts,
		factory:  informers.NewSharedInformerFactory(kube, opts.Resync),
		finalErr: map[string]bool{},
		slow:     map[string]time.Time{},
		now:      time.Now,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RetryStart, opts.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "resizer-pvc"}),
	}
	claims := c.factory.Core().V1().PersistentVolumeClaims()
	pvs := c.factory.Core().V1().PersistentVolumes()
	c.claims, c.claimStore = claims.Lister(), claims.Informer().GetStore()
	c.pvs, c.pvStore = pvs.Lister(), pvs.Informer().GetStore()
	c.synced = []cache.InformerSynced{claims.Informer().HasSynced, pvs.Informer().HasSynced}
	if opts.NodeLocal {
		nodes := c.factory.Core().V1().Nodes()
		c.nodes = nodes.Lister()
		c.synced = append(c.synced, nodes.Informer().HasSynced)
	}
	if _, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.claimAdded,
		UpdateFunc: c.claimUpdated,
		DeleteFunc: c.claimDeleted,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run asks the driver who it is and what it can expand, then resizes until
// ctx is done. It waits (retrying with back-off) for a driver that is not
// ready, and returns at once for a driver that cannot expand volumes (as
// upstream's sidecar refuses to start).
func (c *Controller) Run(ctx context.Context) {
	defer c.queue.ShutDown()
	supported, err := c.connect(ctx)
	if err != nil {
		return
	}
	if !supported {
		return
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer events.Shutdown()
	// external-resizer's event source.
	c.recorder = events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "external-resizer " + c.driver})

	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	c.log.Info("resizing volumes", "controllerExpand", c.controllerExpand)
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() { c.work(ctx) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

// connect learns the driver's name and capabilities, retrying until the
// driver answers or ctx ends. supported is false for a driver that can
// expand nothing; the reason is logged.
func (c *Controller) connect(ctx context.Context) (supported bool, err error) {
	err = csi.RetryUntilReady(ctx, c.log, c.opts.RetryStart, c.opts.RetryMax, func(ctx context.Context) error {
		supported, err = c.describeDriver(ctx)
		return err
	})
	return supported, err
}

// describeDriver is external-resizer's NewResizerFromClient: the plugin
// must have a controller service; with the controller EXPAND_VOLUME
// capability it is a CSI resizer, else with the node one a trivial
// resizer, else none.
func (c *Controller) describeDriver(ctx context.Context) (bool, error) {
	name, err := c.csi.DriverName(ctx, c.opts.DriverName)
	if err != nil {
		return false, err
	}
	plugin, err := c.csi.PluginCapabilities(ctx)
	if err != nil {
		return false, err
	}
	c.driver = name
	c.log = c.log.With("driver", name)
	if !plugin.ControllerService {
		c.log.Info("not resizing: CSI driver does not support controller service")
		return false, nil
	}
	ctrl, err := c.csi.ControllerCapabilities(ctx)
	if err != nil {
		return false, err
	}
	if ctrl.ExpandVolume {
		c.controllerExpand = true
		return true, nil
	}
	node, err := c.csi.NodeCapabilities(ctx)
	if err != nil {
		return false, err
	}
	if !node.ExpandVolume {
		c.log.Info("not resizing: CSI driver neither supports controller resize nor node resize")
		return false, nil
	}
	c.log.Info("The CSI driver supports node resize only, using trivial resizer to handle resize requests")
	return true, nil
}

func (c *Controller) work(ctx context.Context) {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.syncClaim(ctx, key)
		var delay *delayError
		switch {
		case err == nil:
			c.queue.Forget(key)
		case errors.As(err, &delay):
			c.queue.AddAfter(key, delay.after)
		default:
			if ctx.Err() == nil {
				c.log.Info("resize failed; retrying with back-off", "claim", key, "err", err)
			}
			c.queue.AddRateLimited(key)
		}
		c.queue.Done(key)
	}
}

// delayError asks for the claim to be looked at again after a while, not
// with the back-off of failures (upstream's DelayRetryError).
type delayError struct {
	msg   string
	after time.Duration
}

func (e *delayError) Error() string { return e.msg }

func (c *Controller) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

func (c *Controller) claimAdded(obj any) { c.enqueue(obj) }

// claimUpdated is upstream's updatePVC: a claim is looked at when its
// request or resizer annotation changed, on a resync, when its capacity
// grew (the node finished: the PV's pre-resize annotation can go), or when
// its resize status changed.
func (c *Controller) claimUpdated(oldObj, newObj any) {
	old, ok1 := oldObj.(*corev1.PersistentVolumeClaim)
	cur, ok2 := newObj.(*corev1.PersistentVolumeClaim)
	if !ok1 || !ok2 {
		return
	}
	oldReq, newReq := old.Spec.Resources.Requests[corev1.ResourceStorage], cur.Spec.Resources.Requests[corev1.ResourceStorage]
	oldCap, newCap := old.Status.Capacity[corev1.ResourceStorage], cur.Status.Capacity[corev1.ResourceStorage]
	switch {
	case newReq.Cmp(oldReq) != 0,
		old.Annotations[annStorageResizer] != cur.Annotations[annStorageResizer],
		old.ResourceVersion == cur.ResourceVersion,
		newCap.Cmp(oldCap) > 0,
		old.Status.AllocatedResourceStatuses[corev1.ResourceStorage] != cur.Status.AllocatedResourceStatuses[corev1.ResourceStorage]:
		c.enqueue(cur)
	}
}

func (c *Controller) claimDeleted(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.queue.Forget(key)
	c.mu.Lock()
	delete(c.finalErr, key)
	delete(c.slow, key)
	c.mu.Unlock()
}
