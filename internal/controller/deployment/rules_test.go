package deployment

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestResolveFenceposts(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { return ptr.To(intstr.FromString(s)) }
	num := func(n int32) *intstr.IntOrString { return ptr.To(intstr.FromInt32(n)) }
	cases := []struct {
		name                       string
		surge, unavailable         *intstr.IntOrString
		desired                    int32
		wantSurge, wantUnavailable int32
		wantErr                    bool
	}{
		{"defaults of 25% on 10: surge rounds up, unavailable down", pct("25%"), pct("25%"), 10, 3, 2, false},
		{"25% of 4 is exact", pct("25%"), pct("25%"), 4, 1, 1, false},
		{"25% of 1", pct("25%"), pct("25%"), 1, 1, 0, false},
		{"30% of 5", pct("30%"), pct("30%"), 5, 2, 1, false},
		{"no surge and unavailable rounded to zero: unavailable 1", num(0), pct("25%"), 3, 0, 1, false},
		{"unset both: unavailable 1", nil, nil, 5, 0, 1, false},
		{"numbers as they are", num(2), num(3), 10, 2, 3, false},
		{"100% surge", pct("100%"), num(0), 7, 7, 0, false},
		{"zero replicas", pct("25%"), pct("25%"), 0, 0, 1, false},
		{"not a percentage", ptr.To(intstr.FromString("abc")), nil, 5, 0, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			surge, unavailable, err := resolveFenceposts(tc.surge, tc.unavailable, tc.desired)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tc.wantErr && (surge != tc.wantSurge || unavailable != tc.wantUnavailable) {
				t.Fatalf("surge %d unavailable %d, want %d and %d", surge, unavailable, tc.wantSurge, tc.wantUnavailable)
			}
		})
	}
}

func rollingDeployment(replicas int32, surge, unavailable intstr.IntOrString) *appsv1.Deployment {
	return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To(replicas),
		Strategy: appsv1.DeploymentStrategy{
			Type:          appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable},
		},
	}}
}

func TestMaxUnavailableIsAtMostReplicas(t *testing.T) {
	d := rollingDeployment(3, intstr.FromInt32(0), intstr.FromInt32(5))
	if got := maxUnavailable(d); got != 3 {
		t.Fatalf("maxUnavailable = %d, want 3", got)
	}
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if maxUnavailable(d) != 0 || maxSurge(d) != 0 {
		t.Fatal("Recreate has a surge or unavailability")
	}
}

func rs(name string, replicas, available int32) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}},
		Spec:       appsv1.ReplicaSetSpec{Replicas: ptr.To(replicas)},
		Status:     appsv1.ReplicaSetStatus{Replicas: replicas, AvailableReplicas: available},
	}
}

func TestNewReplicaSetReplicas(t *testing.T) {
	cases := []struct {
		name       string
		d          *appsv1.Deployment
		old, newRS *appsv1.ReplicaSet
		want       int32
	}{
		{"surge of 3 above 10", rollingDeployment(10, intstr.FromString("25%"), intstr.FromString("25%")), rs("old", 10, 10), rs("new", 0, 0), 3},
		{"surge used up", rollingDeployment(10, intstr.FromInt32(3), intstr.FromInt32(2)), rs("old", 8, 8), rs("new", 5, 0), 5},
		{"room for 2 more", rollingDeployment(10, intstr.FromInt32(3), intstr.FromInt32(2)), rs("old", 6, 6), rs("new", 5, 0), 7},
		{"never above replicas", rollingDeployment(10, intstr.FromInt32(5), intstr.FromInt32(0)), rs("old", 0, 0), rs("new", 8, 8), 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := newReplicaSetReplicas(tc.d, []*appsv1.ReplicaSet{tc.old, tc.newRS}, tc.newRS)
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	recreate := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](4), Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}}}
	if got, _ := newReplicaSetReplicas(recreate, nil, rs("new", 0, 0)); got != 4 {
		t.Fatalf("Recreate: %d, want 4", got)
	}
}

