// Package nodeipam is upstream's node-ipam-controller with its range
// allocator: every Node without a pod CIDR gets the next free block of the
// cluster CIDR (10.244.0.0/16 cut into /24s unless configured), in
// spec.podCIDR and spec.podCIDRs. The node's agent gives its pods addresses
// from that block (internal/network). When the cluster CIDR is used up the
// node gets upstream's CIDRNotAvailable event and waits for a block to be
// freed by a deleted node.
package nodeipam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Component names the controller, as upstream.
const Component = "node-ipam-controller"

// Options tune the controller.
type Options struct {
	// ClusterCIDR is the range pods' addresses come from (10.244.0.0/16,
	// kubeadm's and flannel's usual choice).
	ClusterCIDR netip.Prefix
	// NodeMaskSize is the size of each node's block (24, upstream's
	// --node-cidr-mask-size).
	NodeMaskSize int
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// Controller assigns pod CIDRs to nodes.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	nodes    corelisters.NodeLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	events   record.EventBroadcaster
	recorder record.EventRecorder
	opts     Options

	mu      sync.Mutex
	pending map[netip.Prefix]string // given, not yet seen in the cache
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	if !opts.ClusterCIDR.IsValid() {
		opts.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if opts.NodeMaskSize == 0 {
		opts.NodeMaskSize = 24
	}
	if !opts.ClusterCIDR.Addr().Is4() || opts.NodeMaskSize < opts.ClusterCIDR.Bits() || opts.NodeMaskSize > 30 {
		return nil, fmt.Errorf("%s: node mask size %d does not fit cluster CIDR %s", Component, opts.NodeMaskSize, opts.ClusterCIDR)
	}
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	factory := sharedinformers.Or(opts.Informers, client)
	c := &Controller{
		log: log.With("controller", Component), client: client, factory: factory, opts: opts,
		nodes:   factory.Core().V1().Nodes().Lister(),
		synced:  factory.Core().V1().Nodes().Informer().HasSynced,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodeipam"}),
		pending: map[netip.Prefix]string{},
	}
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "cidrAllocator"})
	enqueue := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok && n.Spec.PodCIDR == "" {
			c.queue.Add(n.Name)
		}
	}
	_, err = factory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		// A deleted node frees its block: nodes still waiting may take it.
		DeleteFunc: func(any) { c.retryWaiting() },
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Run assigns CIDRs until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.events.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for {
		name, quit := c.queue.Get()
		if quit {
			return
		}
		if err := c.sync(ctx, name); err != nil {
			c.log.Warn("assigning pod CIDR", "node", name, "err", err)
			c.queue.AddRateLimited(name)
		} else {
			c.queue.Forget(name)
		}
		c.queue.Done(name)
	}
}

func (c *Controller) retryWaiting() {
	nodes, _ := c.nodes.List(labels.Everything())
	for _, n := range nodes {
		if n.Spec.PodCIDR == "" {
			c.queue.Add(n.Name)
		}
	}
}

func (c *Controller) sync(ctx context.Context, name string) error {
	node, err := c.nodes.Get(name)
	if err != nil || node.Spec.PodCIDR != "" {
		return nil // gone, or has one
	}
	block, ok := c.free(node.Name)
	if !ok {
		c.recorder.Eventf(&corev1.ObjectReference{Kind: "Node", Name: node.Name, UID: types.UID(node.Name)},
			corev1.EventTypeNormal, "CIDRNotAvailable", "Node %s status is now: %s", node.Name, "CIDRNotAvailable")
		return nil // retried when a node is deleted
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": block.String(), "podCIDRs": []string{block.String()}}})
	_, err = c.client.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		c.mu.Lock()
		delete(c.pending, block)
		c.mu.Unlock()
		return err
	}
	c.log.Info("assigned pod CIDR", "node", node.Name, "cidr", block)
	return nil
}

// free picks the first block no node has (nor was just given) and holds
// it for node.
func (c *Controller) free(node string) (netip.Prefix, bool) {
	used := map[netip.Prefix]bool{}
	nodes, _ := c.nodes.List(labels.Everything())
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.Name] = true
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if p, err := netip.ParsePrefix(s); err == nil {
				used[p.Masked()] = true
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, owner := range c.pending {
		if used[p] || !seen[owner] {
			delete(c.pending, p) // in the cache now, or its node is gone
			continue
		}
		if owner == node {
			return p, true
		}
		used[p] = true
	}
	size := uint32(1) << (c.opts.NodeMaskSize - c.opts.ClusterCIDR.Bits())
	base := c.opts.ClusterCIDR.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	step := uint32(1) << (32 - c.opts.NodeMaskSize)
	for i := uint32(0); i < size; i++ {
		v := start + i*step
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), c.opts.NodeMaskSize)
		if !used[p] {
			c.pending[p] = node
			return p, true
		}
	}
	return netip.Prefix{}, false
}
