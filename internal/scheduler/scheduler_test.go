package scheduler_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/scheduler"
	"github.com/moorage/moorage/internal/testserver"
)

type cluster struct {
	t *testing.T
	c kubernetes.Interface
}

// startCluster runs a moorage server (with its PV controller) and this
// scheduler against it. bindable tells whether the server serves the
// pods/binding subresource.
func startCluster(t *testing.T) (cl cluster, bindable bool) {
	t.Helper()
	srv := testserver.Start(t)
	cl = cluster{t, testserver.Client(t, srv)}
	bindable = cl.bindingServed()
	s, err := scheduler.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), scheduler.Options{
		BindTimeout: time.Second, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cl, bindable
}

// bindingServed binds a pod that no scheduler owns: a 404 or 405 means the
// server does not serve pods/binding yet.
func (cl cluster) bindingServed() bool {
	ctx := context.Background()
	probe := newPod("binding-probe").Pod
	probe.UID = ""
	probe.Spec.SchedulerName = "nobody"
	if _, err := cl.c.CoreV1().Pods("default").Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		cl.t.Fatal(err)
	}
	err := cl.c.CoreV1().Pods("default").Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: probe.Name, Namespace: "default"},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "probe-node"},
	}, metav1.CreateOptions{})
	_ = cl.c.CoreV1().Pods("default").Delete(ctx, probe.Name, metav1.DeleteOptions{})
	return !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err)
}

func (cl cluster) createNode(b nodeB) {
	cl.t.Helper()
	ctx := context.Background()
	created, err := cl.c.CoreV1().Nodes().Create(ctx, b.Node, metav1.CreateOptions{})
	if err != nil {
		cl.t.Fatal(err)
	}
	created.Status = b.Status
	created.ResourceVersion = "" // unconditional: the node-ipam controller may have written the node
	if _, err := cl.c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		cl.t.Fatal(err)
	}
}

func (cl cluster) create(objs ...any) {
	cl.t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case nodeB:
			cl.createNode(o)
		case podB:
			p := o.DeepCopy()
			p.UID = ""
			_, err = cl.c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		case pvcB:
			p := o.DeepCopy()
			p.UID, p.Status = "", corev1.PersistentVolumeClaimStatus{}
			_, err = cl.c.CoreV1().PersistentVolumeClaims(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		case pvB:
			p := o.DeepCopy()
			p.Status = corev1.PersistentVolumeStatus{}
			_, err = cl.c.CoreV1().PersistentVolumes().Create(ctx, p, metav1.CreateOptions{})
		case scB:
			_, err = cl.c.StorageV1().StorageClasses().Create(ctx, o.StorageClass, metav1.CreateOptions{})
		case *storagev1.CSINode:
			_, err = cl.c.StorageV1().CSINodes().Create(ctx, o, metav1.CreateOptions{})
		case *storagev1.CSIDriver:
			_, err = cl.c.StorageV1().CSIDrivers().Create(ctx, o, metav1.CreateOptions{})
		default:
			cl.t.Fatalf("create: unexpected %T", o)
		}
		if err != nil {
			cl.t.Fatal(err)
		}
	}
}

// eventually polls cond until it returns "" (success) or 15 s pass, then
// fails with its last answer.
func (cl cluster) eventually(cond func() string) {
	cl.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			cl.t.Fatal(why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (cl cluster) pod(name string) *corev1.Pod {
	cl.t.Helper()
	p, err := cl.c.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		cl.t.Fatal(err)
	}
	return p
}

func (cl cluster) event(object, reason string) *corev1.Event {
	list, err := cl.c.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		cl.t.Fatal(err)
	}
	for i := range list.Items {
		if e := &list.Items[i]; e.InvolvedObject.Name == object && e.Reason == reason {
			return e
		}
	}
	return nil
}

