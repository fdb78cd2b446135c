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
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the taints to go", func() bool { return len(get().Spec.Taints) == 0 })
}
