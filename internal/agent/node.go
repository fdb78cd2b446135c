package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"
)

// Upstream kubelet's defaults for the node lease and status.
const (
	leaseDuration        = 40 * time.Second
	leaseRenewInterval   = 10 * time.Second // a quarter of the duration
	statusReportInterval = 5 * time.Minute  // full status even when nothing changed
	statusCheckInterval  = 10 * time.Second // how often the status is recomputed
	maxPods              = 110
)

// Well-known node labels the kubelet sets.
const (
	labelHostname = "kubernetes.io/hostname"
	labelOS       = "kubernetes.io/os"
	labelArch     = "kubernetes.io/arch"
	labelBetaOS   = "beta.kubernetes.io/os"
	labelBetaArch = "beta.kubernetes.io/arch"
)

// nodeResources measures the machine: capacity, and allocatable as the
// kubelet computes it with its default hard eviction thresholds (100Mi of
// memory, 10% of the node filesystem) and no reservations.
func (a *Agent) nodeResources() (capacity, allocatable corev1.ResourceList) {
	capacity = corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods:   *resource.NewQuantity(maxPods, resource.DecimalSI),
		"hugepages-1Gi":       resource.MustParse("0"),
		"hugepages-2Mi":       resource.MustParse("0"),
		corev1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
	}
	var st unix.Statfs_t
	if err := unix.Statfs(a.opts.DataDir, &st); err == nil {
		capacity[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(st.Blocks)*st.Bsize, resource.BinarySI)
	}
	allocatable = capacity.DeepCopy()
	mem := allocatable[corev1.ResourceMemory]
	mem.Sub(resource.MustParse("100Mi"))
	allocatable[corev1.ResourceMemory] = mem
	if disk, ok := capacity[corev1.ResourceEphemeralStorage]; ok {
		allocatable[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(disk.Value()-disk.Value()/10, resource.DecimalSI)
	}
	return capacity, allocatable
}

// memTotal reads MemTotal from /proc/meminfo, in bytes.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, _ := strconv.ParseInt(fields[1], 10, 64)
			return kib * 1024
		}
	}
	return 0
}

// nodeIP is the address the node reports: the option, else the first
// non-loopback IPv4 address of an interface that is up, else 127.0.0.1.
func nodeIP(opt string) string {
	if opt != "" {
		return opt
	}
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, addr := range addrs {
			if ipn, ok := addr.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLinkLocalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

func readTrimmed(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func osImage() string {
	b, _ := os.ReadFile("/etc/os-release")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

func kernelVersion() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// readyCondition and its companions are the kubelet's node conditions, with
// its reasons and messages.
func nodeConditions(now metav1.Time, ready bool, readyMessage string) []corev1.NodeCondition {
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	readyStatus, readyReason := corev1.ConditionTrue, "KubeletReady"
	if !ready {
		readyStatus, readyReason = corev1.ConditionFalse, "KubeletNotReady"
	}
	return []corev1.NodeCondition{
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		cond(corev1.NodeReady, readyStatus, readyReason, readyMessage),
	}
}

// desiredNode is the Node as this agent describes it.
func (a *Agent) desiredNode() *corev1.Node {
	capacity, allocatable := a.nodeResources()
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	ready, msg := a.readiness()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.opts.NodeName,
			Labels: map[string]string{
				labelHostname: a.opts.NodeName, labelOS: goruntime.GOOS, labelArch: goruntime.GOARCH,
				labelBetaOS: goruntime.GOOS, labelBetaArch: goruntime.GOARCH,
			},
			Annotations: map[string]string{
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"node.alpha.kubernetes.io/ttl":                           "0",
			},
		},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: allocatable,
			Conditions: nodeConditions(now, ready, msg),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: a.ip},
				{Type: corev1.NodeHostName, Address: a.opts.NodeName},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(a.opts.Port)}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: readTrimmed("/etc/machine-id"), SystemUUID: readTrimmed("/sys/class/dmi/id/product_uuid"),
				BootID: readTrimmed("/proc/sys/kernel/random/boot_id"), KernelVersion: kernelVersion(), OSImage: osImage(),
				ContainerRuntimeVersion: a.opts.RuntimeVersion, KubeletVersion: a.opts.Version, KubeProxyVersion: a.opts.Version,
				OperatingSystem: goruntime.GOOS, Architecture: goruntime.GOARCH,
			},
		},
	}
}

