package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
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

	"github.com/moorage/moorage/internal/csi"

	"github.com/moorage/moorage/internal/controller/queue"
)

// Mode says which claims and volumes a provisioner handles.
type Mode int

const (
	// Central: the driver's controller service is reachable here and its
	// volumes are not tied to this node. Every claim of the driver is
	// handled here; run one per driver.
	Central Mode = iota
	// NodeLocal: external-provisioner's node deployment. One provisioner
	// per node, next to the driver; it handles the claims whose
	// selected-node annotation names its node, takes Immediate claims by
	// writing its node into that annotation (see own), and deletes only
	// volumes whose node affinity matches its node.
	NodeLocal
)

func (m Mode) String() string {
	if m == NodeLocal {
		return "NodeLocal"
	}
	return "Central"
}

// Options configure a Controller. Zero values get upstream's defaults.
type Options struct {
	Mode Mode
	// NodeName is this node; required in NodeLocal mode.
	NodeName string
	// DriverName is the provisioner name that claims' and classes'
	// annotations must name; "" means the driver's GetPluginInfo name.
	DriverName string
	// JournalDir keeps the record of every CreateVolume whose PV is not
	// created yet (see the package doc). Required; it must survive
	// restarts, like the agent's other state.
	JournalDir string
	// TopologyKeys are the driver's topology keys (node label keys), used
	// for a node whose CSINode object does not list the driver.
	TopologyKeys []string
	// StrictTopology sends only the selected node's topology as requisite
	// (external-provisioner's --strict-topology). NodeLocal implies it.
	StrictTopology bool
	// Workers per queue (claims, volumes); 0 means 4.
	Workers int
	// RetryStart and RetryMax bound the per-object exponential back-off
	// after an error (external-provisioner's --retry-interval-start and
	// --retry-interval-max); 0 means 1 s and 5 min.
	RetryStart, RetryMax time.Duration
	// ImmediateDelay is how long, per rank, a node-local provisioner waits
	// before taking an Immediate claim (see own); 0 means 10 s.
	ImmediateDelay time.Duration
	// Resync is how often every object is looked at again; 0 means 15 min
	// (sig-storage-lib-external-provisioner's default).
	Resync time.Duration
}

// Annotations and finalizers, as upstream names them.
const (
	annStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
	annSelectedNode           = "volume.kubernetes.io/selected-node"
	annProvisionedBy          = "pv.kubernetes.io/provisioned-by"
	annDeletionSecretName     = "volume.kubernetes.io/provisioner-deletion-secret-name"
	annDeletionSecretNS       = "volume.kubernetes.io/provisioner-deletion-secret-namespace"
	annModifySecretName       = "volume.kubernetes.io/controller-modify-secret-name"
	annModifySecretNS         = "volume.kubernetes.io/controller-modify-secret-namespace"
	finalizerPV               = "external-provisioner.volume.kubernetes.io/finalizer"
	// attrIdentity is the volume attribute external-provisioner adds to
	// every PV it creates.
	attrIdentity = "storage.kubernetes.io/csiProvisionerIdentity"
	// volumePrefix is external-provisioner's --volume-name-prefix default;
	// the whole claim uid follows (--volume-name-uuid-length=-1).
	volumePrefix = "pvc"
)

// Controller provisions and deletes the volumes of one CSI driver.
type Controller struct {
	log    *slog.Logger
	client kubernetes.Interface
	csi    *csi.Client
	opts   Options

	// Set by Run from the driver.
	driver     string
	identity   string
	pluginCaps csi.PluginCapabilitySet
	ctrlCaps   csi.ControllerCapabilitySet
	recorder   record.EventRecorder

	factory    informers.SharedInformerFactory
	claimIndex cache.Indexer
	pvLister   corelisters.PersistentVolumeLister
	classes    storagelisters.StorageClassLister
	csiNodes   storagelisters.CSINodeLister
	nodes      corelisters.NodeLister
	synced     []cache.InformerSynced

	claims  workqueue.TypedRateLimitingInterface[types.UID]
	volumes workqueue.TypedRateLimitingInterface[string]
	journal *journal

	mu          sync.Mutex
	params      map[types.UID]parsedClass // by StorageClass uid
	deleted     map[types.UID]bool        // PVs whose DeleteVolume succeeded
	firstSeen   map[types.UID]time.Time   // node-local Immediate claims
	yieldedTill map[types.UID]time.Time   // node-local Immediate claims given up

	// Test hooks.
	afterCreateVolume func(*corev1.PersistentVolumeClaim) error
	volumeSynced      func(*corev1.PersistentVolume, error)
	now               func() time.Time
}

type parsedClass struct {
	resourceVersion string
	params          *classParams
	err             error
}

const uidIndex = "uid"

