// Package podgc is upstream's pod garbage collector
// (pod-garbage-collector-controller). Every period (20 s) it force-deletes,
// with a zero grace period:
//
//   - pods bound to a node that does not exist, once the node has been
//     missing for the quarantine (40 s) and a live GET confirms it; they get
//     the DisruptionTarget condition "DeletionByPodGC" first;
//   - terminating pods on a node that is not Ready and carries the
//     node.kubernetes.io/out-of-service taint;
//   - terminating pods that were never scheduled;
//   - the oldest terminated (Succeeded or Failed) pods beyond the threshold
//     (12,500), evicted ones first.
//
// As upstream, a pod not yet Succeeded or Failed is marked Failed before it
// is deleted, so that a pod nobody runs any more does not stay Running.
package podgc

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controller, as upstream.
const Component = "pod-garbage-collector-controller"

// The condition upstream adds to a pod whose node is gone.
const (
	ConditionReason  = "DeletionByPodGC"
	ConditionMessage = "PodGC: node no longer exists"
)

// Options tune the controller; zero values are upstream's defaults.
type Options struct {
	// Period is how often pods are collected (20 s).
	Period time.Duration
	// Quarantine is how long a node must be missing before its pods go
	// (40 s).
	Quarantine time.Duration
	// TerminatedThreshold is how many terminated pods may remain
	// (--terminated-pod-gc-threshold, 12500); negative keeps them all.
	TerminatedThreshold int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller is the pod garbage collector.
type Controller struct {
	log     *slog.Logger
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	pods    corelisters.PodLister
	nodes   corelisters.NodeLister
	synced  []cache.InformerSynced
	// missing holds the names of nodes in quarantine.
	missing workqueue.TypedDelayingInterface[string]
	opts    Options
	now     func() time.Time
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	if opts.Period == 0 {
		opts.Period = 20 * time.Second
	}
	if opts.Quarantine == 0 {
		opts.Quarantine = 40 * time.Second
	}
	if opts.TerminatedThreshold == 0 {
		opts.TerminatedThreshold = 12500
	}
	factory := sharedinformers.Or(opts.Informers, client)
	return &Controller{
		log: log.With("controller", Component), client: client, factory: factory, opts: opts, now: time.Now,
		pods:    factory.Core().V1().Pods().Lister(),
		nodes:   factory.Core().V1().Nodes().Lister(),
		synced:  []cache.InformerSynced{factory.Core().V1().Pods().Informer().HasSynced, factory.Core().V1().Nodes().Informer().HasSynced},
		missing: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "orphaned_pods_nodes"}),
	}, nil
}

// Run collects pods every period until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.missing.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	t := time.NewTicker(c.opts.Period)
	defer t.Stop()
	for {
		c.collect(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Controller) collect(ctx context.Context) {
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	if c.opts.TerminatedThreshold > 0 {
		c.collectTerminated(ctx, pods)
	}
	c.collectOutOfService(ctx, pods)
	c.collectOrphaned(ctx, pods, nodes)
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil && pod.Spec.NodeName == "" {
			c.forceDelete(ctx, pod, nil, "unscheduled terminating")
		}
	}
}

// collectTerminated deletes the oldest terminated pods beyond the threshold.
func (c *Controller) collectTerminated(ctx context.Context, pods []*corev1.Pod) {
	var done []*corev1.Pod
	for _, pod := range pods {
		if p := pod.Status.Phase; p != corev1.PodPending && p != corev1.PodRunning && p != corev1.PodUnknown {
			done = append(done, pod)
		}
	}
	excess := len(done) - c.opts.TerminatedThreshold
	if excess <= 0 {
		return
	}
	evicted := func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "Evicted" }
	slices.SortFunc(done, func(a, b *corev1.Pod) int {
		if ea, eb := evicted(a), evicted(b); ea != eb {
			if ea {
				return -1
			}
			return 1
		}
		if n := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); n != 0 {
			return n
		}
		return cmp.Compare(a.Name, b.Name)
	})
	for _, pod := range done[:excess] {
		c.forceDelete(ctx, pod, nil, "terminated")
	}
}

// collectOutOfService deletes terminating pods on nodes that are not Ready
// and are tainted out of service.
func (c *Controller) collectOutOfService(ctx context.Context, pods []*corev1.Pod) {
	for _, pod := range pods {
		if pod.DeletionTimestamp == nil || pod.Spec.NodeName == "" {
			continue
		}
		node, err := c.nodes.Get(pod.Spec.NodeName)
		if err != nil || nodeReady(node) || !slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeOutOfService }) {
			continue
		}
		c.forceDelete(ctx, pod, nil, "terminating on an out-of-service node")
	}
}

// collectOrphaned deletes the pods of nodes missing since the quarantine.
func (c *Controller) collectOrphaned(ctx context.Context, pods []*corev1.Pod, nodes []*corev1.Node) {
	exists := map[string]bool{}
	for _, node := range nodes {
		exists[node.Name] = true
	}
	for _, pod := range pods {
		if pod.Spec.NodeName != "" && !exists[pod.Spec.NodeName] {
			c.missing.AddAfter(pod.Spec.NodeName, c.opts.Quarantine) // the earliest stays
		}
	}
	gone := map[string]bool{}
	for c.missing.Len() > 0 {
		name, quit := c.missing.Get()
		if quit {
			return
		}
		if !exists[name] {
			_, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				gone[name] = true
			case err != nil && ctx.Err() == nil:
				c.log.Warn("getting node", "node", name, "err", err) // back on the next pass if still needed
			}
		}
		c.missing.Done(name)
	}
	cond := &corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: ConditionReason, Message: ConditionMessage}
	for _, pod := range pods {
		if gone[pod.Spec.NodeName] {
			c.forceDelete(ctx, pod, cond, "orphaned")
		}
	}
}

// forceDelete marks the pod Failed (with cond, if any) unless it is
// terminated, then deletes it with a zero grace period.
func (c *Controller) forceDelete(ctx context.Context, pod *corev1.Pod, cond *corev1.PodCondition, why string) {
	pods := c.client.CoreV1().Pods(pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil
		}
		next := pod.DeepCopy()
		next.Status.Phase = corev1.PodFailed
		if cond != nil {
			setCondition(&next.Status, *cond, c.now())
		}
		_, err := pods.UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			if cur, gerr := pods.Get(ctx, pod.Name, metav1.GetOptions{}); gerr == nil && cur.UID == pod.UID {
				pod = cur
			}
		}
		return err
	})
	if err == nil {
		err = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
	}
	switch {
	case err == nil:
		c.log.Info("force-deleted pod", "pod", pod.Namespace+"/"+pod.Name, "why", why)
	case apierrors.IsNotFound(err) || ctx.Err() != nil:
	default:
		c.log.Warn("force-deleting pod", "pod", pod.Namespace+"/"+pod.Name, "why", why, "err", err)
	}
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setCondition sets a pod condition as upstream's UpdatePodCondition does:
// the transition time changes with the status.
func setCondition(status *corev1.PodStatus, cond corev1.PodCondition, now time.Time) {
	cond.LastTransitionTime = metav1.NewTime(now)
	for i := range status.Conditions {
		if old := &status.Conditions[i]; old.Type == cond.Type {
			if old.Status == cond.Status {
				cond.LastTransitionTime = old.LastTransitionTime
			}
			*old = cond
			return
		}
	}
	status.Conditions = append(status.Conditions, cond)
}
