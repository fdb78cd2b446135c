// Package endpointtest holds the fixtures of the tests of the endpoint
// controllers and of the cluster DNS: nodes, pods and the pod status a node
// agent would write (IP, phase, Ready), against a real in-process server.
package endpointtest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Timeout bounds every wait.
const Timeout = 15 * time.Second

// Log discards what controllers log.
var Log = slog.New(slog.NewTextHandler(io.Discard, nil))

// Eventually polls cond until it holds, failing the test after Timeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Run runs a controller's blocking Run until the test ends.
func Run(t testing.TB, run func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// CreateNode creates a Ready node, in zone if not empty.
func CreateNode(t testing.TB, c kubernetes.Interface, name, zone string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	if zone != "" {
		node.Labels[corev1.LabelTopologyZone] = zone
	}
	if _, err := c.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := c.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}}
		_, err = c.CoreV1().Nodes().UpdateStatus(context.Background(), node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// NewPod returns a pod of namespace default bound to node, with one
// container listening on the named ports (name, number, alternately).
func NewPod(name, node string, labels map[string]string, ports ...any) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}
	for i := 0; i+1 < len(ports); i += 2 {
		pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{
			Name: ports[i].(string), ContainerPort: int32(ports[i+1].(int)), Protocol: corev1.ProtocolTCP,
		})
	}
	return pod
}

// CreatePod creates pod and gives it ip (if not empty) and readiness, as
// the node agent would once its containers run.
func CreatePod(t testing.TB, c kubernetes.Interface, pod *corev1.Pod, ip string, ready bool) *corev1.Pod {
	t.Helper()
	created, err := c.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip == "" {
		return created
	}
	return SetPodStatus(t, c, pod.Namespace, pod.Name, corev1.PodRunning, ip, ready)
}

// SetPodStatus sets a pod's phase, IP and Ready condition (its transition
// time moves only when the status does, as the kubelet's).
func SetPodStatus(t testing.TB, c kubernetes.Interface, ns, name string, phase corev1.PodPhase, ip string, ready bool) *corev1.Pod {
	t.Helper()
	var out *corev1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status.Phase = phase
		pod.Status.PodIP = ip
		pod.Status.PodIPs = nil
		if ip != "" {
			pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		cond := corev1.PodCondition{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}
		found := false
		for i := range pod.Status.Conditions {
			if old := &pod.Status.Conditions[i]; old.Type == corev1.PodReady {
				if old.Status == status {
					cond.LastTransitionTime = old.LastTransitionTime
				}
				*old, found = cond, true
			}
		}
		if !found {
			pod.Status.Conditions = append(pod.Status.Conditions, cond)
		}
		out, err = c.CoreV1().Pods(ns).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