// New builds a provisioner for the driver behind client. It does not call
// the driver; Run does.
func New(cfg *rest.Config, client *csi.Client, log *slog.Logger, opts Options) (*Controller, error) {
	if client == nil {
		return nil, errors.New("provisioner: no CSI client")
	}
	if opts.Mode == NodeLocal && opts.NodeName == "" {
		return nil, errors.New("provisioner: NodeLocal mode needs Options.NodeName")
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
	if opts.ImmediateDelay == 0 {
		opts.ImmediateDelay = 10 * time.Second
	}
	if opts.Resync == 0 {
		opts.Resync = 15 * time.Minute
	}
	j, err := openJournal(opts.JournalDir)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "csi-provisioner"))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Controller{
		log:         log.With("controller", "provisioner", "mode", opts.Mode.String()),
		client:      kube,
		csi:         client,
		opts:        opts,
		journal:     j,
		factory:     informers.NewSharedInformerFactory(kube, opts.Resync),
		claims:      workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](opts.RetryStart, opts.RetryMax), workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "claims"}),
		volumes:     workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RetryStart, opts.RetryMax), workqueue.TypedRateLimitingQueueConfig[string]{Name: "volumes"}),
		params:      map[types.UID]parsedClass{},
		deleted:     map[types.UID]bool{},
		firstSeen:   map[types.UID]time.Time{},
		yieldedTill: map[types.UID]time.Time{},
		now:         time.Now,

		afterCreateVolume: crashHook(), // crashpoint.go
	}
	claims := c.factory.Core().V1().PersistentVolumeClaims()
	pvs := c.factory.Core().V1().PersistentVolumes()
	classes := c.factory.Storage().V1().StorageClasses()
	csiNodes := c.factory.Storage().V1().CSINodes()
	nodes := c.factory.Core().V1().Nodes()
	if err := claims.Informer().AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		claim, ok := obj.(*corev1.PersistentVolumeClaim)
		if !ok {
			return nil, nil
		}
		return []string{string(claim.UID)}, nil
	}}); err != nil {
		return nil, err
	}
	c.claimIndex = claims.Informer().GetIndexer()
	c.pvLister, c.classes, c.csiNodes, c.nodes = pvs.Lister(), classes.Lister(), csiNodes.Lister(), nodes.Lister()
	c.synced = []cache.InformerSynced{claims.Informer().HasSynced, pvs.Informer().HasSynced, classes.Informer().HasSynced, csiNodes.Informer().HasSynced, nodes.Informer().HasSynced}
	for _, reg := range []func() error{
		func() error {
			_, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
				AddFunc:    c.claimChanged,
				UpdateFunc: func(_, obj any) { c.claimChanged(obj) },
				DeleteFunc: c.claimDeleted,
			})
			return err
		},
		func() error {
			_, err := pvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
				AddFunc:    c.volumeChanged,
				UpdateFunc: func(_, obj any) { c.volumeChanged(obj) },
				DeleteFunc: c.volumeDeleted,
			})
			return err
		},
		func() error {
			_, err := classes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
				AddFunc:    c.classChanged,
				UpdateFunc: func(_, obj any) { c.classChanged(obj) },
				DeleteFunc: c.classDeleted,
			})
			return err
		},
	} {
		if err := reg(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run asks the driver who it is, then provisions and deletes until ctx is
// done. It waits (retrying with back-off) for a driver that is not ready.
func (c *Controller) Run(ctx context.Context) {
	defer c.claims.ShutDown()
	defer c.volumes.ShutDown()
	if err := c.connect(ctx); err != nil {
		return
	}
	host := c.opts.NodeName
	if host == "" {
		host, _ = os.Hostname()
	}
	// Upstream's identity: start time, a random number, the driver and,
	// in node deployment, the node.
	c.identity = strconv.FormatInt(time.Now().UnixMilli(), 10) + "-" + strconv.Itoa(rand.IntN(10000)) + "-" + c.driver
	if c.opts.Mode == NodeLocal {
		c.identity += "-" + c.opts.NodeName
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer events.Shutdown()
	// sig-storage-lib-external-provisioner's event source: <driver>_<host>.
	c.recorder = events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: c.driver + "_" + host})

	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	// Every journal record is looked at, whether or not its claim exists:
	// this is how a crash between CreateVolume and the PV is healed.
	for _, r := range c.journal.all() {
		c.claims.Add(r.Claim.UID)
	}
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() { queue.Work(ctx, c.claims, c.syncClaim, syncFailed[types.UID](c.log)) })
		wg.Go(func() { queue.Work(ctx, c.volumes, c.syncVolume, syncFailed[string](c.log)) })
	}
	<-ctx.Done()
	c.claims.ShutDown()
	c.volumes.ShutDown()
	wg.Wait()
}

