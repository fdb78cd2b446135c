package tainteviction_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/tainteviction"
	"github.com/moorage/moorage/internal/testserver"
)

// These tests use the controller the test server runs, as moorage up runs it.

const taintKey = "example.com/evict"

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

// createNode creates a Ready node, which the server's node lifecycle
// controller leaves alone for its grace period.
func createNode(t *testing.T, c kubernetes.Interface, name string, taints ...corev1.Taint) {
	t.Helper()
	if _, err := c.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	updateNode(t, c, name, func(node *corev1.Node) bool {
		now := metav1.Now()
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
		return true
	})
}

// updateNode applies change to the node's status (true) or spec (false).
func updateNode(t *testing.T, c kubernetes.Interface, name string, change func(*corev1.Node) bool) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := c.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if change(node) {
			_, err = c.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{})
		} else {
			_, err = c.CoreV1().Nodes().Update(t.Context(), node, metav1.UpdateOptions{})
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, c kubernetes.Interface, name, node string, tolerations ...corev1.Toleration) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		NodeName: node, Tolerations: tolerations,
		Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
	}}
	if _, err := c.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func getPod(t *testing.T, c kubernetes.Interface, name string) *corev1.Pod {
	t.Helper()
	pod, err := c.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func disruption(pod *corev1.Pod) *corev1.PodCondition {
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.DisruptionTarget {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// hasEvent: an event from the controller about the pod with this message.
func hasEvent(t *testing.T, c kubernetes.Interface, pod, message string) bool {
	t.Helper()
	events, err := c.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "Pod" && e.InvolvedObject.Name == pod && e.Source.Component == tainteviction.Component &&
			e.Type == corev1.EventTypeNormal && e.Reason == tainteviction.EventReason && e.Message == message {
			return true
		}
	}
	return false
}

func noExecute(added time.Time) corev1.Taint {
	at := metav1.NewTime(added)
	return corev1.Taint{Key: taintKey, Effect: corev1.TaintEffectNoExecute, TimeAdded: &at}
}

func TestUntoleratedTaintEvictsAtOnce(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	createNode(t, c, "n1", noExecute(time.Now()))
	createPod(t, c, "web", "n1")
	// A pod that tolerates the taint for ever stays.
	createPod(t, c, "stays", "n1", corev1.Toleration{Key: taintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})

	var pod *corev1.Pod
	eventually(t, "the pod to be evicted", func() bool {
		pod = getPod(t, c, "web")
		return pod.DeletionTimestamp != nil
	})
	cond := disruption(pod)
	if cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != tainteviction.ConditionReason || cond.Message != tainteviction.ConditionMessage {
		t.Fatalf("DisruptionTarget condition = %+v", cond)
	}
	if *pod.DeletionGracePeriodSeconds != corev1.DefaultTerminationGracePeriodSeconds {
		t.Fatalf("deleted with grace %d, want the default", *pod.DeletionGracePeriodSeconds)
	}
	eventually(t, "the eviction event", func() bool { return hasEvent(t, c, "web", "Marking for deletion Pod default/web") })
	if p := getPod(t, c, "stays"); p.DeletionTimestamp != nil || disruption(p) != nil {
		t.Fatalf("a pod tolerating the taint was evicted: %+v", p.Status.Conditions)
	}
}

func TestTolerationSecondsAreHonoured(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	added := time.Now().Truncate(time.Second)
	createNode(t, c, "n1", noExecute(added))
	createPod(t, c, "web", "n1", corev1.Toleration{Key: taintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](2)})

	var pod *corev1.Pod
	eventually(t, "the pod to be evicted", func() bool {
		pod = getPod(t, c, "web")
		return pod.DeletionTimestamp != nil
	})
	cond := disruption(pod)
	if cond == nil || cond.Reason != tainteviction.ConditionReason {
		t.Fatalf("DisruptionTarget condition = %+v", cond)
	}
	// Not before the toleration ran out (times are whole seconds).
	if cond.LastTransitionTime.Before(&metav1.Time{Time: added.Add(2 * time.Second)}) {
		t.Fatalf("evicted at %v, before the toleration ran out at %v", cond.LastTransitionTime, added.Add(2*time.Second))
	}
}

func TestRemovedTaintCancelsEviction(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	createNode(t, c, "n1")
	createPod(t, c, "web", "n1", corev1.Toleration{Key: taintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](2)})

	added := time.Now()
	setTaints := func(taints ...corev1.Taint) {
		updateNode(t, c, "n1", func(node *corev1.Node) bool { node.Spec.Taints = taints; return false })
	}
	setTaints(noExecute(added))
	time.Sleep(500 * time.Millisecond) // the controller schedules the eviction
	setTaints()
	eventually(t, "the cancel event", func() bool { return hasEvent(t, c, "web", "Cancelling deletion of Pod default/web") })
	// Past the deadline the pod is still there.
	time.Sleep(time.Until(added.Add(3 * time.Second)))
	if pod := getPod(t, c, "web"); pod.DeletionTimestamp != nil || disruption(pod) != nil {
		t.Fatalf("the pod was evicted after its taint went: %+v", pod.Status.Conditions)
	}
}