func TestProportionalShares(t *testing.T) {
	// Mid-rollout at 10 replicas (surge 3): old 8, new 5, both annotated
	// with max-replicas 13. Scaled to 20: 10 more to share.
	d := rollingDeployment(20, intstr.FromInt32(3), intstr.FromInt32(2))
	old, newRS := rs("old", 8, 8), rs("new", 5, 0)
	old.Annotations[MaxReplicasAnnotation] = "13"
	newRS.Annotations[MaxReplicasAnnotation] = "13"
	if got := proportion(old, d, 10, 0); got != 6 {
		t.Fatalf("old gets %d, want round(8*23/13)-8 = 6", got)
	}
	if got := proportion(newRS, d, 10, 6); got != 4 {
		t.Fatalf("new gets %d, want 4", got)
	}
	if got := proportion(newRS, d, 10, 8); got != 2 {
		t.Fatalf("new gets %d, want what is left: 2", got)
	}
	// Scaled down to 5 (8 allowed): 5 fewer.
	d.Spec.Replicas = ptr.To[int32](5)
	if got := proportion(old, d, -5, 0); got != -3 {
		t.Fatalf("old loses %d, want round(8*8/13)-8 = -3", -got)
	}
	d.Spec.Replicas = ptr.To[int32](0)
	if got := proportion(old, d, -13, 0); got != -8 {
		t.Fatalf("scaled to zero, old loses %d, want all 8", -got)
	}
}

func TestComputeHash(t *testing.T) {
	template := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "front"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.25"}}},
	}
	h := ComputeHash(template, nil)
	if h == "" || strings.ContainsAny(h, "aeiou013") {
		t.Fatalf("hash %q is not SafeEncodeString's alphabet", h)
	}
	// Pinned: a change here renames every ReplicaSet of every Deployment.
	if want := "6d456cf47f"; h != want {
		t.Errorf("hash = %q, want %q", h, want)
	}
	if ComputeHash(template.DeepCopy(), nil) != h {
		t.Fatal("the hash is not deterministic")
	}
	zero, one := ComputeHash(template, ptr.To[int32](0)), ComputeHash(template, ptr.To[int32](1))
	if zero == h || one == zero {
		t.Fatalf("collision counts do not change the hash: nil %s, 0 %s, 1 %s", h, zero, one)
	}
	changed := template.DeepCopy()
	changed.Spec.Containers[0].Image = "nginx:1.26"
	if ComputeHash(changed, nil) == h {
		t.Fatal("another image gives the same hash")
	}
}

func TestRevisionAnnotations(t *testing.T) {
	d := rollingDeployment(3, intstr.FromString("25%"), intstr.FromString("25%"))
	d.Annotations = map[string]string{
		"kubernetes.io/change-cause":       "kubectl set image",
		corev1.LastAppliedConfigAnnotation: "{}",
		RevisionAnnotation:                 "9",
	}
	r := rs("web-abc", 0, 0)
	if !setNewReplicaSetAnnotations(d, r, "1", false) {
		t.Fatal("nothing changed on a new ReplicaSet")
	}
	want := map[string]string{
		"kubernetes.io/change-cause": "kubectl set image",
		RevisionAnnotation:           "1",
		DesiredReplicasAnnotation:    "3",
		MaxReplicasAnnotation:        "4",
	}
	for k, v := range want {
		if r.Annotations[k] != v {
			t.Errorf("%s = %q, want %q", k, r.Annotations[k], v)
		}
	}
	if _, ok := r.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		t.Error("the last-applied configuration was copied")
	}
	// Rolled back to: the old revision goes to the history.
	if !setNewReplicaSetAnnotations(d, r, "3", true) || r.Annotations[RevisionAnnotation] != "3" || r.Annotations[RevisionHistoryAnnotation] != "1" {
		t.Fatalf("annotations after a rollback: %v", r.Annotations)
	}
	setNewReplicaSetAnnotations(d, r, "5", true)
	if r.Annotations[RevisionHistoryAnnotation] != "1,3" {
		t.Fatalf("history %q, want 1,3", r.Annotations[RevisionHistoryAnnotation])
	}
	// A lower revision never lowers it.
	if setNewReplicaSetAnnotations(d, r, "2", true) || r.Annotations[RevisionAnnotation] != "5" {
		t.Fatalf("revision lowered: %v", r.Annotations)
	}
}
