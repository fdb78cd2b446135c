package replicaset

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// pod builds a test pod: scheduled on node1, Running, created an hour ago.
type podBuilder struct{ p *corev1.Pod }

func newPod(name string) podBuilder {
	return podBuilder{&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name), CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec:       corev1.PodSpec{NodeName: "node1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}}
}

func (b podBuilder) node(n string) podBuilder { b.p.Spec.NodeName = n; return b }
func (b podBuilder) phase(ph corev1.PodPhase) podBuilder {
	b.p.Status.Phase = ph
	return b
}
func (b podBuilder) readyFor(d time.Duration) podBuilder {
	b.p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now.Add(-d))}}
	return b
}
func (b podBuilder) cost(v string) podBuilder {
	b.p.Annotations = map[string]string{PodDeletionCost: v}
	return b
}
func (b podBuilder) restarts(n int32) podBuilder {
	b.p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", RestartCount: n}}
	return b
}
func (b podBuilder) age(d time.Duration) podBuilder {
	b.p.CreationTimestamp = metav1.NewTime(now.Add(-d))
	return b
}
func (b podBuilder) created(t time.Time) podBuilder {
	b.p.CreationTimestamp = metav1.NewTime(t)
	return b
}

func TestDeletionRanking(t *testing.T) {
	// Each case: first is deleted before second, whatever the order given.
	cases := []struct {
		rule          string
		first, second podBuilder
		// colocated pods on the node of each, when the rule needs them.
		firstColocated, secondColocated int
	}{
		{rule: "unassigned before assigned", first: newPod("a").node("").readyFor(time.Hour), second: newPod("b").phase(corev1.PodPending)},
		{rule: "pending before unknown", first: newPod("a").phase(corev1.PodPending), second: newPod("b").phase(corev1.PodUnknown)},
		{rule: "unknown before running", first: newPod("a").phase(corev1.PodUnknown), second: newPod("b")},
		{rule: "not ready before ready", first: newPod("a"), second: newPod("b").readyFor(time.Minute)},
		{rule: "lower deletion cost first", first: newPod("a").readyFor(time.Second).cost("-5"), second: newPod("b").readyFor(time.Hour)},
		{rule: "zero cost before positive", first: newPod("a").readyFor(time.Second), second: newPod("b").readyFor(time.Hour).cost("10")},
		{rule: "invalid cost counts as zero", first: newPod("a").cost("+10"), second: newPod("b").cost("1")},
		{rule: "leading zero is invalid", first: newPod("a").cost("010"), second: newPod("b").cost("1")},
		{rule: "more crowded node first", first: newPod("a").readyFor(time.Hour), second: newPod("b").node("node2").readyFor(time.Second), firstColocated: 3, secondColocated: 1},
		{rule: "ready for less time first", first: newPod("a").readyFor(time.Minute), second: newPod("b").readyFor(time.Hour)},
		{rule: "ready times in the same log bucket tie, by UID", first: newPod("a").readyFor(70 * time.Second).restarts(0), second: newPod("b").readyFor(80 * time.Second).restarts(9)},
		{rule: "more restarts first", first: newPod("a").restarts(5), second: newPod("b").restarts(1)},
		{rule: "newer first", first: newPod("a").age(time.Minute), second: newPod("b").age(time.Hour)},
		{rule: "creation times in the same log bucket tie, by UID", first: newPod("a").age(70 * time.Second), second: newPod("b").age(80 * time.Second)},
		{rule: "empty creation time first", first: newPod("b").created(time.Time{}), second: newPod("a")},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			a := rankedPod{pod: tc.first.p, colocated: tc.firstColocated}
			b := rankedPod{pod: tc.second.p, colocated: tc.secondColocated}
			if !deletesFirst(a, b, now) {
				t.Errorf("%s is not deleted before %s", a.pod.Name, b.pod.Name)
			}
			if deletesFirst(b, a, now) {
				t.Errorf("%s is deleted before %s", b.pod.Name, a.pod.Name)
			}
		})
	}
}

func TestPodsToDeleteCountsRelatedPodsOnTheNode(t *testing.T) {
	alone := newPod("alone").node("n1").readyFor(time.Second).p
	crowded := newPod("crowded").node("n2").readyFor(time.Hour).p
	// Pods of a sibling ReplicaSet (same Deployment) on n2.
	sibling1 := newPod("s1").node("n2").p
	sibling2 := newPod("s2").node("n2").p
	gone := newPod("gone").node("n1").phase(corev1.PodSucceeded).p // not active: not counted
	pods := []*corev1.Pod{alone, crowded}
	related := []*corev1.Pod{alone, crowded, sibling1, sibling2, gone}

	got := podsToDelete(pods, related, 1, now)
	if len(got) != 1 || got[0] != crowded {
		t.Fatalf("deleted %v, want the pod on the crowded node", names(got))
	}
	// No related pods (an owner with no controller): ready time decides.
	got = podsToDelete(pods, nil, 1, now)
	if len(got) != 1 || got[0] != alone {
		t.Fatalf("deleted %v, want the pod ready for less time", names(got))
	}
	if got := podsToDelete(pods, related, 5, now); len(got) != 2 {
		t.Fatalf("deleting more than there are: %v", names(got))
	}
}

func TestPodsToDeleteOrder(t *testing.T) {
	pods := []*corev1.Pod{
		newPod("ready-old").readyFor(time.Hour).p,
		newPod("running").p,
		newPod("pending").phase(corev1.PodPending).p,
		newPod("unassigned").node("").phase(corev1.PodPending).p,
		newPod("ready-new").readyFor(time.Second).p,
	}
	got := names(podsToDelete(pods, pods, 4, now))
	want := []string{"unassigned", "pending", "running", "ready-new"}
	if !slices.Equal(got, want) {
		t.Fatalf("deletion order %v, want %v", got, want)
	}
}

func names(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func TestSlowStartBatch(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name      string
		count     int
		failAt    int32 // the call that fails, counting from 1; 0 for none
		wantDone  int
		wantCalls int32
	}{
		{"all succeed in batches 1,2,4,3", 10, 0, 10, 10},
		{"first call fails: nothing more", 10, 1, 0, 1},
		{"a failure in the batch of 2 stops before the batch of 4", 10, 3, 2, 3},
		{"a failure in the batch of 4", 10, 5, 6, 7},
		{"nothing to do", 0, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			done, err := slowStartBatch(tc.count, 1, func() error {
				if n := calls.Add(1); n == tc.failAt {
					return boom
				}
				return nil
			})
			if done != tc.wantDone || calls.Load() != tc.wantCalls {
				t.Fatalf("done %d in %d calls, want %d in %d", done, calls.Load(), tc.wantDone, tc.wantCalls)
			}
			if (err != nil) != (tc.failAt != 0) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestPodFromTemplate(t *testing.T) {
	template := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
		Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a": "b"}, Finalizers: []string{"example.com/f"},
	}}
	ref := &metav1.OwnerReference{Kind: "ReplicaSet", Name: "web"}
	pod := podFromTemplate(template, "web", ref)
	if pod.GenerateName != "web-" || pod.Labels["app"] != "web" || pod.Annotations["a"] != "b" || len(pod.Finalizers) != 1 || len(pod.OwnerReferences) != 1 {
		t.Fatalf("pod = %+v", pod.ObjectMeta)
	}
	pod.Labels["x"] = "y"
	if _, ok := template.Labels["x"]; ok {
		t.Fatal("the pod shares the template's labels")
	}
}