// connect learns the driver's name and capabilities, retrying until the
// driver answers or ctx ends.
func (c *Controller) connect(ctx context.Context) error {
	if err := csi.RetryUntilReady(ctx, c.log, c.opts.RetryStart, c.opts.RetryMax, c.describeDriver); err != nil {
		return err
	}
	c.log = c.log.With("driver", c.driver)
	return nil
}

func (c *Controller) describeDriver(ctx context.Context) error {
	name, err := c.csi.DriverName(ctx, c.opts.DriverName)
	if err != nil {
		return err
	}
	pluginCaps, err := c.csi.PluginCapabilities(ctx)
	if err != nil {
		return err
	}
	ctrlCaps, err := c.csi.ControllerCapabilities(ctx)
	if err != nil {
		return err
	}
	c.driver, c.pluginCaps, c.ctrlCaps = name, pluginCaps, ctrlCaps
	return nil
}

func syncFailed[K comparable](log *slog.Logger) func(K, error) {
	return func(key K, err error) { log.Info("sync failed; retrying with back-off", "key", key, "err", err) }
}

// provisionerOf is the provisioner a claim was handed to by the PV
// controller (the GA annotation, else the beta one).
func provisionerOf(claim *corev1.PersistentVolumeClaim) string {
	if p, ok := claim.Annotations[annStorageProvisioner]; ok {
		return p
	}
	return claim.Annotations[annBetaStorageProvisioner]
}

func volumeName(uid types.UID) string { return volumePrefix + "-" + string(uid) }

func (c *Controller) claimChanged(obj any) {
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	if provisionerOf(claim) == c.driver || c.journal.has(volumeName(claim.UID)) {
		c.claims.Add(claim.UID)
	}
}

func (c *Controller) claimDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	c.mu.Lock()
	delete(c.firstSeen, claim.UID)
	delete(c.yieldedTill, claim.UID)
	c.mu.Unlock()
	if c.journal.has(volumeName(claim.UID)) {
		c.claims.Add(claim.UID)
	}
}

func (c *Controller) volumeChanged(obj any) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if ok && pv.Annotations[annProvisionedBy] == c.driver {
		c.volumes.Add(pv.Name)
	}
}

func (c *Controller) volumeDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if pv, ok := obj.(*corev1.PersistentVolume); ok {
		c.mu.Lock()
		delete(c.deleted, pv.UID)
		c.mu.Unlock()
	}
}

// classChanged: claims waiting for their class may go on.
func (c *Controller) classChanged(obj any) {
	class, ok := obj.(*storagev1.StorageClass)
	if !ok || class.Provisioner != c.driver {
		return
	}
	for _, obj := range c.claimIndex.List() {
		if claim, ok := obj.(*corev1.PersistentVolumeClaim); ok && claim.Spec.VolumeName == "" && provisionerOf(claim) == c.driver {
			c.claims.Add(claim.UID)
		}
	}
}

func (c *Controller) classDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if class, ok := obj.(*storagev1.StorageClass); ok {
		c.mu.Lock()
		delete(c.params, class.UID)
		c.mu.Unlock()
	}
}

func (c *Controller) claimByUID(uid types.UID) *corev1.PersistentVolumeClaim {
	objs, err := c.claimIndex.ByIndex(uidIndex, string(uid))
	if err != nil || len(objs) == 0 {
		return nil
	}
	claim, _ := objs[0].(*corev1.PersistentVolumeClaim)
	return claim
}

// classParams parses a class's parameters once per class version.
func (c *Controller) classParams(class *storagev1.StorageClass) (*classParams, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.params[class.UID]; ok && p.resourceVersion == class.ResourceVersion {
		return p.params, p.err
	}
	p, err := parseClassParams(class.Parameters)
	c.params[class.UID] = parsedClass{resourceVersion: class.ResourceVersion, params: p, err: err}
	return p, err
}

// rpcText is an error as upstream words it in events: a driver's error is
// its gRPC status ("rpc error: code = ... desc = ..."), without our
// operation prefix.
func rpcText(err error) string {
	var e *csi.Error
	if errors.As(err, &e) {
		return e.Err.Error()
	}
	return err.Error()
}

func (c *Controller) strictTopology() bool {
	return c.opts.StrictTopology || c.opts.Mode == NodeLocal
}

func (c *Controller) checkCapabilities() error {
	if !c.pluginCaps.ControllerService {
		return fmt.Errorf("CSI driver does not support dynamic provisioning: plugin CONTROLLER_SERVICE capability is not reported")
	}
	if !c.ctrlCaps.CreateDeleteVolume {
		return fmt.Errorf("CSI driver does not support dynamic provisioning: controller CREATE_DELETE_VOLUME capability is not reported")
	}
	return nil
}
