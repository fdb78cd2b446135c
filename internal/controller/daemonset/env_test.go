package daemonset_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/daemonset"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = "default"

// env is a server (without its own DaemonSet controller) with the
// controller under test beside it, and a fake kubelet: the server's scheduler binds daemon pods to the Node objects the
// test creates, and the fake kubelet makes bound pods Running (Ready when
// readyIf says so) and finishes the deletion of terminating pods.
type env struct {
	t *testing.T
	c kubernetes.Interface
	// kubeconfig is the server's, for kubectl.
	kubeconfig string

	mu      sync.Mutex
	readyIf func(*corev1.Pod) bool
}

func start(t *testing.T) *env {
	t.Helper()
	srv := testserver.StartWithout(t, daemonset.Component)
	ctrl, err := daemonset.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), daemonset.Options{FailedPodBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: testserver.Client(t, srv), kubeconfig: srv.Kubeconfig, readyIf: func(*corev1.Pod) bool { return true }}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ctrl.Run(ctx) })
	wg.Go(func() { e.kubelet(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return e
}

// setReadyIf decides which bound pods the fake kubelet makes Ready.
func (e *env) setReadyIf(f func(*corev1.Pod) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.readyIf = f
}

func (e *env) kubelet(ctx context.Context) {
	for ctx.Err() == nil {
		list, err := e.c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range list.Items {
				e.tend(ctx, &list.Items[i])
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(30 * time.Millisecond):
		}
	}
}

// tend moves one pod along as a kubelet would; errors (conflicts) are
// retried on the next round.
func (e *env) tend(ctx context.Context, pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil {
		_ = e.c.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		return
	}
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return
	}
	e.mu.Lock()
	ready := e.readyIf(pod)
	e.mu.Unlock()
	want := corev1.ConditionFalse
	if ready {
		want = corev1.ConditionTrue
	}
	if pod.Status.Phase == corev1.PodRunning && readyStatus(pod) == want {
		return
	}
	pod.Status.Phase = corev1.PodRunning
	setReady(pod, want)
	_, _ = e.c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
}

func readyStatus(pod *corev1.Pod) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status
		}
	}
	return ""
}

func setReady(pod *corev1.Pod, status corev1.ConditionStatus) {
	cond := corev1.PodCondition{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			pod.Status.Conditions[i] = cond
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, cond)
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// createNode creates a Ready node with room for pods.
func (e *env) createNode(name string, labels map[string]string, taints ...corev1.Taint) {
	e.t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.NodeSpec{Taints: taints}}
	if _, err := e.c.CoreV1().Nodes().Create(e.t.Context(), node, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := e.c.CoreV1().Nodes().Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		room := corev1.ResourceList{corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
		node.Status.Capacity, node.Status.Allocatable = room, room
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
		_, err = e.c.CoreV1().Nodes().UpdateStatus(e.t.Context(), node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// updateNode changes a node's spec or labels, retrying on conflicts.
func (e *env) updateNode(name string, f func(*corev1.Node)) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := e.c.CoreV1().Nodes().Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		f(node)
		_, err = e.c.CoreV1().Nodes().Update(e.t.Context(), node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func newDaemonSet(name string) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "agent:1"}}},
			},
		},
	}
}

func (e *env) create(ds *appsv1.DaemonSet) *appsv1.DaemonSet {
	e.t.Helper()
	ds, err := e.c.AppsV1().DaemonSets(ns).Create(e.t.Context(), ds, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return ds
}

func (e *env) updateDaemonSet(name string, f func(*appsv1.DaemonSet)) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ds, err := e.c.AppsV1().DaemonSets(ns).Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		f(ds)
		_, err = e.c.AppsV1().DaemonSets(ns).Update(e.t.Context(), ds, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func setImage(img string) func(*appsv1.DaemonSet) {
	return func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = img }
}

// pods lists the live (not terminating) pods of app.
func (e *env) pods(app string) []corev1.Pod {
	e.t.Helper()
	list, err := e.c.CoreV1().Pods(ns).List(e.t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// placement maps node to the images of the app's live pods bound there,
// as "node=image" sorted.
func (e *env) placement(app string) []string {
	e.t.Helper()
	var out []string
	for _, p := range e.pods(app) {
		out = append(out, fmt.Sprintf("%s=%s", p.Spec.NodeName, p.Spec.Containers[0].Image))
	}
	sort.Strings(out)
	return out
}

func (e *env) waitPlacement(app string, want ...string) {
	e.t.Helper()
	sort.Strings(want)
	e.eventually(fmt.Sprintf("placement %v", want), func() bool { return slices.Equal(e.placement(app), want) })
}

func (e *env) waitStatus(name, what string, cond func(appsv1.DaemonSetStatus) bool) appsv1.DaemonSetStatus {
	e.t.Helper()
	var ds *appsv1.DaemonSet
	e.eventually(name+" status: "+what, func() bool {
		var err error
		ds, err = e.c.AppsV1().DaemonSets(ns).Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		return ds.Status.ObservedGeneration == ds.Generation && cond(ds.Status)
	})
	return ds.Status
}

func (e *env) events(name string) []string {
	e.t.Helper()
	list, err := e.c.CoreV1().Events(ns).List(e.t.Context(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		out = append(out, ev.Reason+": "+ev.Message)
	}
	return out
}

func (e *env) waitEvent(name, want string) {
	e.t.Helper()
	e.eventually("event "+want, func() bool {
		return slices.ContainsFunc(e.events(name), func(s string) bool { return strings.Contains(s, want) })
	})
}

func (e *env) revisions(app string) []appsv1.ControllerRevision {
	e.t.Helper()
	list, err := e.c.AppsV1().ControllerRevisions(ns).List(e.t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Revision < list.Items[j].Revision })
	return list.Items
}
