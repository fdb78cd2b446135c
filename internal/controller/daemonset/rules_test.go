package daemonset

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func taint(key string, effect corev1.TaintEffect) corev1.Taint {
	return corev1.Taint{Key: key, Value: "x", Effect: effect}
}

func TestShouldRunOnNode(t *testing.T) {
	base := func() *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "default"}, Spec: appsv1.DaemonSetSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}},
		}}
	}
	withNodeSelector := func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeSelector = map[string]string{"disk": "ssd"} }
	withAffinity := func(ds *appsv1.DaemonSet) {
		ds.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}}}},
		}}}
	}
	hostNetwork := func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.HostNetwork = true }
	tolerating := func(key string) func(*appsv1.DaemonSet) {
		return func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Tolerations = append(ds.Spec.Template.Spec.Tolerations, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists})
		}
	}
	pinnedTo := func(name string) func(*appsv1.DaemonSet) {
		return func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.NodeName = name }
	}
	for _, tc := range []struct {
		name           string
		ds             []func(*appsv1.DaemonSet)
		labels         map[string]string
		taints         []corev1.Taint
		run, keepGoing bool
	}{
		{name: "plain node", run: true, keepGoing: true},
		{name: "nodeSelector matches", ds: fns(withNodeSelector), labels: map[string]string{"disk": "ssd"}, run: true, keepGoing: true},
		{name: "nodeSelector differs", ds: fns(withNodeSelector), labels: map[string]string{"disk": "hdd"}},
		{name: "required affinity matches", ds: fns(withAffinity), labels: map[string]string{"zone": "b"}, run: true, keepGoing: true},
		{name: "required affinity differs", ds: fns(withAffinity), labels: map[string]string{"zone": "c"}},
		{name: "template nodeName elsewhere", ds: fns(pinnedTo("other"))},
		{name: "template nodeName here", ds: fns(pinnedTo("n")), run: true, keepGoing: true},
		{name: "untolerated NoSchedule: stay, no new pod", taints: []corev1.Taint{taint("dedicated", corev1.TaintEffectNoSchedule)}, keepGoing: true},
		{name: "untolerated NoExecute: leave", taints: []corev1.Taint{taint("dedicated", corev1.TaintEffectNoExecute)}},
		{name: "PreferNoSchedule ignored", taints: []corev1.Taint{taint("dedicated", corev1.TaintEffectPreferNoSchedule)}, run: true, keepGoing: true},
		{name: "tolerated by the template", ds: fns(tolerating("dedicated")), taints: []corev1.Taint{taint("dedicated", corev1.TaintEffectNoExecute)}, run: true, keepGoing: true},
		{name: "not-ready NoExecute tolerated", taints: []corev1.Taint{taint(corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute)}, run: true, keepGoing: true},
		{name: "unreachable NoExecute tolerated", taints: []corev1.Taint{taint(corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute)}, run: true, keepGoing: true},
		{name: "not-ready NoSchedule not tolerated", taints: []corev1.Taint{taint(corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule)}, keepGoing: true},
		{name: "disk-pressure tolerated", taints: []corev1.Taint{taint(corev1.TaintNodeDiskPressure, corev1.TaintEffectNoSchedule)}, run: true, keepGoing: true},
		{name: "memory-pressure tolerated", taints: []corev1.Taint{taint(corev1.TaintNodeMemoryPressure, corev1.TaintEffectNoSchedule)}, run: true, keepGoing: true},
		{name: "pid-pressure tolerated", taints: []corev1.Taint{taint(corev1.TaintNodePIDPressure, corev1.TaintEffectNoSchedule)}, run: true, keepGoing: true},
		{name: "unschedulable tolerated", taints: []corev1.Taint{taint(corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule)}, run: true, keepGoing: true},
		{name: "network-unavailable: not without hostNetwork", taints: []corev1.Taint{taint(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule)}, keepGoing: true},
		{name: "network-unavailable: tolerated with hostNetwork", ds: fns(hostNetwork), taints: []corev1.Taint{taint(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule)}, run: true, keepGoing: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := base()
			for _, f := range tc.ds {
				f(ds)
			}
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: tc.labels}, Spec: corev1.NodeSpec{Taints: tc.taints}}
			run, keepGoing := shouldRun(node, ds)
			if run != tc.run || keepGoing != tc.keepGoing {
				t.Errorf("shouldRun = %v, shouldContinueRunning = %v; want %v, %v", run, keepGoing, tc.run, tc.keepGoing)
			}
		})
	}
}

func fns(f ...func(*appsv1.DaemonSet)) []func(*appsv1.DaemonSet) { return f }

func TestDaemonTolerationsReplaceMatchingOnes(t *testing.T) {
	spec := &corev1.PodSpec{Tolerations: []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
		{Key: "mine", Operator: corev1.TolerationOpExists},
	}}
	addDaemonTolerations(spec)
	if len(spec.Tolerations) != 7 {
		t.Fatalf("tolerations %+v", spec.Tolerations)
	}
	if spec.Tolerations[0].TolerationSeconds != nil {
		t.Errorf("not-ready toleration kept its tolerationSeconds: daemon pods tolerate it forever")
	}
	addDaemonTolerations(spec)
	if len(spec.Tolerations) != 7 {
		t.Errorf("adding twice duplicated tolerations: %+v", spec.Tolerations)
	}
}

func TestPinToNodeReplacesRequiredTerms(t *testing.T) {
	a := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}}}},
	}}}
	for _, in := range []*corev1.Affinity{nil, {}, {NodeAffinity: &corev1.NodeAffinity{}}, a} {
		out := pinToNode(in, "n1")
		pod := &corev1.Pod{Spec: corev1.PodSpec{Affinity: out}}
		if node, err := targetNode(pod); err != nil || node != "n1" {
			t.Errorf("target of %+v = %q, %v", out, node, err)
		}
		terms := out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		if len(terms) != 1 || len(terms[0].MatchExpressions) != 0 || terms[0].MatchFields[0].Key != "metadata.name" {
			t.Errorf("terms %+v", terms)
		}
	}
}

func TestUpdateBoundsFromPercentages(t *testing.T) {
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
		Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{
			MaxUnavailable: ptr.To(intstr.FromString("10%")), MaxSurge: ptr.To(intstr.FromString("25%")),
		},
	}}}
	if n, _ := unavailableCount(ds, 5); n != 1 {
		t.Errorf("10%% of 5 = %d, want 1 (rounded up)", n)
	}
	if n, _ := surgeCount(ds, 5); n != 2 {
		t.Errorf("25%% of 5 = %d, want 2 (rounded up)", n)
	}
	if !allowsSurge(ds) {
		t.Error("allowsSurge false")
	}
	ds.Spec.UpdateStrategy.Type = appsv1.OnDeleteDaemonSetStrategyType
	if allowsSurge(ds) {
		t.Error("OnDelete allows surge")
	}
}
