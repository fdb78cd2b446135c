package attacher

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/csi"

	"github.com/moorage/moorage/internal/controller/queue"
)

// Options configure a Controller. Zero values get upstream's defaults.
type Options struct {
	// DriverName is the attacher name VolumeAttachments must name in
	// spec.attacher; "" means the driver's GetPluginInfo name.
	DriverName string
	// NodeName, when set, limits the controller to VolumeAttachments to
	// this node: the attacher of a node-local driver, one per node.
	NodeName string
	// Workers per queue (VolumeAttachments, PersistentVolumes); 0 means 4.
	Workers int
	// RetryStart and RetryMax bound the per-object exponential back-off
	// after an error (--retry-interval-start, --retry-interval-max); 0
	// means 1 s and 5 min.
	RetryStart, RetryMax time.Duration
	// Timeout bounds each ControllerPublish/Unpublish call (--timeout); 0
	// means 15 s.
	Timeout time.Duration
	// Resync is how often every object is looked at again (--resync); 0
	// means 10 min.
	Resync time.Duration
}

// The node ID annotation upstream writes on a VolumeAttachment, used to
// detach from a node whose CSINode no longer lists the driver.
const annNodeID = "csi.alpha.kubernetes.io/node-id"

// Controller attaches and detaches the volumes of one CSI driver.
type Controller struct {
	log    *slog.Logger
	client kubernetes.Interface
	csi    *csi.Client
	opts   Options

	// Set by Run from the driver.
	driver          string
	finalizer       string
	trivial         bool // no ControllerPublishVolume: mark attached without a call
	publishReadonly bool

	factory  informers.SharedInformerFactory
	vaLister storagelisters.VolumeAttachmentLister
	pvLister corelisters.PersistentVolumeLister
	csiNodes storagelisters.CSINodeLister
	synced   []cache.InformerSynced

	vas workqueue.TypedRateLimitingInterface[string]
	pvs workqueue.TypedRateLimitingInterface[string]

	now func() time.Time
}

// New builds an attacher for the driver behind client. It does not call the
// driver; Run does.
func New(cfg *rest.Config, client *csi.Client, log *slog.Logger, opts Options) (*Controller, error) {
	if client == nil {
		return nil, errors.New("attacher: no CSI client")
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	if opts.RetryStart == 0 {
		opts.RetryStart = time.Second
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 5 * time.Minute
	}
	if opts.Timeout == 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.Resync == 0 {
		opts.Resync = 10 * time.Minute
	}
	kube, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "csi-attacher"))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	queue := func(name string) workqueue.TypedRateLimitingInterface[string] {
		return workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RetryStart, opts.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name})
	}
	c := &Controller{
		log:     log.With("controller", "attacher"),
		client:  kube,
		csi:     client,
		opts:    opts,
		factory: informers.NewSharedInformerFactory(kube, opts.Resync),
		vas:     queue("csi-attacher-va"),
		pvs:     queue("csi-attacher-pv"),
		now:     time.Now,
	}
	vas := c.factory.Storage().V1().VolumeAttachments()
	pvs := c.factory.Core().V1().PersistentVolumes()
	csiNodes := c.factory.Storage().V1().CSINodes()
	c.vaLister, c.pvLister, c.csiNodes = vas.Lister(), pvs.Lister(), csiNodes.Lister()
	c.synced = []cache.InformerSynced{vas.Informer().HasSynced, pvs.Informer().HasSynced, csiNodes.Informer().HasSynced}
	if _, err := vas.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.vaAdded,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*storagev1.VolumeAttachment)
			n, ok2 := obj.(*storagev1.VolumeAttachment)
			if ok1 && ok2 && onlyErrorsChanged(o, n) {
				return // our own error report: the back-off decides when to retry
			}
			c.vaAdded(obj)
		},
		DeleteFunc: c.vaDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := pvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.pvChanged,
		UpdateFunc: func(_, obj any) { c.pvChanged(obj) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run asks the driver who it is and what it can do, then attaches and
// detaches until ctx is done. It waits (retrying with back-off) for a
// driver that is not ready.
func (c *Controller) Run(ctx context.Context) {
	defer c.vas.ShutDown()
	defer c.pvs.ShutDown()
	if err := c.connect(ctx); err != nil {
		return
	}
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() { queue.Work(ctx, c.vas, c.syncVA, c.syncFailed) })
		wg.Go(func() { queue.Work(ctx, c.pvs, c.syncPV, c.syncFailed) })
	}
	<-ctx.Done()
	c.vas.ShutDown()
	c.pvs.ShutDown()
	wg.Wait()
}

