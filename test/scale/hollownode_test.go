package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

// The kubelet's defaults that a hollow node keeps.
const (
	hollowLeaseDuration = 40 * time.Second
	hollowLeaseRenew    = 10 * time.Second // a quarter of the duration
	hollowMaxPods       = 110
	hollowWorkers       = 2 // pod syncs at once, per node
)

// hollowNode is a node agent that starts no containers, as kubemark's hollow
// kubelet: it talks to the API server exactly as a kubelet does — its own
// client and connection, its Node with a Ready condition, a Lease in
// kube-node-lease renewed every 10 s, an informer on its own Node and one on
// the pods bound to it (field selector spec.nodeName) — and reports every
// pod bound to it Running and Ready at once, with an address from the
// node's pod CIDR, by a strategic-merge patch of pods/status as the
// kubelet's status manager sends. A pod being deleted (deletionTimestamp
// set) is removed with grace period 0, as the kubelet does once its
// containers have stopped. It writes no events (a kubelet writes three or
// four for each pod it starts).
type hollowNode struct {
	name   string
	client kubernetes.Interface

	pods    corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	cidr    chan netip.Prefix // the pod CIDR, once the server assigns it
	running atomic.Int64      // pods reported Running
	deleted atomic.Int64      // pods removed after their deletion began
	errs    atomic.Int64      // failed writes (retried)
	lastErr atomic.Pointer[error]

	mu      sync.Mutex
	ips     map[types.UID]netip.Addr
	free    []netip.Addr
	nextIP  netip.Addr
	podCIDR netip.Prefix
}

// newHollowNode builds a hollow node on its own client of the server.
func newHollowNode(cfg *rest.Config, name string) (*hollowNode, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "hollow-kubelet/" + name
	// client-go shares one transport (and so one HTTP/2 connection) between
	// clients of equal configuration, unless each has its own dialer.
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	cfg.Dial = dialer.DialContext
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &hollowNode{
		name: name, client: client,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		cidr: make(chan netip.Prefix, 1),
		ips:  map[types.UID]netip.Addr{},
	}, nil
}

// run registers the node and serves it until ctx is done; registered is
// told the outcome of registration (nil once the node has its pod CIDR and
// its informers have synced).
func (h *hollowNode) run(ctx context.Context, registered chan<- error) {
	defer h.queue.ShutDown()
	if err := h.register(ctx); err != nil {
		registered <- err
		return
	}
	if err := h.renewLease(ctx); err != nil {
		registered <- fmt.Errorf("%s: lease: %w", h.name, err)
		return
	}
	nodes := informers.NewSharedInformerFactoryWithOptions(h.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector(metav1.ObjectNameField, h.name).String()
	}))
	pods := informers.NewSharedInformerFactoryWithOptions(h.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", h.name).String()
	}))
	nodeInf := nodes.Core().V1().Nodes().Informer()
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    h.nodeChanged,
		UpdateFunc: func(_, cur any) { h.nodeChanged(cur) },
	}); err != nil {
		registered <- err
		return
	}
	podInf := pods.Core().V1().Pods().Informer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			h.queue.Add(key)
		}
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, cur any) { enqueue(cur) }, DeleteFunc: h.podGone,
	}); err != nil {
		registered <- err
		return
	}
	h.pods = pods.Core().V1().Pods().Lister()
	nodes.Start(ctx.Done())
	pods.Start(ctx.Done())
	defer nodes.Shutdown()
	defer pods.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nodeInf.HasSynced, podInf.HasSynced) {
		registered <- ctx.Err()
		return
	}
	select {
	case p := <-h.cidr:
		h.mu.Lock()
		h.podCIDR, h.nextIP = p, p.Addr().Next().Next() // .1 is the node's bridge
		h.mu.Unlock()
	case <-ctx.Done():
		registered <- ctx.Err()
		return
	}
	registered <- nil

	var wg sync.WaitGroup
	for range hollowWorkers {
		wg.Go(func() {
			for h.work(ctx) {
			}
		})
	}
	t := time.NewTicker(hollowLeaseRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.queue.ShutDown()
			wg.Wait()
			return
		case <-t.C:
			if err := h.renewLease(ctx); err != nil && ctx.Err() == nil {
				h.fail(err)
			}
		}
	}
}

