package statefulset_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubectl runs the real kubectl against the test server.
func (e *env) kubectl(args ...string) string {
	e.t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		e.t.Skip("kubectl not on PATH")
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", e.kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// autoReady plays the kubelet for app until the test ends: every new pod
// becomes Running and Ready.
func (e *env) autoReady(app string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			list, err := e.c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
			if err == nil {
				for i := range list.Items {
					p := &list.Items[i]
					if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodRunning {
						continue
					}
					p.Status.Phase = corev1.PodRunning
					p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
					_, _ = e.c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}) // conflicts: next round
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Millisecond):
			}
		}
	}()
}

func TestKubectlRolloutScaleAndRestart(t *testing.T) {
	e := start(t)
	e.autoReady("web")
	e.create(newSet("web", 2))
	out := e.kubectl("rollout", "status", "statefulset/web", "--timeout=20s")
	if !strings.Contains(out, "partitioned roll out complete: 2 new pods have been updated") {
		t.Errorf("rollout status:\n%s", out)
	}

	e.kubectl("set", "image", "statefulset/web", "app=nginx:2")
	out = e.kubectl("rollout", "status", "statefulset/web", "--timeout=20s")
	if !strings.Contains(out, "partitioned roll out complete: 2 new pods have been updated") {
		t.Errorf("rollout status:\n%s", out)
	}
	out = e.kubectl("rollout", "history", "statefulset/web")
	if !strings.Contains(out, "REVISION") || !strings.Contains(out, "\n1 ") || !strings.Contains(out, "\n2 ") {
		t.Errorf("rollout history:\n%s", out)
	}
	if out = e.kubectl("rollout", "history", "statefulset/web", "--revision=1"); !strings.Contains(out, "nginx:1") {
		t.Errorf("rollout history --revision=1:\n%s", out)
	}

	out = e.kubectl("rollout", "undo", "statefulset/web")
	if !strings.Contains(out, "statefulset.apps/web rolled back") {
		t.Errorf("rollout undo:\n%s", out)
	}
	e.kubectl("rollout", "status", "statefulset/web", "--timeout=20s")
	e.eventually("pods back at nginx:1", func() bool {
		p0, p1 := e.pod("web-0"), e.pod("web-1")
		return p0 != nil && p1 != nil && image(p0) == "nginx:1" && image(p1) == "nginx:1"
	})
	// Undo reused revision 1 as revision 3.
	out = e.kubectl("rollout", "history", "statefulset/web")
	if strings.Contains(out, "\n1 ") || !strings.Contains(out, "\n2 ") || !strings.Contains(out, "\n3 ") {
		t.Errorf("history after undo:\n%s", out)
	}
	if out = e.kubectl("rollout", "undo", "statefulset/web", "--to-revision=3"); !strings.Contains(out, "skipped rollback (current template already matches revision 3)") {
		t.Errorf("undo to the current revision:\n%s", out)
	}

	e.kubectl("scale", "statefulset/web", "--replicas=3")
	e.waitPods("web", "web-0", "web-1", "web-2")

	e.kubectl("rollout", "restart", "statefulset/web")
	e.kubectl("rollout", "status", "statefulset/web", "--timeout=20s")
	s := e.waitStatus("web", "restart rolled out", func(s appsv1.StatefulSetStatus) bool {
		return s.CurrentRevision == s.UpdateRevision && s.UpdatedReplicas == 3 && s.ReadyReplicas == 3
	})
	if p := e.pod("web-0"); p.Annotations["kubectl.kubernetes.io/restartedAt"] == "" || p.Labels[appsv1.StatefulSetRevisionLabel] != s.UpdateRevision {
		t.Errorf("web-0 not restarted: %v %v", p.Annotations, p.Labels)
	}
}
