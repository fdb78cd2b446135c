package nodelifecycle_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/nodelifecycle"
	"github.com/moorage/moorage/internal/testserver"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLapsedLeaseMakesNodeUnknownAndTainted(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	node, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
	node.ResourceVersion = "" // unconditional: the node-ipam controller may have written the node
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	renew := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("n1"), LeaseDurationSeconds: ptr.To(int32(40)), RenewTime: &renew}}
	if _, err := c.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ctrl, err := nodelifecycle.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), nodelifecycle.Options{GracePeriod: 2 * time.Second, Period: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go ctrl.Run(ctx)

	get := func() *corev1.Node {
		n, err := c.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ready := func(n *corev1.Node) corev1.NodeCondition {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond
			}
		}
		return corev1.NodeCondition{}
	}
	// Fresh heartbeat: nothing changes for a while.
	time.Sleep(500 * time.Millisecond)
	if n := get(); ready(n).Status != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
		t.Fatalf("a fresh node was changed: %+v %+v", ready(n), n.Spec.Taints)
	}
	// No heartbeat past the grace period: Unknown, then both unreachable taints.
	eventually(t, "the node to be Unknown and tainted unreachable", func() bool {
		n := get()
		r := ready(n)
		return r.Status == corev1.ConditionUnknown && r.Reason == "NodeStatusUnknown" && r.Message == "Kubelet stopped posting node status." &&
			len(n.Spec.Taints) == 2 && n.Spec.Taints[0].Key == nodelifecycle.TaintUnreachable
	})
	// The agent comes back: lease renewed and Ready again; the taints go.
	n := get()
	later := metav1.Now()
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i] = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: later, LastTransitionTime: later}
		}
	}
	n.ResourceVersion = "" // unconditional: the node-ipam controller may have written the node
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the taints to go", func() bool { return len(get().Spec.Taints) == 0 })
}

func TestPodsOfNodeNotReadyAreMarkedNotReady(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// n1 stops its heartbeat (Unknown); n2 reports Ready=False itself.
	for name, status := range map[string]corev1.ConditionStatus{"n1": corev1.ConditionTrue, "n2": corev1.ConditionFalse} {
		if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The server's own controller may taint the node meanwhile.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			node, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
			_, err = c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ready := func(s corev1.ConditionStatus) []corev1.PodCondition {
		return []corev1.PodCondition{
			{Type: corev1.PodReady, Status: s, Reason: "SomeReason", Message: "some message"},
			{Type: corev1.ContainersReady, Status: s},
		}
	}
	for _, p := range []struct{ name, node string }{{"a", "n1"}, {"b", "n2"}} {
		pod, err := c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Status.Phase, pod.Status.Conditions = corev1.PodRunning, ready(corev1.ConditionTrue)
		if _, err := c.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	ctrl, err := nodelifecycle.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), nodelifecycle.Options{GracePeriod: 2 * time.Second, Period: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go ctrl.Run(ctx)

	for _, name := range []string{"b", "a"} {
		var pod *corev1.Pod
		eventually(t, "pod "+name+" to be not Ready", func() bool {
			pod, err = c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return pod.Status.Conditions[0].Status == corev1.ConditionFalse
		})
		// Only Ready changes, as upstream's MarkPodsNotReady.
		if c := pod.Status.Conditions; c[0].Reason != "SomeReason" || c[0].Message != "some message" || c[1].Status != corev1.ConditionTrue {
			t.Fatalf("pod %s conditions = %+v", name, c)
		}
		eventually(t, "the NodeNotReady event of pod "+name, func() bool {
			events, err := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range events.Items {
				if e.InvolvedObject.Name == name && e.Source.Component == nodelifecycle.Component && e.Type == corev1.EventTypeWarning &&
					e.Reason == "NodeNotReady" && e.Message == "Node is not ready" {
					return true
				}
			}
			return false
		})
	}
}
