package attachdetach

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// When the detach of a volume may start, node by node.
func TestMayDetach(t *testing.T) {
	c := &Controller{opts: Options{MaxWaitForUnmount: 6 * time.Minute}}
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: attachmentName("h", "d", "n")}}
	node := func(ready bool, inUse bool, taint bool) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
		if inUse {
			n.Status.VolumesInUse = []corev1.UniqueVolumeName{"kubernetes.io/csi/d^h", "kubernetes.io/csi/d^other"}
		}
		if taint {
			n.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute}}
		}
		return n
	}
	for _, tc := range []struct {
		what   string
		node   *corev1.Node
		waited time.Duration
		ok     bool
		again  time.Duration
	}{
		{"ready, not in use", node(true, false, false), 0, true, 0},
		{"ready, in use: never by time", node(true, true, false), time.Hour, false, 0},
		{"ready, in use, out of service", node(true, true, true), 0, true, 0},
		{"not ready, in use, before the timeout", node(false, true, false), time.Minute, false, 5*time.Minute + time.Second},
		{"not ready, in use, after the timeout", node(false, true, false), 7 * time.Minute, true, 0},
		{"not ready, not in use", node(false, false, false), 0, true, 0},
		{"gone, before the timeout", nil, 0, false, 6*time.Minute + time.Second},
		{"gone, after the timeout", nil, 7 * time.Minute, true, 0},
	} {
		ok, again := c.mayDetach(tc.node, va, tc.waited)
		if ok != tc.ok || again != tc.again {
			t.Errorf("%s: mayDetach = %v, %v; want %v, %v", tc.what, ok, again, tc.ok, tc.again)
		}
	}
}

func TestPodTerminated(t *testing.T) {
	running := corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	exited := corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}}
	deleted := &metav1.Time{Time: time.Now()}
	for _, tc := range []struct {
		what string
		pod  corev1.Pod
		want bool
	}{
		{"running", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running}}}, false},
		{"succeeded", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, true},
		{"failed", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, true},
		{"deleted, still running", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: deleted}, Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{exited, running}}}, false},
		{"deleted, stopped", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: deleted}, Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{exited}}}, true},
		{"deleted, never started", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: deleted}, Status: corev1.PodStatus{Phase: corev1.PodPending}}, true},
	} {
		if got := podTerminated(&tc.pod); got != tc.want {
			t.Errorf("%s: podTerminated = %v, want %v", tc.what, got, tc.want)
		}
	}
}
