// Package tainteviction evicts pods from nodes with NoExecute taints, as
// upstream's taint-eviction-controller does. A pod bound to a node with a
// NoExecute taint it does not tolerate is evicted at once. A pod that
// tolerates all of them is evicted when the first of the matching
// tolerationSeconds has run out, counted from the taint's timeAdded (from
// when the controller first saw the taint if it has none); tolerations
// without tolerationSeconds tolerate for ever. A pending eviction is
// cancelled when the taint goes, or the pod goes or comes to tolerate it for
// ever.
//
// Evicting adds the pod condition DisruptionTarget (DeletionByTaintManager),
// records a TaintManagerEviction event and deletes the pod with its default
// grace period; cancelling records a TaintManagerEviction event too.
//
// Design. Pod and node informers put pod keys on one queue; a single worker
// owns the pending evictions and decides from the caches each time, putting
// a key back with AddAfter for its deadline. Upstream counts
// tolerationSeconds from when it noticed the taint, and keeps a pending
// eviction's time when the tolerations or taints change; counting from
// timeAdded (the documented meaning) makes the deadline a function of the
// current objects, which survives restarts. As upstream, deleting a node
// leaves its pods' pending evictions in place.
package tainteviction

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component is the event source, as upstream names it.
const Component = "taint-eviction-controller"

// Upstream's event reason and the condition it adds before deleting.
const (
	EventReason      = "TaintManagerEviction"
	ConditionReason  = "DeletionByTaintManager"
	ConditionMessage = "Taint manager: deleting due to NoExecute taint"
)

// Controller is the NoExecute taint eviction controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	pods     corelisters.PodLister
	podIndex cache.Indexer
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced
	events   record.EventBroadcaster
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string] // namespace/name
	now      func() time.Time

	// pending is the worker's: pod key → its scheduled eviction.
	pending map[string]*eviction

	mu sync.Mutex
	// firstSeen: node → its NoExecute taints without timeAdded (with
	// TimeAdded nil) → when the controller first saw them.
	firstSeen map[string]map[corev1.Taint]time.Time
}

type eviction struct {
	uid     types.UID
	at      time.Time
	started bool // the "Marking for deletion" event is out
	done    bool // the pod is deleted
}

// Options tune the controller.
type Options struct {
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	factory := sharedinformers.Or(opts.Informers, client)
	podInformer := factory.Core().V1().Pods().Informer()
	nodeInformer := factory.Core().V1().Nodes().Informer()
	c := &Controller{
		log: log.With("controller", Component), client: client, factory: factory, now: time.Now,
		pods:     factory.Core().V1().Pods().Lister(),
		podIndex: podInformer.GetIndexer(),
		nodes:    factory.Core().V1().Nodes().Lister(),
		synced:   []cache.InformerSynced{podInformer.HasSynced, nodeInformer.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "noexec_taint_pod"}),
		pending:   map[string]*eviction{},
		firstSeen: map[string]map[corev1.Taint]time.Time{},
	}
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	if err := sharedinformers.IndexPodsByNode(podInformer); err != nil {
		return nil, err
	}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" {
				c.enqueue(obj)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Pod)
			n, ok2 := obj.(*corev1.Pod)
			if ok1 && ok2 && (o.UID != n.UID || o.Spec.NodeName != n.Spec.NodeName || !equality.Semantic.DeepEqual(o.Spec.Tolerations, n.Spec.Tolerations)) {
				c.enqueue(obj)
			}
		},
		DeleteFunc: c.enqueue,
	}); err != nil {
		return nil, err
	}
	if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if node, ok := obj.(*corev1.Node); ok && len(c.stamped(node)) > 0 {
				c.enqueueNode(node.Name)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := obj.(*corev1.Node)
			if !ok1 || !ok2 {
				return
			}
			c.stamped(n) // notes when taints without timeAdded were first seen
			if !equality.Semantic.DeepEqual(noExecute(o.Spec.Taints), noExecute(n.Spec.Taints)) {
				c.enqueueNode(n.Name)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if node, ok := obj.(*corev1.Node); ok {
				c.mu.Lock()
				delete(c.firstSeen, node.Name)
				c.mu.Unlock()
			}
		},
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run evicts pods until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.processNext(ctx) {
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			c.log.Debug("syncing pod", "pod", key, "err", err)
		}
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *Controller) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

func (c *Controller) enqueueNode(name string) {
	objs, _ := c.podIndex.ByIndex(sharedinformers.PodsByNode, name)
	for _, obj := range objs {
		c.enqueue(obj)
	}
}

