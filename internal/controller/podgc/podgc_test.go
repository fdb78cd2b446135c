package podgc_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/moorage/moorage/internal/controller/podgc"
	"github.com/moorage/moorage/internal/testserver"
)

// keep holds a force-deleted pod in the store so that the test can look at it.
const keep = "example.com/keep"

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

// start runs a server and, beside the collector it runs with upstream's
// periods, one with short ones.
func start(t *testing.T, opts podgc.Options) kubernetes.Interface {
	t.Helper()
	srv := testserver.Start(t)
	ctrl, err := podgc.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return testserver.Client(t, srv)
}

func createNode(t *testing.T, c kubernetes.Interface, name string, ready corev1.ConditionStatus, taints ...corev1.Taint) {
	t.Helper()
	if _, err := c.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The server's node lifecycle controller may taint the node meanwhile.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := c.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, LastHeartbeatTime: now, LastTransitionTime: now}}
		_, err = c.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, c kubernetes.Interface, name, node string, finalizers ...string) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: finalizers}, Spec: corev1.PodSpec{
		NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
	}}
	if _, err := c.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setPhase(t, c, name, corev1.PodRunning)
}

// setPhase sets a pod's phase (the scheduler may write its status too).
func setPhase(t *testing.T, c kubernetes.Interface, name string, phase corev1.PodPhase) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := c.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status.Phase = phase
		_, err = c.CoreV1().Pods("default").UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func getPod(t *testing.T, c kubernetes.Interface, name string) (*corev1.Pod, bool) {
	t.Helper()
	pod, err := c.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return pod, true
}

func forceDeleted(pod *corev1.Pod) bool {
	return pod.DeletionGracePeriodSeconds != nil && *pod.DeletionGracePeriodSeconds == 0 && pod.Status.Phase == corev1.PodFailed
}

func deletePod(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	if err := c.CoreV1().Pods("default").Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestPodsOfDeletedNodeAreForceDeletedAfterQuarantine(t *testing.T) {
	quarantine := time.Second
	c := start(t, podgc.Options{Period: 100 * time.Millisecond, Quarantine: quarantine})
	createNode(t, c, "n1", corev1.ConditionTrue)
	createNode(t, c, "n2", corev1.ConditionTrue)
	createPod(t, c, "kept", "n1", keep)
	createPod(t, c, "gone", "n1")
	createPod(t, c, "other", "n2")

	deleted := time.Now().Truncate(time.Second)
	if err := c.CoreV1().Nodes().Delete(t.Context(), "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pod without finalizers to go", func() bool { _, ok := getPod(t, c, "gone"); return !ok })
	var pod *corev1.Pod
	eventually(t, "the pod with a finalizer to be force-deleted", func() bool {
		pod, _ = getPod(t, c, "kept")
		return forceDeleted(pod)
	})
	var cond *corev1.PodCondition
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.DisruptionTarget {
			cond = &pod.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != podgc.ConditionReason || cond.Message != podgc.ConditionMessage {
		t.Fatalf("DisruptionTarget condition = %+v", cond)
	}
	// Not before the quarantine was over (times are whole seconds).
	if cond.LastTransitionTime.Time.Before(deleted.Add(quarantine)) {
		t.Fatalf("force-deleted at %v, before the quarantine ended at %v", cond.LastTransitionTime, deleted.Add(quarantine))
	}
	if pod, ok := getPod(t, c, "other"); !ok || pod.DeletionTimestamp != nil {
		t.Fatalf("a pod of an existing node was deleted: %+v", pod)
	}
}

func TestTerminatingPodsOnOutOfServiceNodeAreForceDeleted(t *testing.T) {
	c := start(t, podgc.Options{Period: 100 * time.Millisecond})
	outOfService := corev1.Taint{Key: corev1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoSchedule}
	createNode(t, c, "down", corev1.ConditionFalse, outOfService)
	createNode(t, c, "notready", corev1.ConditionFalse)
	createNode(t, c, "ready", corev1.ConditionTrue, outOfService)
	for _, node := range []string{"notready", "ready", "down"} {
		createPod(t, c, node, node, keep)
		deletePod(t, c, node)
	}
	eventually(t, "the pod on the out-of-service node to be force-deleted", func() bool {
		pod, _ := getPod(t, c, "down")
		return forceDeleted(pod)
	})
	for _, name := range []string{"notready", "ready"} {
		if pod, _ := getPod(t, c, name); forceDeleted(pod) {
			t.Fatalf("pod %s was force-deleted", name)
		}
	}
}

func TestUnscheduledTerminatingPodsAreForceDeleted(t *testing.T) {
	c := start(t, podgc.Options{Period: 100 * time.Millisecond})
	createPod(t, c, "unscheduled", "", keep)
	deletePod(t, c, "unscheduled")
	eventually(t, "the unscheduled pod to be marked Failed", func() bool {
		pod, _ := getPod(t, c, "unscheduled")
		return forceDeleted(pod)
	})
}

func TestTerminatedPodsBeyondThresholdAreDeleted(t *testing.T) {
	c := start(t, podgc.Options{Period: 100 * time.Millisecond, TerminatedThreshold: 2})
	createNode(t, c, "n1", corev1.ConditionTrue)
	for _, name := range []string{"a", "b", "c"} {
		createPod(t, c, name, "n1")
		setPhase(t, c, name, corev1.PodSucceeded)
	}
	eventually(t, "the oldest terminated pod to go", func() bool { _, ok := getPod(t, c, "a"); return !ok })
	for _, name := range []string{"b", "c"} {
		if _, ok := getPod(t, c, name); !ok {
			t.Fatalf("pod %s was deleted", name)
		}
	}
}
