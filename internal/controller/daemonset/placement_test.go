package daemonset_test

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

func TestOnePodPerEligibleNode(t *testing.T) {
	e := start(t)
	ssd := map[string]string{"disk": "ssd"}
	e.createNode("n1", ssd)
	e.createNode("n2", map[string]string{"disk": "hdd"})
	e.createNode("n3", ssd, corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule})
	// Tolerated by every daemon pod.
	e.createNode("n4", ssd, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule})

	ds := newDaemonSet("agent")
	ds.Spec.Template.Spec.NodeSelector = ssd
	created := e.create(ds)
	e.waitPlacement("agent", "n1=agent:1", "n4=agent:1")

	s := e.waitStatus("agent", "all available", func(s appsv1.DaemonSetStatus) bool { return s.NumberAvailable == 2 })
	if s.DesiredNumberScheduled != 2 || s.CurrentNumberScheduled != 2 || s.NumberReady != 2 || s.UpdatedNumberScheduled != 2 ||
		s.NumberMisscheduled != 0 || s.NumberUnavailable != 0 {
		t.Errorf("status %+v", s)
	}

	pod := e.pods("agent")[0]
	if pod.GenerateName != "agent-" {
		t.Errorf("generateName %q", pod.GenerateName)
	}
	if ref := metav1.GetControllerOf(&pod); ref == nil || ref.UID != created.UID || ref.Kind != "DaemonSet" {
		t.Errorf("controllerRef %+v", ref)
	}
	revs := e.revisions("agent")
	if len(revs) != 1 || pod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] != revs[0].Labels[appsv1.DefaultDaemonSetUniqueLabelKey] ||
		revs[0].Name != "agent-"+revs[0].Labels[appsv1.DefaultDaemonSetUniqueLabelKey] {
		t.Errorf("pod labels %v, revisions %v", pod.Labels, revs)
	}
	terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || terms[0].MatchFields[0].Key != "metadata.name" || terms[0].MatchFields[0].Values[0] != pod.Spec.NodeName {
		t.Errorf("node affinity %+v", terms)
	}
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, corev1.TaintNodeDiskPressure,
		corev1.TaintNodeMemoryPressure, corev1.TaintNodePIDPressure, corev1.TaintNodeUnschedulable} {
		if !slices.ContainsFunc(pod.Spec.Tolerations, func(t corev1.Toleration) bool { return t.Key == key }) {
			t.Errorf("no toleration for %s: %+v", key, pod.Spec.Tolerations)
		}
	}
	e.waitEvent("agent", "SuccessfulCreate: Created pod: agent-")

	// A new eligible node gets a pod; a label change makes n1 ineligible.
	e.createNode("n5", ssd)
	e.waitPlacement("agent", "n1=agent:1", "n4=agent:1", "n5=agent:1")
	e.updateNode("n1", func(n *corev1.Node) { n.Labels["disk"] = "hdd" })
	e.waitPlacement("agent", "n4=agent:1", "n5=agent:1")
	e.waitEvent("agent", "SuccessfulDelete: Deleted pod: agent-")
	e.waitStatus("agent", "n1 cleared", func(s appsv1.DaemonSetStatus) bool {
		return s.DesiredNumberScheduled == 2 && s.CurrentNumberScheduled == 2 && s.NumberMisscheduled == 0
	})

	// An untolerated NoSchedule taint keeps the pod (counted misscheduled);
	// a NoExecute one evicts it.
	e.updateNode("n4", func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "maintenance", Effect: corev1.TaintEffectNoSchedule})
	})
	e.waitStatus("agent", "n4 misscheduled", func(s appsv1.DaemonSetStatus) bool {
		return s.NumberMisscheduled == 1 && s.DesiredNumberScheduled == 1 && s.CurrentNumberScheduled == 1
	})
	e.waitPlacement("agent", "n4=agent:1", "n5=agent:1")
	e.updateNode("n5", func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "maintenance", Effect: corev1.TaintEffectNoExecute})
	})
	e.waitPlacement("agent", "n4=agent:1")
}

func TestHostNetworkPodsTolerateNetworkUnavailable(t *testing.T) {
	e := start(t)
	e.createNode("n1", nil, corev1.Taint{Key: corev1.TaintNodeNetworkUnavailable, Effect: corev1.TaintEffectNoSchedule})
	e.createNode("n2", nil)
	e.create(newDaemonSet("plain"))
	host := newDaemonSet("host")
	host.Spec.Template.Spec.HostNetwork = true
	e.create(host)
	e.waitPlacement("plain", "n2=agent:1")
	e.waitPlacement("host", "n1=agent:1", "n2=agent:1")
}

func TestFailedAndSucceededPodsAreReplaced(t *testing.T) {
	e := start(t)
	e.createNode("n1", nil)
	e.create(newDaemonSet("agent"))
	e.waitStatus("agent", "available", func(s appsv1.DaemonSetStatus) bool { return s.NumberAvailable == 1 })
	for _, phase := range []corev1.PodPhase{corev1.PodFailed, corev1.PodSucceeded} {
		var old corev1.Pod
		e.eventually("a running pod", func() bool {
			pods := e.pods("agent")
			if len(pods) == 1 && pods[0].Status.Phase == corev1.PodRunning {
				old = pods[0]
			}
			return old.Name != ""
		})
		// The fake kubelet may write the pod meanwhile.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			pod, err := e.c.CoreV1().Pods(ns).Get(t.Context(), old.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pod.Status.Phase = phase
			_, err = e.c.CoreV1().Pods(ns).UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		e.eventually("a replacement", func() bool {
			pods := e.pods("agent")
			return len(pods) == 1 && pods[0].UID != old.UID
		})
	}
	e.waitEvent("agent", "FailedDaemonPod: Found failed daemon pod default/")
	e.waitEvent("agent", "SucceededDaemonPod: Found succeeded daemon pod default/")
}

func TestOrphanPodsAreAdopted(t *testing.T) {
	e := start(t)
	e.createNode("n1", nil)
	orphan := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stray", Labels: map[string]string{"app": "agent"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agent", Image: "agent:1"}}}}
	if _, err := e.c.CoreV1().Pods(ns).Create(t.Context(), orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// OnDelete, so that the adopted pod (without a revision hash, hence
	// outdated) is not replaced.
	ds := newDaemonSet("agent")
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	ds = e.create(ds)
	e.eventually("stray adopted", func() bool {
		p, err := e.c.CoreV1().Pods(ns).Get(t.Context(), "stray", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ref := metav1.GetControllerOf(p)
		return ref != nil && ref.UID == ds.UID
	})
	// It is the node's pod: no second one is created.
	s := e.waitStatus("agent", "scheduled", func(s appsv1.DaemonSetStatus) bool { return s.CurrentNumberScheduled == 1 && s.NumberAvailable == 1 })
	if pods := e.pods("agent"); len(pods) != 1 || s.UpdatedNumberScheduled != 0 {
		t.Errorf("pods %v status %+v", e.placement("agent"), s)
	}
}
