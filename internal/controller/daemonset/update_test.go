package daemonset_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// threeNodes starts a server with nodes n1..n3 and an available daemon set.
func threeNodes(t *testing.T, ds *appsv1.DaemonSet) *env {
	e := start(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		e.createNode(n, nil)
	}
	e.create(ds)
	e.waitStatus(ds.Name, "all available", func(s appsv1.DaemonSetStatus) bool { return s.NumberAvailable == 3 })
	return e
}

func notImage(img string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image != img }
}

// count counts the app's live pods at img.
func (e *env) count(app, img string) int {
	n := 0
	for _, p := range e.pods(app) {
		if p.Spec.Containers[0].Image == img {
			n++
		}
	}
	return n
}

func TestRollingUpdateKeepsWithinMaxUnavailable(t *testing.T) {
	e := threeNodes(t, newDaemonSet("agent"))
	// New pods stay unready: with maxUnavailable 1, only one node is
	// updated.
	e.setReadyIf(notImage("agent:2"))
	e.updateDaemonSet("agent", setImage("agent:2"))
	e.eventually("one pod updated", func() bool { return e.count("agent", "agent:2") == 1 })
	s := e.waitStatus("agent", "one updated", func(s appsv1.DaemonSetStatus) bool { return s.UpdatedNumberScheduled == 1 })
	if s.NumberUnavailable != 1 || e.count("agent", "agent:1") != 2 {
		t.Fatalf("status %+v placement %v", s, e.placement("agent"))
	}
	e.setReadyIf(func(*corev1.Pod) bool { return true })
	e.waitPlacement("agent", "n1=agent:2", "n2=agent:2", "n3=agent:2")
	s = e.waitStatus("agent", "updated", func(s appsv1.DaemonSetStatus) bool { return s.UpdatedNumberScheduled == 3 && s.NumberAvailable == 3 })
	if s.NumberUnavailable != 0 || s.DesiredNumberScheduled != 3 {
		t.Errorf("status %+v", s)
	}
}

func TestRollingUpdateSurgesBesideOldPods(t *testing.T) {
	ds := newDaemonSet("agent")
	ds.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1))}
	e := threeNodes(t, ds)
	e.setReadyIf(notImage("agent:2"))
	e.updateDaemonSet("agent", setImage("agent:2"))
	// One new pod starts beside its old one; no old pod goes while it is
	// not available.
	e.eventually("one surge pod", func() bool { return e.count("agent", "agent:2") == 1 })
	e.waitStatus("agent", "observed", func(appsv1.DaemonSetStatus) bool { return true })
	if n := e.count("agent", "agent:1"); n != 3 {
		t.Fatalf("%d old pods left during a surge, want 3: %v", n, e.placement("agent"))
	}
	e.setReadyIf(func(*corev1.Pod) bool { return true })
	e.waitPlacement("agent", "n1=agent:2", "n2=agent:2", "n3=agent:2")
}

func TestOnDeleteReplacesOnlyDeletedPods(t *testing.T) {
	ds := newDaemonSet("agent")
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	e := threeNodes(t, ds)
	e.updateDaemonSet("agent", setImage("agent:2"))
	s := e.waitStatus("agent", "new revision", func(s appsv1.DaemonSetStatus) bool { return s.UpdatedNumberScheduled == 0 })
	if s.NumberAvailable != 3 || e.count("agent", "agent:1") != 3 {
		t.Fatalf("OnDelete replaced pods: %v", e.placement("agent"))
	}
	var victim corev1.Pod
	for _, p := range e.pods("agent") {
		if p.Spec.NodeName == "n2" {
			victim = p
		}
	}
	if err := e.c.CoreV1().Pods(ns).Delete(t.Context(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitPlacement("agent", "n1=agent:1", "n2=agent:2", "n3=agent:1")
	e.waitStatus("agent", "one updated", func(s appsv1.DaemonSetStatus) bool { return s.UpdatedNumberScheduled == 1 })
}

func TestRevisionHistoryAndKubectlRollout(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl not on PATH")
	}
	ds := newDaemonSet("agent")
	ds.Spec.RevisionHistoryLimit = ptr.To[int32](1)
	e := threeNodes(t, ds)
	kubectl := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", e.kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := kubectl("rollout", "status", "daemonset/agent", "--timeout=20s"); !strings.Contains(out, `daemon set "agent" successfully rolled out`) {
		t.Errorf("rollout status:\n%s", out)
	}
	first := e.revisions("agent")[0]
	if !strings.HasPrefix(string(first.Data.Raw), `{"spec":{"template":{"$patch":"replace",`) || first.Revision != 1 {
		t.Errorf("revision %s %d data %s", first.Name, first.Revision, first.Data.Raw)
	}

	kubectl("set", "image", "daemonset/agent", "agent=agent:2")
	kubectl("rollout", "status", "daemonset/agent", "--timeout=20s")
	e.waitPlacement("agent", "n1=agent:2", "n2=agent:2", "n3=agent:2")
	out := kubectl("rollout", "history", "daemonset/agent")
	if !strings.Contains(out, "\n1 ") || !strings.Contains(out, "\n2 ") {
		t.Errorf("rollout history:\n%s", out)
	}
	if out := kubectl("rollout", "history", "daemonset/agent", "--revision=1"); !strings.Contains(out, "agent:1") {
		t.Errorf("rollout history --revision=1:\n%s", out)
	}

	if out := kubectl("rollout", "undo", "daemonset/agent"); !strings.Contains(out, "daemonset.apps/agent rolled back") {
		t.Errorf("rollout undo:\n%s", out)
	}
	kubectl("rollout", "status", "daemonset/agent", "--timeout=20s")
	e.waitPlacement("agent", "n1=agent:1", "n2=agent:1", "n3=agent:1")
	// The first revision was reused as revision 3; with a limit of 1 the
	// second remains as the only old one.
	e.eventually("revision 1 renumbered 3", func() bool {
		revs := e.revisions("agent")
		return len(revs) == 2 && revs[1].Name == first.Name && revs[1].Revision == 3 && revs[0].Revision == 2
	})
	kubectl("set", "image", "daemonset/agent", "agent=agent:3")
	kubectl("rollout", "status", "daemonset/agent", "--timeout=20s")
	e.eventually("history trimmed to one old revision", func() bool {
		revs := e.revisions("agent")
		return len(revs) == 2 && revs[0].Name == first.Name && revs[1].Revision == 4
	})
	pods := e.pods("agent")
	if hash := pods[0].Labels[appsv1.DefaultDaemonSetUniqueLabelKey]; e.revisions("agent")[1].Name != "agent-"+hash {
		t.Errorf("pod hash %s, revisions %v", hash, e.revisions("agent"))
	}
}