// sync schedules, carries out or cancels the eviction of one pod.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := c.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.cancel(key)
		return nil
	}
	if err != nil {
		return err
	}
	e := c.pending[key]
	if e != nil && e.uid != pod.UID { // a new pod of the same name
		c.cancel(key)
		e = nil
	}
	if pod.Spec.NodeName == "" {
		c.cancel(key)
		return nil
	}
	var at time.Time
	evict := false
	node, err := c.nodes.Get(pod.Spec.NodeName)
	switch {
	case apierrors.IsNotFound(err):
		if e == nil {
			return nil
		}
		at, evict = e.at, true
	case err != nil:
		return err
	default:
		at, evict = evictionTime(pod.Spec.Tolerations, c.stamped(node), c.now())
	}
	if !evict {
		c.cancel(key)
		return nil
	}
	if e == nil {
		e = &eviction{uid: pod.UID}
		c.pending[key] = e
	}
	e.at = at
	if e.done {
		return nil
	}
	if wait := e.at.Sub(c.now()); wait > 0 {
		c.queue.AddAfter(key, wait)
		return nil
	}
	return c.evict(ctx, pod, e)
}

// cancel forgets a pod's eviction, with an event if it had not happened.
func (c *Controller) cancel(key string) {
	e := c.pending[key]
	if e == nil {
		return
	}
	delete(c.pending, key)
	if !e.done {
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: ns, Name: name, UID: e.uid}
		c.recorder.Eventf(ref, corev1.EventTypeNormal, EventReason, "Cancelling deletion of Pod %s", key)
	}
}

// errReplaced: the pod of that name is another one now.
var errReplaced = errors.New("pod replaced")

// evict marks the pod a disruption target and deletes it.
func (c *Controller) evict(ctx context.Context, pod *corev1.Pod, e *eviction) error {
	if !e.started {
		e.started = true
		c.log.Info("deleting pod", "pod", pod.Namespace+"/"+pod.Name, "node", pod.Spec.NodeName)
		ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
		c.recorder.Eventf(ref, corev1.EventTypeNormal, EventReason, "Marking for deletion Pod %s/%s", pod.Namespace, pod.Name)
	}
	pods := c.client.CoreV1().Pods(pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return errReplaced
		}
		cond := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: ConditionReason, Message: ConditionMessage}
		if !setCondition(&cur.Status, cond, c.now()) {
			return nil
		}
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err == nil {
		err = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
		if apierrors.IsConflict(err) { // only the uid precondition can fail
			err = errReplaced
		}
	}
	if err != nil && !apierrors.IsNotFound(err) && !errors.Is(err, errReplaced) {
		return err
	}
	e.done = true
	return nil
}

// evictionTime says whether and when a pod with these tolerations must
// leave a node with these taints: now for a NoExecute taint it does not
// tolerate; else the earliest timeAdded + tolerationSeconds of the
// tolerations used (the first that matches each taint, as upstream); never
// if none of those has tolerationSeconds.
func evictionTime(tolerations []corev1.Toleration, taints []corev1.Taint, now time.Time) (time.Time, bool) {
	var at time.Time
	found := false
	for _, taint := range noExecute(taints) {
		var used *corev1.Toleration
		for i := range tolerations {
			if tolerations[i].ToleratesTaint(&taint) {
				used = &tolerations[i]
				break
			}
		}
		if used == nil {
			return now, true
		}
		if used.TolerationSeconds == nil {
			continue
		}
		start := now
		if taint.TimeAdded != nil {
			start = taint.TimeAdded.Time
		}
		secs := min(max(*used.TolerationSeconds, 0), math.MaxInt64/int64(time.Second))
		if t := start.Add(time.Duration(secs) * time.Second); !found || t.Before(at) {
			at, found = t, true
		}
	}
	return at, found
}

// stamped is the node's NoExecute taints, those without timeAdded given the
// time the controller first saw them.
func (c *Controller) stamped(node *corev1.Node) []corev1.Taint {
	c.mu.Lock()
	defer c.mu.Unlock()
	taints := noExecute(node.Spec.Taints)
	old := c.firstSeen[node.Name]
	seen := map[corev1.Taint]time.Time{}
	for i, t := range taints {
		if t.TimeAdded != nil {
			continue
		}
		at, ok := old[t]
		if !ok {
			at = c.now()
		}
		seen[t] = at
		stamp := metav1.NewTime(at)
		taints[i].TimeAdded = &stamp
	}
	if len(seen) == 0 {
		delete(c.firstSeen, node.Name)
	} else {
		c.firstSeen[node.Name] = seen
	}
	return taints
}

func noExecute(taints []corev1.Taint) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range taints {
		if t.Effect == corev1.TaintEffectNoExecute {
			out = append(out, t)
		}
	}
	return out
}

// setCondition sets a pod condition as upstream's UpdatePodCondition does:
// the transition time changes with the status; it reports a change.
func setCondition(status *corev1.PodStatus, cond corev1.PodCondition, now time.Time) bool {
	cond.LastTransitionTime = metav1.NewTime(now)
	for i := range status.Conditions {
		old := &status.Conditions[i]
		if old.Type != cond.Type {
			continue
		}
		if old.Status == cond.Status {
			cond.LastTransitionTime = old.LastTransitionTime
		}
		if old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message {
			return false
		}
		*old = cond
		return true
	}
	status.Conditions = append(status.Conditions, cond)
	return true
}