func TestSchedulerAgainstServer(t *testing.T) {
	cl, bindable := startCluster(t)
	cl.create(newNode("node-a"), newNode("node-b"))

	t.Run("a pod no node fits gets FailedScheduling and PodScheduled=False", func(t *testing.T) {
		cl := cluster{t, cl.c}
		cl.create(newPod("huge").req("100", ""))
		want := "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
		cl.eventually(func() string {
			for _, c := range cl.pod("huge").Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == "Unschedulable" && c.Message == want {
					return ""
				}
			}
			return fmt.Sprintf("conditions: %+v", cl.pod("huge").Status.Conditions)
		})
		cl.eventually(func() string {
			e := cl.event("huge", "FailedScheduling")
			if e == nil || e.Type != corev1.EventTypeWarning || e.Message != want || e.Source.Component != scheduler.Component {
				return fmt.Sprintf("event: %+v", e)
			}
			return ""
		})
	})

	t.Run("a WaitForFirstConsumer claim is bound on the node of its volume", func(t *testing.T) {
		cl := cluster{t, cl.c}
		cl.create(newClass("local").wffc(), newPV("pv-b", "10Gi").class("local").onHost("node-b"),
			newClaim("data", "5Gi").class("local"), newPod("web").claim("data"))
		cl.eventually(func() string {
			claim, err := cl.c.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), "data", metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			if claim.Annotations[scheduler.AnnSelectedNode] != "node-b" || claim.Spec.VolumeName != "pv-b" || claim.Status.Phase != corev1.ClaimBound {
				return fmt.Sprintf("claim: annotations %v, volume %q, phase %s", claim.Annotations, claim.Spec.VolumeName, claim.Status.Phase)
			}
			return ""
		})
		if !bindable {
			t.Skip("the server does not serve pods/binding yet: the claim was bound on the chosen node, the pod cannot be")
		}
		cl.eventually(func() string {
			if n := cl.pod("web").Spec.NodeName; n != "node-b" {
				return fmt.Sprintf("web is on %q", n)
			}
			if e := cl.event("web", "Scheduled"); e == nil || e.Message != "Successfully assigned default/web to node-b" {
				return fmt.Sprintf("event: %+v", e)
			}
			return ""
		})
	})

	t.Run("pods placed back to back see each other", func(t *testing.T) {
		if !bindable {
			t.Skip("the server does not serve pods/binding yet")
		}
		cl := cluster{t, cl.c}
		// Each node takes one of these; the third fits nowhere.
		cl.create(newPod("half-1").req("3", ""), newPod("half-2").req("3", ""), newPod("half-3").req("3", ""))
		cl.eventually(func() string {
			on := map[string]string{}
			for _, n := range []string{"half-1", "half-2", "half-3"} {
				on[n] = cl.pod(n).Spec.NodeName
			}
			placed := 0
			nodes := map[string]bool{}
			for _, node := range on {
				if node != "" {
					placed++
					nodes[node] = true
				}
			}
			if placed != 2 || len(nodes) != 2 {
				return fmt.Sprintf("placement: %v", on)
			}
			return ""
		})
	})

	t.Run("a claim not bound in time fails the attempt and keeps its node", func(t *testing.T) {
		cl := cluster{t, cl.c}
		// Nothing provisions this class here: the claim stays Pending.
		cl.create(newClass("csi").wffc().provisioner("csi.example.com"), newClaim("slow", "1Gi").class("csi"), newPod("slow-web").claim("slow"))
		want := `running PreBind plugin "VolumeBinding": binding volumes: context deadline exceeded`
		cl.eventually(func() string {
			for _, c := range cl.pod("slow-web").Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == "SchedulerError" && c.Message == want {
					return ""
				}
			}
			return fmt.Sprintf("conditions: %+v", cl.pod("slow-web").Status.Conditions)
		})
		claim, err := cl.c.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), "slow", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := claim.Annotations[scheduler.AnnSelectedNode]; n != "node-a" && n != "node-b" {
			t.Fatalf("selected node %q", n)
		}
		if n := cl.pod("slow-web").Spec.NodeName; n != "" {
			t.Fatalf("pod bound to %q before its claim", n)
		}
		// Events are written asynchronously: wait for it.
		cl.eventually(func() string {
			if e := cl.event("slow-web", "FailedScheduling"); e == nil || e.Message != want {
				return fmt.Sprintf("event: %+v", e)
			}
			return ""
		})
	})

	t.Run("a claim to provision by a CSI driver waits for a node to register the driver", func(t *testing.T) {
		cl := cluster{t, cl.c}
		const driver = "wait.csi.example.com"
		cl.create(csiDriver(driver), newClass("waiting").wffc().provisioner(driver), newClaim("later", "1Gi").class("waiting"), newPod("later-web").claim("later"))
		want := "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind." + notHelpful2
		cl.eventually(func() string {
			if e := cl.event("later-web", "FailedScheduling"); e == nil || e.Message != want {
				return fmt.Sprintf("event: %+v", e)
			}
			return ""
		})
		// The driver registers on node-b: the parked pod is tried again
		// at once, and its claim is selected for node-b.
		cl.create(csiNode("node-b", driver))
		cl.eventually(func() string {
			claim, err := cl.c.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), "later", metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			if n := claim.Annotations[scheduler.AnnSelectedNode]; n != "node-b" {
				return fmt.Sprintf("selected node %q", n)
			}
			return ""
		})
	})
}
