// Package protection is moorage's storage-object-in-use protection, with the
// semantics of kube-controller-manager's pvc-protection and pv-protection
// controllers: the API server's StorageObjectInUseProtection admission puts
// "kubernetes.io/pvc-protection" on every new claim and
// "kubernetes.io/pv-protection" on every new volume; these controllers take
// the finalizer off an object being deleted once nothing uses it, which lets
// the API server delete it. Until then the object stays, Terminating.
//
// A claim is in use while a scheduled pod (spec.nodeName set) of its
// namespace references it, whatever the pod's phase: through
// spec.volumes[].persistentVolumeClaim.claimName, or as the claim of a
// generic ephemeral volume ("<pod>-<volume>", controlled by the pod) unless
// the pod is shut down (deleted with a zero grace period). Unscheduled pods
// do not count: a kubelet never starts a pod whose claim is being deleted.
// A volume is in use while its status.phase is Bound.
//
// Design. The informers (shared with the other controllers: claims, pods
// with an index from claim key to the pods that reference it, volumes) feed
// two typed rate-limited queues, "pvcprotection" and "pvprotection", as
// upstream. Claim keys are batched by namespace: one goroutine moves keys
// off the claim queue into a per-namespace batch, and the worker handles a
// namespace's batch at once, so that a burst of deletions (a namespace being
// emptied) costs one live pod list per namespace rather than one per claim.
// The claim queue's Done is called only once a key's batch is handled, so a
// key is never in two batches at once.
//
// Invariant: a finalizer is removed only after both the informer's pod
// index and a live LIST of the namespace's pods show no pod using the claim,
// and that LIST is taken after the claim was seen being deleted (a batch
// reads all its claims first, then lists once): a pod the cache has not
// seen yet cannot lose its claim, and a pod created after the LIST cannot
// use it, since kubelets refuse claims being deleted. The update carries
// the resourceVersion read, so a concurrent change means a retry.
//
// Pod events requeue the claims of pods that can no longer block them
// (deleted, terminated or unscheduled pods, as upstream); a volume's status
// change requeues it. Objects not being deleted that lack the finalizer
// (created before admission added it, or with it removed by an update,
// which admission allows) get it back, as upstream.
package protection

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/registry"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// The finalizers, as upstream names them (pkg/volume/util).
const (
	PVCFinalizer = "kubernetes.io/pvc-protection"
	PVFinalizer  = "kubernetes.io/pv-protection"
)

const (
	// podClaimIndex indexes pods by the keys (namespace/name) of the claims
	// they reference.
	podClaimIndex = "pod-pvc-index"
)

// Options tune the controllers.
type Options struct {
	// Workers per controller; 0 means 1, as kube-controller-manager runs
	// them.
	Workers int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller runs the pvc-protection and pv-protection loops.
type Controller struct {
	pvcLog  *slog.Logger
	pvLog   *slog.Logger
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	workers int

	claims corelisters.PersistentVolumeClaimLister
	pods   cache.Indexer
	pvs    corelisters.PersistentVolumeLister

	claimQueue workqueue.TypedRateLimitingInterface[string] // namespace/name
	batches    *batches
	pvQueue    workqueue.TypedRateLimitingInterface[string] // name
}

// New builds the protection controllers, talking to the API at cfg.
func New(cfg *rest.Config, _ *registry.Registry, log *slog.Logger, opts Options) (*Controller, error) {
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "protection-controller")
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("protection controller: client: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	c := &Controller{
		pvcLog:  log.With("controller", "pvc-protection"),
		pvLog:   log.With("controller", "pv-protection"),
		client:  client,
		factory: sharedinformers.Or(opts.Informers, client),
		workers: opts.Workers,
		claimQueue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pvcprotection"}),
		batches: newBatches(),
		pvQueue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pvprotection"}),
	}

	claimInformer := c.factory.Core().V1().PersistentVolumeClaims()
	c.claims = claimInformer.Lister()
	if _, err := claimInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.claimChanged,
		UpdateFunc: func(_, obj any) { c.claimChanged(obj) },
	}); err != nil {
		return nil, fmt.Errorf("protection controller: watching claims: %w", err)
	}

	podInformer := c.factory.Core().V1().Pods().Informer()
	if err := podInformer.AddIndexers(cache.Indexers{podClaimIndex: podClaimKeys}); err != nil {
		return nil, fmt.Errorf("protection controller: indexing pods: %w", err)
	}
	c.pods = podInformer.GetIndexer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.podChanged(nil, obj, false) },
		UpdateFunc: func(old, obj any) { c.podChanged(old, obj, false) },
		DeleteFunc: func(obj any) { c.podChanged(nil, obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("protection controller: watching pods: %w", err)
	}

	pvInformer := c.factory.Core().V1().PersistentVolumes()
	c.pvs = pvInformer.Lister()
	if _, err := pvInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.pvChanged,
		UpdateFunc: func(_, obj any) { c.pvChanged(obj) },
	}); err != nil {
		return nil, fmt.Errorf("protection controller: watching volumes: %w", err)
	}
	return c, nil
}

// Run protects claims and volumes until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.factory.Core().V1().PersistentVolumeClaims().Informer().HasSynced,
		c.factory.Core().V1().Pods().Informer().HasSynced, c.factory.Core().V1().PersistentVolumes().Informer().HasSynced) {
		c.shutDown()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for c.batchNextClaim() {
		}
	})
	for range c.workers {
		wg.Go(func() {
			for c.processNextNamespace(ctx) {
			}
		})
		wg.Go(func() {
			for c.processNextPV(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.shutDown()
	wg.Wait()
}

func (c *Controller) shutDown() {
	c.claimQueue.ShutDown()
	c.batches.namespaces.ShutDown()
	c.pvQueue.ShutDown()
}

// isDeletionCandidate: the object is being deleted and still carries f.
func isDeletionCandidate(om metav1.Object, f string) bool {
	return om.GetDeletionTimestamp() != nil && slices.Contains(om.GetFinalizers(), f)
}

// needsFinalizer: the object is not being deleted and lacks f.
func needsFinalizer(om metav1.Object, f string) bool {
	return om.GetDeletionTimestamp() == nil && !slices.Contains(om.GetFinalizers(), f)
}

// without is finalizers less every f, nil when none is left.
func without(finalizers []string, f string) []string {
	out := slices.DeleteFunc(slices.Clone(finalizers), func(s string) bool { return s == f })
	if len(out) == 0 {
		return nil
	}
	return out
}

// logFailure logs a failed sync, to be retried: quietly for a conflict (a
// concurrent write, retried with the latest object) or a shutdown.
func logFailure(ctx context.Context, log *slog.Logger, msg, kind, name string, err error) {
	switch {
	case ctx.Err() != nil:
	case apierrors.IsConflict(err):
		log.Debug(msg, kind, name, "err", err)
	default:
		log.Warn(msg, kind, name, "err", err)
	}
}
