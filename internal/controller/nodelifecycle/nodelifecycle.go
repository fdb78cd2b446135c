// Package nodelifecycle watches node heartbeats, as upstream's node
// lifecycle controller does: a node whose agent stopped renewing its Lease
// (and posting status) for longer than the grace period gets its conditions
// set to Unknown ("Kubelet stopped posting node status.") and the
// node.kubernetes.io/unreachable taints, so the scheduler places nothing
// more there; a node that reports Ready=False gets the not-ready taint. Both
// go away when the node is Ready again.
//
// The pods of a node whose Ready condition is Unknown or False are marked
// not Ready, as upstream's MarkPodsNotReady: their Ready condition becomes
// False (reason and message kept, ContainersReady untouched) and each gets
// a Warning NodeNotReady event. Evicting them is the NoExecute taints' work
// (controller/tainteviction); pods of deleted nodes go by controller/podgc.
package nodelifecycle

import (
	"context"
	"errors"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component is the event source, as upstream names it.
const Component = "node-controller"

// Taints upstream puts on nodes by condition.
const (
	TaintUnreachable = "node.kubernetes.io/unreachable"
	TaintNotReady    = "node.kubernetes.io/not-ready"
)

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// GracePeriod is how long a node may go without a heartbeat before it
	// is Unknown (--node-monitor-grace-period, 50 s).
	GracePeriod time.Duration
	// Period is how often nodes are checked (--node-monitor-period, 5 s).
	Period time.Duration
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the node lifecycle controller.
type Controller struct {
	log     *slog.Logger
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	// leaseFactory watches kube-node-lease only.
	leaseFactory informers.SharedInformerFactory
	nodes        corelisters.NodeLister
	leases       coordinationlisters.LeaseLister
	pods         cache.Indexer // by sharedinformers.PodsByNode
	synced       []cache.InformerSynced
	events       record.EventBroadcaster
	recorder     record.EventRecorder
	opts         Options
	now          func() time.Time
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	if opts.GracePeriod == 0 {
		opts.GracePeriod = 50 * time.Second
	}
	if opts.Period == 0 {
		opts.Period = 5 * time.Second
	}
	factory := sharedinformers.Or(opts.Informers, client)
	leases := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(corev1.NamespaceNodeLease))
	pods := factory.Core().V1().Pods().Informer()
	if err := sharedinformers.IndexPodsByNode(pods); err != nil {
		return nil, err
	}
	c := &Controller{
		log: log.With("controller", Component), client: client, factory: factory, opts: opts, now: time.Now,
		nodes:  factory.Core().V1().Nodes().Lister(),
		leases: leases.Coordination().V1().Leases().Lister(),
		pods:   pods.GetIndexer(),
		synced: []cache.InformerSynced{factory.Core().V1().Nodes().Informer().HasSynced, leases.Coordination().V1().Leases().Informer().HasSynced, pods.HasSynced},
	}
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	c.leaseFactory = leases
	return c, nil
}

