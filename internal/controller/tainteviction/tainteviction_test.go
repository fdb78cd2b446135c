package tainteviction

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestEvictionTime(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	added := metav1.NewTime(now.Add(-10 * time.Second))
	taint := func(key string) corev1.Taint {
		return corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute, TimeAdded: &added}
	}
	tol := func(key string, secs *int64) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs}
	}
	for _, tc := range []struct {
		name        string
		tolerations []corev1.Toleration
		taints      []corev1.Taint
		want        time.Time // zero: never
	}{
		{"no taints", nil, nil, time.Time{}},
		{"NoSchedule only", nil, []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}}, time.Time{}},
		{"not tolerated", []corev1.Toleration{tol("b", nil)}, []corev1.Taint{taint("a")}, now},
		{"one of two not tolerated", []corev1.Toleration{tol("a", nil)}, []corev1.Taint{taint("a"), taint("b")}, now},
		{"tolerated for ever", []corev1.Toleration{tol("a", nil)}, []corev1.Taint{taint("a")}, time.Time{}},
		{"tolerated for 60 s", []corev1.Toleration{tol("a", ptr.To[int64](60))}, []corev1.Taint{taint("a")}, added.Add(60 * time.Second)},
		{"smallest wins", []corev1.Toleration{tol("a", ptr.To[int64](60)), tol("b", ptr.To[int64](5)), tol("c", nil)},
			[]corev1.Taint{taint("a"), taint("b"), taint("c")}, added.Add(5 * time.Second)},
		{"negative is at once", []corev1.Toleration{tol("a", ptr.To[int64](-1))}, []corev1.Taint{taint("a")}, added.Time},
		{"first matching toleration is used", []corev1.Toleration{{Operator: corev1.TolerationOpExists}, tol("a", ptr.To[int64](1))},
			[]corev1.Taint{taint("a")}, time.Time{}},
		{"no timeAdded counts from now", []corev1.Toleration{tol("a", ptr.To[int64](30))},
			[]corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoExecute}}, now.Add(30 * time.Second)},
		{"huge tolerationSeconds", []corev1.Toleration{tol("a", ptr.To[int64](1<<62))}, []corev1.Taint{taint("a")},
			added.Add(time.Duration(1<<63-1) / time.Second * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, ok := evictionTime(tc.tolerations, tc.taints, now)
			if ok != !tc.want.IsZero() || !at.Equal(tc.want) {
				t.Fatalf("evictionTime = %v, %v; want %v", at, ok, tc.want)
			}
		})
	}
}

func TestTaintsWithoutTimeAddedCountFromFirstSight(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	c := &Controller{now: func() time.Time { return now }, firstSeen: map[string]map[corev1.Taint]time.Time{}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
		{Key: "a", Effect: corev1.TaintEffectNoExecute},
		{Key: "b", Effect: corev1.TaintEffectNoSchedule},
	}}}
	first := c.stamped(node)
	if len(first) != 1 || !first[0].TimeAdded.Time.Equal(now) {
		t.Fatalf("stamped = %+v", first)
	}
	if node.Spec.Taints[0].TimeAdded != nil {
		t.Fatal("stamped changed the node")
	}
	now = now.Add(time.Minute)
	if again := c.stamped(node); !again[0].TimeAdded.Time.Equal(now.Add(-time.Minute)) {
		t.Fatalf("a taint seen before was stamped anew: %v", again[0].TimeAdded)
	}
	// Gone and back: counted from its return.
	c.stamped(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	if back := c.stamped(node); !back[0].TimeAdded.Time.Equal(now) {
		t.Fatalf("a returning taint kept its old time: %v", back[0].TimeAdded)
	}
}
