package statefulset_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func setImage(img string) func(*appsv1.StatefulSet) {
	return func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers[0].Image = img }
}

func TestRollingUpdateRespectsPartitionAndGoesDownward(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 3))
	e.readyInOrder("web-0", "web-1", "web-2")
	before := e.waitStatus("web", "all ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 3 })

	e.updateSet("web", func(s *appsv1.StatefulSet) {
		setImage("nginx:2")(s)
		s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr.To[int32](2)
	})
	// Only web-2 (ordinal >= partition) is replaced.
	e.eventually("web-2 updated", func() bool { p := e.pod("web-2"); return p != nil && image(p) == "nginx:2" })
	e.ready("web-2")
	s := e.waitStatus("web", "partition done", func(s appsv1.StatefulSetStatus) bool { return s.UpdatedReplicas == 1 && s.ReadyReplicas == 3 })
	if s.CurrentRevision != before.CurrentRevision || s.UpdateRevision == before.UpdateRevision || s.CurrentReplicas != 2 {
		t.Errorf("status during a partitioned update %+v", s)
	}
	for _, name := range []string{"web-0", "web-1"} {
		if image(e.pod(name)) != "nginx:1" {
			t.Errorf("%s updated below the partition", name)
		}
	}
	// A pod below the partition is recreated at the current revision.
	if err := e.c.CoreV1().Pods(ns).Delete(t.Context(), "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.ready("web-0")
	if image(e.pod("web-0")) != "nginx:1" {
		t.Error("web-0 below the partition came back at the update revision")
	}

	// Lowering the partition rolls web-1, then web-0, each after the
	// previous one is ready.
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr.To[int32](0) })
	e.eventually("web-1 updated", func() bool { p := e.pod("web-1"); return p != nil && image(p) == "nginx:2" })
	if image(e.pod("web-0")) != "nginx:1" {
		t.Error("web-0 updated before web-1 was ready")
	}
	e.ready("web-1")
	e.eventually("web-0 updated", func() bool { p := e.pod("web-0"); return p != nil && image(p) == "nginx:2" })
	e.ready("web-0")
	s = e.waitStatus("web", "update complete", func(s appsv1.StatefulSetStatus) bool { return s.CurrentRevision == s.UpdateRevision })
	if s.CurrentReplicas != 3 || s.UpdatedReplicas != 3 || s.ReadyReplicas != 3 || s.AvailableReplicas != 3 {
		t.Errorf("status after the update %+v", s)
	}
}

func TestMaxUnavailableUpdatesSeveralPodsAtOnce(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 4).parallel().with(func(s *appsv1.StatefulSet) {
		s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{MaxUnavailable: ptr.To(intstr.FromInt32(2))}
	}))
	e.readyInOrder("web-0", "web-1", "web-2", "web-3")
	e.waitStatus("web", "all ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 4 })

	e.updateSet("web", setImage("nginx:2"))
	// The two highest ordinals go together; the others wait for them.
	e.eventually("web-2 and web-3 updated", func() bool {
		p2, p3 := e.pod("web-2"), e.pod("web-3")
		return p2 != nil && p3 != nil && image(p2) == "nginx:2" && image(p3) == "nginx:2"
	})
	if image(e.pod("web-1")) != "nginx:1" || image(e.pod("web-0")) != "nginx:1" {
		t.Fatal("more than maxUnavailable pods updated at once")
	}
	e.ready("web-3")
	e.ready("web-2")
	e.eventually("web-0 and web-1 updated", func() bool {
		p0, p1 := e.pod("web-0"), e.pod("web-1")
		return p0 != nil && p1 != nil && image(p0) == "nginx:2" && image(p1) == "nginx:2"
	})
}

func TestOnDeleteUpdatesOnlyDeletedPods(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2).with(func(s *appsv1.StatefulSet) {
		s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
	}))
	e.readyInOrder("web-0", "web-1")
	e.updateSet("web", setImage("nginx:2"))
	s := e.waitStatus("web", "new revision", func(s appsv1.StatefulSetStatus) bool { return s.UpdateRevision != s.CurrentRevision })
	if s.UpdatedReplicas != 0 || s.CurrentReplicas != 2 {
		t.Errorf("status %+v", s)
	}
	if image(e.pod("web-1")) != "nginx:1" {
		t.Fatal("OnDelete replaced a pod")
	}
	if err := e.c.CoreV1().Pods(ns).Delete(t.Context(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("web-1 recreated at the update revision", func() bool { p := e.pod("web-1"); return p != nil && image(p) == "nginx:2" })
	e.ready("web-1")
	s = e.waitStatus("web", "one updated", func(s appsv1.StatefulSetStatus) bool { return s.UpdatedReplicas == 1 })
	if s.CurrentReplicas != 1 || image(e.pod("web-0")) != "nginx:1" {
		t.Errorf("status %+v", s)
	}
}

func TestRevisionHistoryRollbackAndTrimming(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 1).with(func(s *appsv1.StatefulSet) { s.Spec.RevisionHistoryLimit = ptr.To[int32](1) }))
	e.ready("web-0")
	first := e.waitStatus("web", "ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 1 }).UpdateRevision

	revs := e.revisions("web")
	if len(revs) != 1 || revs[0].Name != first || revs[0].Revision != 1 {
		t.Fatalf("revisions %v", names(revs))
	}
	r := revs[0]
	hash := r.Labels["controller.kubernetes.io/hash"]
	if r.Name != "web-"+hash || !strings.HasPrefix(string(r.Data.Raw), `{"spec":{"template":{"$patch":"replace","metadata":`) {
		t.Errorf("revision %s hash %s data %s", r.Name, hash, r.Data.Raw)
	}
	if ref := metav1.GetControllerOf(&r); ref == nil || ref.Kind != "StatefulSet" || ref.Name != "web" {
		t.Errorf("revision owner %+v", ref)
	}

	rollTo := func(img string) string {
		e.updateSet("web", setImage(img))
		e.eventually("web-0 at "+img, func() bool { p := e.pod("web-0"); return p != nil && image(p) == img })
		e.ready("web-0")
		return e.waitStatus("web", "rolled to "+img, func(s appsv1.StatefulSetStatus) bool {
			return s.CurrentRevision == s.UpdateRevision && s.ReadyReplicas == 1
		}).UpdateRevision
	}
	second := rollTo("nginx:2")
	rollTo("nginx:3")
	// With a limit of 1, the first revision was trimmed; the second, not
	// live, remains as the one historic revision.
	e.eventually("history trimmed", func() bool { return len(e.revisions("web")) == 2 })
	if revs := e.revisions("web"); revs[0].Name != second || revs[0].Revision != 2 || revs[1].Revision != 3 {
		t.Fatalf("revisions %v", names(revs))
	}
	// Going back to nginx:2 reuses its revision, renumbered 4.
	if back := rollTo("nginx:2"); back != second {
		t.Errorf("rollback created %s instead of reusing %s", back, second)
	}
	e.eventually("reused revision renumbered", func() bool {
		revs := e.revisions("web")
		return len(revs) == 2 && revs[1].Name == second && revs[1].Revision == 4
	})
}

func names(revs []appsv1.ControllerRevision) []string {
	var out []string
	for _, r := range revs {
		out = append(out, r.Name)
	}
	return out
}