// register creates the Node as a kubelet describes it: Ready, with room for
// 110 pods.
func (h *hollowNode) register(ctx context.Context) error {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("4"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		corev1.ResourcePods:             *resource.NewQuantity(hollowMaxPods, resource.DecimalSI),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: h.name,
			Labels: map[string]string{
				"kubernetes.io/hostname": h.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"moorage.io/hollow": "true",
			},
		},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity.DeepCopy(),
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
			},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: h.name}},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion: "v1.33.0-hollow", ContainerRuntimeVersion: "hollow://1",
				OperatingSystem: "linux", Architecture: "amd64", OSImage: "hollow",
			},
		},
	}
	created, err := h.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("registering %s: %w", h.name, err)
	}
	if len(created.Status.Conditions) == 0 {
		return fmt.Errorf("registering %s: the created Node has no status (a Node's create keeps it, as upstream)", h.name)
	}
	return nil
}

// renewLease creates or renews the node's Lease, the kubelet's heartbeat.
func (h *hollowNode) renewLease(ctx context.Context) error {
	leases := h.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, h.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: h.name, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(h.name), LeaseDurationSeconds: ptr.To(int32(hollowLeaseDuration / time.Second)), RenewTime: &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

func (h *hollowNode) nodeChanged(obj any) {
	node, ok := obj.(*corev1.Node)
	if !ok || node.Spec.PodCIDR == "" {
		return
	}
	p, err := netip.ParsePrefix(node.Spec.PodCIDR)
	if err != nil {
		return
	}
	select {
	case h.cidr <- p:
	default: // told already
	}
}

// podGone releases a removed pod's address.
func (h *hollowNode) podGone(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ip, ok := h.ips[pod.UID]; ok {
		delete(h.ips, pod.UID)
		h.free = append(h.free, ip)
	}
}

func (h *hollowNode) work(ctx context.Context) bool {
	key, quit := h.queue.Get()
	if quit {
		return false
	}
	defer h.queue.Done(key)
	if err := h.sync(ctx, key); err != nil && ctx.Err() == nil {
		h.fail(err)
		h.queue.AddRateLimited(key)
		return true
	}
	h.queue.Forget(key)
	return true
}

func (h *hollowNode) fail(err error) {
	h.errs.Add(1)
	h.lastErr.Store(&err)
}

// sync brings one pod on: removes it if it is being deleted, else reports
// it Running, once.
func (h *hollowNode) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := h.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	pods := h.client.CoreV1().Pods(ns)
	if pod.DeletionTimestamp != nil {
		err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // gone already, or a new pod of that name
		}
		if err == nil {
			h.deleted.Add(1)
		}
		return err
	}
	if pod.Status.Phase != corev1.PodPending {
		return nil // reported already (or terminated)
	}
	ip, err := h.podIP(pod.UID)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   runningStatus(pod, ip),
	})
	if err != nil {
		return err
	}
	if _, err := pods.Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	h.running.Add(1)
	return nil
}

// podIP gives the pod the next free address of the node's pod CIDR.
func (h *hollowNode) podIP(uid types.UID) (netip.Addr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ip, ok := h.ips[uid]; ok {
		return ip, nil
	}
	var ip netip.Addr
	switch {
	case len(h.free) > 0:
		ip, h.free = h.free[len(h.free)-1], h.free[:len(h.free)-1]
	case h.podCIDR.Contains(h.nextIP):
		ip, h.nextIP = h.nextIP, h.nextIP.Next()
	default:
		return ip, fmt.Errorf("%s: pod CIDR %s is used up", h.name, h.podCIDR)
	}
	h.ips[uid] = ip
	return ip, nil
}

// runningStatus is the status a kubelet reports for a pod whose containers
// all started and are ready (no probes).
func runningStatus(pod *corev1.Pod, ip netip.Addr) corev1.PodStatus {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
	}
	st := corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers), cond(corev1.PodInitialized),
			cond(corev1.ContainersReady), cond(corev1.PodReady),
		},
		HostIP: "127.0.0.1", HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}},
		StartTime: &now,
		QOSClass:  corev1.PodQOSBurstable,
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "hollow://" + c.Image,
			ContainerID: "hollow://" + string(pod.UID) + "/" + c.Name,
			Ready:       true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return st
}