// registerNode creates the Node, or takes over an existing one of the same
// name (an agent restart), keeping labels and taints others added.
func (a *Agent) registerNode(ctx context.Context) error {
	want := a.desiredNode()
	nodes := a.client.CoreV1().Nodes()
	got, err := nodes.Create(ctx, want, metav1.CreateOptions{FieldManager: a.manager})
	switch {
	case err == nil:
	case apierrors.IsAlreadyExists(err):
		got, err = nodes.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := false
		for k, v := range want.Labels {
			if got.Labels[k] != v {
				if got.Labels == nil {
					got.Labels = map[string]string{}
				}
				got.Labels[k], changed = v, true
			}
		}
		if changed {
			if got, err = nodes.Update(ctx, got, metav1.UpdateOptions{FieldManager: a.manager}); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("registering node %q: %w", want.Name, err)
	}
	a.nodeUID = got.UID
	return a.updateNodeStatus(ctx, true)
}

// updateNodeStatus writes the status if it changed, or if force, or if the
// last report is older than the report interval. Condition transition times
// stay as they were while a condition's status holds.
func (a *Agent) updateNodeStatus(ctx context.Context, force bool) error {
	want := a.desiredNode()
	nodes := a.client.CoreV1().Nodes()
	cur, err := nodes.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	next := cur.DeepCopy()
	next.Status.Capacity, next.Status.Allocatable = want.Status.Capacity, want.Status.Allocatable
	next.Status.Addresses, next.Status.DaemonEndpoints, next.Status.NodeInfo = want.Status.Addresses, want.Status.DaemonEndpoints, want.Status.NodeInfo
	changed := false
	var conds []corev1.NodeCondition
	for _, w := range want.Status.Conditions {
		for _, old := range cur.Status.Conditions {
			if old.Type == w.Type {
				if old.Status == w.Status {
					w.LastTransitionTime = old.LastTransitionTime
				}
				changed = changed || old.Status != w.Status || old.Reason != w.Reason || old.Message != w.Message
			}
		}
		conds = append(conds, w)
	}
	changed = changed || len(cur.Status.Conditions) != len(conds)
	next.Status.Conditions = conds
	inUse, inUseChanged := a.volumesInUse(ctx, cur)
	next.Status.VolumesInUse, changed = inUse, changed || inUseChanged
	if !force && !changed && time.Since(a.lastReport) < statusReportInterval {
		a.reportedVolumesInUse(inUse)
		return nil
	}
	if _, err := nodes.UpdateStatus(ctx, next, metav1.UpdateOptions{FieldManager: a.manager}); err != nil {
		return err
	}
	a.reportedVolumesInUse(inUse)
	a.lastReport = time.Now()
	return nil
}

// renewLease keeps the node's Lease in kube-node-lease fresh: the heartbeat
// the node lifecycle controller watches.
func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: a.opts.NodeName, Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: a.opts.NodeName, UID: a.nodeUID}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.opts.NodeName),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{FieldManager: a.manager})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.HolderIdentity = ptr.To(a.opts.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{FieldManager: a.manager})
	return err
}

// heartbeat renews the lease and refreshes the node status until ctx ends.
func (a *Agent) heartbeat(ctx context.Context) {
	renew := time.NewTicker(leaseRenewInterval)
	defer renew.Stop()
	status := time.NewTicker(statusCheckInterval)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("renewing node lease", "err", err)
			}
		case <-status.C:
			if err := a.updateNodeStatus(ctx, false); err != nil && ctx.Err() == nil {
				a.log.Warn("updating node status", "err", err)
			}
		case <-a.statusNow:
			a.writeVolumesInUse(ctx)
		}
	}
}