// Run checks nodes every period until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	c.leaseFactory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.leaseFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	t := time.NewTicker(c.opts.Period)
	defer t.Stop()
	for {
		nodes, _ := c.nodes.List(labels.Everything())
		for _, node := range nodes {
			if err := c.check(ctx, node); err != nil && ctx.Err() == nil {
				c.log.Debug("checking node", "node", node.Name, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lastHeartbeat is the newer of the lease's renew time and the Ready
// condition's heartbeat; a node that never reported counts from its
// creation.
func (c *Controller) lastHeartbeat(node *corev1.Node) time.Time {
	last := node.CreationTimestamp.Time
	if lease, err := c.leases.Leases(corev1.NamespaceNodeLease).Get(node.Name); err == nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(last) {
		last = lease.Spec.RenewTime.Time
	}
	if ready := condition(node, corev1.NodeReady); ready != nil && ready.LastHeartbeatTime.After(last) {
		last = ready.LastHeartbeatTime.Time
	}
	return last
}

// check brings one node's conditions and taints in line with its heartbeat.
func (c *Controller) check(ctx context.Context, node *corev1.Node) error {
	now := c.now()
	next := node.DeepCopy()
	lapsed := now.Sub(c.lastHeartbeat(node)) > c.opts.GracePeriod
	if lapsed {
		stamp := metav1.NewTime(now.Truncate(time.Second))
		types := []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure}
		for _, t := range types {
			cond := condition(next, t)
			if cond == nil {
				next.Status.Conditions = append(next.Status.Conditions, corev1.NodeCondition{
					Type: t, Status: corev1.ConditionUnknown, Reason: "NodeStatusNeverUpdated", Message: "Kubelet never posted node status.",
					LastHeartbeatTime: node.CreationTimestamp, LastTransitionTime: stamp,
				})
				continue
			}
			if cond.Status != corev1.ConditionUnknown {
				cond.Status, cond.Reason, cond.Message, cond.LastTransitionTime = corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", stamp
			}
		}
		if !equalConditions(node, next) {
			if _, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil {
				return err
			}
			c.recorder.Eventf(&corev1.ObjectReference{Kind: "Node", Name: node.Name, UID: node.UID}, corev1.EventTypeNormal, "NodeNotReady", "Node %s status is now: NodeNotReady", node.Name)
			// Taints follow on the next pass, from the new status.
			return c.markPodsNotReady(ctx, node.Name)
		}
	}
	ready := condition(node, corev1.NodeReady)
	var podErr error
	if ready != nil && ready.Status != corev1.ConditionTrue {
		podErr = c.markPodsNotReady(ctx, node.Name)
	}
	want := map[string]bool{}
	switch {
	case ready == nil:
		// A node that never posted status is given the grace period
		// (from its creation) before it counts as unreachable, as
		// upstream gives nodes a startup grace period.
	case ready.Status == corev1.ConditionUnknown:
		want[TaintUnreachable] = true
	case ready.Status == corev1.ConditionFalse:
		want[TaintNotReady] = true
	}
	taints, changed := reconcileTaints(node.Spec.Taints, want, now)
	if !changed {
		return podErr
	}
	next = node.DeepCopy()
	next.Spec.Taints = taints
	_, err := c.client.CoreV1().Nodes().Update(ctx, next, metav1.UpdateOptions{})
	return errors.Join(podErr, err)
}

// markPodsNotReady sets the Ready condition of the node's pods to False, as
// upstream's MarkPodsNotReady: only the status (and transition time)
// changes, and each pod changed gets a Warning NodeNotReady event. Pods
// already not Ready are left alone, so this runs on every pass.
func (c *Controller) markPodsNotReady(ctx context.Context, nodeName string) error {
	objs, err := c.pods.ByIndex(sharedinformers.PodsByNode, nodeName)
	if err != nil {
		return err
	}
	var errs []error
	for _, obj := range objs {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			continue
		}
		i := podReady(pod)
		if i < 0 || pod.Status.Conditions[i].Status == corev1.ConditionFalse {
			continue
		}
		next := pod.DeepCopy()
		next.Status.Conditions[i].Status = corev1.ConditionFalse
		next.Status.Conditions[i].LastTransitionTime = metav1.NewTime(c.now())
		if _, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		c.recorder.Event(next, corev1.EventTypeWarning, "NodeNotReady", "Node is not ready")
	}
	return errors.Join(errs...)
}

func podReady(pod *corev1.Pod) int {
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return i
		}
	}
	return -1
}

// reconcileTaints keeps taints other than ours, and ours exactly as wanted
// (NoSchedule and NoExecute for each).
func reconcileTaints(cur []corev1.Taint, want map[string]bool, now time.Time) ([]corev1.Taint, bool) {
	var out []corev1.Taint
	have := map[corev1.Taint]bool{}
	changed := false
	for _, t := range cur {
		if t.Key == TaintUnreachable || t.Key == TaintNotReady {
			if !want[t.Key] {
				changed = true
				continue
			}
			have[corev1.Taint{Key: t.Key, Effect: t.Effect}] = true
		}
		out = append(out, t)
	}
	for key := range want {
		for _, effect := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
			if have[corev1.Taint{Key: key, Effect: effect}] {
				continue
			}
			t := corev1.Taint{Key: key, Effect: effect}
			if effect == corev1.TaintEffectNoExecute {
				added := metav1.NewTime(now.Truncate(time.Second))
				t.TimeAdded = &added
			}
			out = append(out, t)
			changed = true
		}
	}
	return out, changed
}

func condition(node *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

func equalConditions(a, b *corev1.Node) bool {
	if len(a.Status.Conditions) != len(b.Status.Conditions) {
		return false
	}
	for i := range a.Status.Conditions {
		x, y := a.Status.Conditions[i], b.Status.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason {
			return false
		}
	}
	return true
}