// connect learns the driver's name and capabilities, retrying until the
// driver answers or ctx ends.
func (c *Controller) connect(ctx context.Context) error {
	if err := csi.RetryUntilReady(ctx, c.log, c.opts.RetryStart, c.opts.RetryMax, c.describeDriver); err != nil {
		return err
	}
	c.log = c.log.With("driver", c.driver, "trivial", c.trivial)
	return nil
}

// describeDriver picks upstream's handler: the CSI one when the driver has
// the controller service and PUBLISH_UNPUBLISH_VOLUME, the trivial one
// otherwise.
func (c *Controller) describeDriver(ctx context.Context) error {
	name, err := c.csi.DriverName(ctx, c.opts.DriverName)
	if err != nil {
		return err
	}
	pluginCaps, err := c.csi.PluginCapabilities(ctx)
	if err != nil {
		return err
	}
	trivial, readonly := true, false
	if pluginCaps.ControllerService {
		caps, err := c.csi.ControllerCapabilities(ctx)
		if err != nil {
			return err
		}
		trivial, readonly = !caps.PublishUnpublishVolume, caps.PublishReadonly
	}
	c.driver, c.finalizer, c.trivial, c.publishReadonly = name, finalizerName(name), trivial, readonly
	return nil
}

func (c *Controller) syncFailed(key string, err error) {
	c.log.Info("sync failed; retrying with back-off", "key", key, "err", err, "kind", csi.Classify(err).String())
}

func (c *Controller) vaAdded(obj any) {
	if va, ok := obj.(*storagev1.VolumeAttachment); ok {
		c.vas.Add(va.Name)
	}
}

// vaDeleted: the VolumeAttachment's volume may now lose its finalizer.
func (c *Controller) vaDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.Source.PersistentVolumeName != nil {
		c.pvs.Add(*va.Spec.Source.PersistentVolumeName)
	}
}

// pvChanged queues a volume being deleted that still has the finalizer.
func (c *Controller) pvChanged(obj any) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if ok && pv.DeletionTimestamp != nil && slices.Contains(pv.Finalizers, c.finalizer) {
		c.pvs.Add(pv.Name)
	}
}

// onlyErrorsChanged is upstream's test for an update not worth a sync: only
// the attach or detach error (and the bookkeeping of the write) differ.
func onlyErrorsChanged(old, cur *storagev1.VolumeAttachment) bool {
	if old.ResourceVersion == cur.ResourceVersion {
		return false // a resync
	}
	if old.Status.AttachError == nil && old.Status.DetachError == nil && cur.Status.AttachError == nil && cur.Status.DetachError == nil {
		return false
	}
	x := cur.DeepCopy()
	x.ResourceVersion, x.ManagedFields = old.ResourceVersion, old.ManagedFields
	x.Status.AttachError, x.Status.DetachError = old.Status.AttachError, old.Status.DetachError
	return apiequality.Semantic.DeepEqual(old, x)
}

var notNameChars = regexp.MustCompile(`[^a-zA-Z0-9-]`)

// finalizerName is upstream's finalizer for a driver:
// external-attacher/<driver with every character but letters, digits and
// '-' replaced by '-', and an 'X' after a trailing '-'>.
func finalizerName(driver string) string {
	name := notNameChars.ReplaceAllString(driver, "-")
	if name == "" || name[len(name)-1] == '-' {
		name += "X"
	}
	return "external-attacher/" + name
}
