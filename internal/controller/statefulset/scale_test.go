package statefulset_test

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestOrderedReadyCreatesPodsOneAtATimeWithIdentityAndClaims(t *testing.T) {
	e := start(t)
	set := e.create(newSet("web", 3).withClaim("www"))

	e.waitPods("web", "web-0")
	pod := e.pod("web-0")
	if pod.Spec.Hostname != "web-0" || pod.Spec.Subdomain != "web-svc" {
		t.Errorf("hostname %q subdomain %q", pod.Spec.Hostname, pod.Spec.Subdomain)
	}
	if pod.GenerateName != "web-" {
		t.Errorf("generateName %q", pod.GenerateName)
	}
	for k, v := range map[string]string{"app": "web", appsv1.StatefulSetPodNameLabel: "web-0", appsv1.PodIndexLabel: "0"} {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if ref := metav1.GetControllerOf(pod); ref == nil || ref.UID != set.UID || ref.Kind != "StatefulSet" || !*ref.BlockOwnerDeletion {
		t.Errorf("controllerRef %+v", ref)
	}
	if v := pod.Spec.Volumes[0]; v.Name != "www" || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "www-web-0" {
		t.Errorf("volumes %+v", pod.Spec.Volumes)
	}
	claim := e.claim("www-web-0")
	if claim == nil {
		t.Fatal("claim www-web-0 was not created")
	}
	if claim.Labels["app"] != "web" || claim.Labels["tier"] != "data" || len(claim.OwnerReferences) != 0 {
		t.Errorf("claim labels %v owners %v", claim.Labels, claim.OwnerReferences)
	}
	e.waitEvent("web", "SuccessfulCreate: create Claim www-web-0 Pod web-0 in StatefulSet web success")
	e.waitEvent("web", "SuccessfulCreate: create Pod web-0 in StatefulSet web successful")

	// web-1 waits for web-0 to be Running and Ready.
	e.waitStatus("web", "one replica seen", func(s appsv1.StatefulSetStatus) bool { return s.Replicas == 1 })
	if p := e.pod("web-1"); p != nil {
		t.Fatal("web-1 created before web-0 was ready")
	}
	e.setPodStatus("web-0", corev1.PodRunning, false)
	e.waitStatus("web", "web-0 running", func(s appsv1.StatefulSetStatus) bool { return s.Replicas == 1 })
	if p := e.pod("web-1"); p != nil {
		t.Fatal("web-1 created before web-0 was ready")
	}
	e.readyInOrder("web-0", "web-1", "web-2")
	e.waitPods("web", "web-0", "web-1", "web-2")

	s := e.waitStatus("web", "all ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 3 })
	if s.Replicas != 3 || s.AvailableReplicas != 3 || s.CurrentReplicas != 3 || s.UpdatedReplicas != 3 ||
		s.CurrentRevision == "" || s.CurrentRevision != s.UpdateRevision || s.CollisionCount == nil || *s.CollisionCount != 0 {
		t.Errorf("status %+v", s)
	}
	if e.pod("web-2").Labels[appsv1.StatefulSetRevisionLabel] != s.UpdateRevision {
		t.Errorf("pod revision label %q, want %q", e.pod("web-2").Labels[appsv1.StatefulSetRevisionLabel], s.UpdateRevision)
	}
}

func TestClaimBeingDeletedBlocksThePod(t *testing.T) {
	e := start(t)
	// A claim of the pod's name that is being deleted blocks it: upstream's
	// FailedCreate event names the claim.
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "www-web-0", Finalizers: []string{"example.com/hold"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := e.c.CoreV1().PersistentVolumeClaims(ns).Create(t.Context(), claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.CoreV1().PersistentVolumeClaims(ns).Delete(t.Context(), "www-web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.create(newSet("web", 1).withClaim("www"))
	e.waitEvent("web", "FailedCreate: create Pod web-0 in StatefulSet web failed error: pvc www-web-0 is being deleted")
	if e.pod("web-0") != nil {
		t.Fatal("web-0 created while its claim was being deleted")
	}
	c := e.claim("www-web-0")
	c.Finalizers = nil
	if _, err := e.c.CoreV1().PersistentVolumeClaims(ns).Update(t.Context(), c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitPods("web", "web-0")
}

func TestMinReadySecondsHoldsTheNextPod(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2).with(func(s *appsv1.StatefulSet) { s.Spec.MinReadySeconds = 1 }))
	e.ready("web-0")
	s := e.waitStatus("web", "web-0 ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 1 })
	if s.AvailableReplicas != 0 || e.pod("web-1") != nil {
		t.Fatalf("web-0 available before minReadySeconds: status %+v", s)
	}
	// The controller requeues itself for when web-0 becomes available.
	e.ready("web-1")
	e.waitStatus("web", "both available", func(s appsv1.StatefulSetStatus) bool { return s.AvailableReplicas == 2 })
}

func TestOrdinalsStart(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2).parallel().with(func(s *appsv1.StatefulSet) { s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 5} }))
	e.waitPods("web", "web-5", "web-6")
	if idx := e.pod("web-6").Labels[appsv1.PodIndexLabel]; idx != "6" {
		t.Errorf("pod-index %q", idx)
	}
	e.readyInOrder("web-5", "web-6")
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Ordinals.Start = 6 })
	// web-5 is now out of range, web-7 joins.
	e.waitPods("web", "web-6", "web-7")
}

func TestParallelCreatesAllPodsAtOnce(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 4).parallel().withClaim("data"))
	e.waitPods("web", "web-0", "web-1", "web-2", "web-3")
	for _, c := range []string{"data-web-0", "data-web-1", "data-web-2", "data-web-3"} {
		if e.claim(c) == nil {
			t.Errorf("claim %s missing", c)
		}
	}
	// Scaling down deletes all condemned pods at once, even unready ones.
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptrInt(1) })
	e.waitPods("web", "web-0")
}

func TestScaleDownGoesInReverseOrdinalOrder(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 3))
	e.readyInOrder("web-0", "web-1", "web-2")
	e.waitStatus("web", "all ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 3 })

	// A finalizer keeps web-2 terminating: web-1 must wait for it.
	hold(e, "web-2")
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptrInt(1) })
	e.eventually("web-2 terminating", func() bool { return e.pod("web-2").DeletionTimestamp != nil })
	e.waitStatus("web", "scale down observed", func(appsv1.StatefulSetStatus) bool { return true })
	if p := e.pod("web-1"); p == nil || p.DeletionTimestamp != nil {
		t.Fatal("web-1 deleted while web-2 was still terminating")
	}
	release(e, "web-2")
	e.waitPods("web", "web-0")
	e.waitEvent("web", "SuccessfulDelete: delete Pod web-1 in StatefulSet web successful")
	s := e.waitStatus("web", "one replica", func(s appsv1.StatefulSetStatus) bool { return s.Replicas == 1 })
	if s.ReadyReplicas != 1 || s.CurrentReplicas != 1 {
		t.Errorf("status %+v", s)
	}
}

func TestFailedAndSucceededPodsAreRecreated(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2))
	e.readyInOrder("web-0", "web-1")
	for _, phase := range []corev1.PodPhase{corev1.PodFailed, corev1.PodSucceeded} {
		old := e.pod("web-0").UID
		e.setPodStatus("web-0", phase, false)
		e.eventually("web-0 recreated", func() bool { p := e.pod("web-0"); return p != nil && p.UID != old })
		e.ready("web-0")
	}
	e.waitEvent("web", "SuccessfulDelete: delete Pod web-0 in StatefulSet web successful")
}

func TestOrphanPodsAreAdoptedAndReleased(t *testing.T) {
	e := start(t)
	// An orphan named like a member, matching the selector, is adopted.
	orphan := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1"}}}}
	orphan, err := e.c.CoreV1().Pods(ns).Create(t.Context(), orphan, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	set := e.create(newSet("web", 1))
	e.eventually("web-0 adopted", func() bool {
		p := e.pod("web-0")
		return p != nil && p.UID == orphan.UID && metav1.GetControllerOf(p) != nil && metav1.GetControllerOf(p).UID == set.UID
	})
	// It has no revision label, so once it runs the rolling update replaces
	// it with a pod at the update revision.
	e.setPodStatus("web-0", corev1.PodRunning, true)
	e.eventually("web-0 replaced", func() bool { p := e.pod("web-0"); return p != nil && p.UID != orphan.UID })
	e.ready("web-0")
	s := e.waitStatus("web", "ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 1 && s.UpdatedReplicas == 1 })
	if p := e.pod("web-0"); p.Labels[appsv1.StatefulSetRevisionLabel] != s.UpdateRevision {
		t.Errorf("labels %v", p.Labels)
	}

	// A pod that stops matching the selector is released.
	patch := `{"metadata":{"labels":{"app":"other"}}}`
	if _, err := e.c.CoreV1().Pods(ns).Patch(t.Context(), "web-0", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("web-0 released", func() bool { return metav1.GetControllerOf(e.pod("web-0")) == nil })
}

// hold adds a finalizer to the pod so that deleting it leaves it terminating.
func hold(e *env, pod string) {
	e.t.Helper()
	patch := `{"metadata":{"finalizers":["example.com/hold"]}}`
	if _, err := e.c.CoreV1().Pods(ns).Patch(e.t.Context(), pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func release(e *env, pod string) {
	e.t.Helper()
	p := e.pod(pod)
	p.Finalizers = slices.DeleteFunc(p.Finalizers, func(f string) bool { return f == "example.com/hold" })
	if _, err := e.c.CoreV1().Pods(ns).Update(e.t.Context(), p, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func ptrInt(n int32) *int32 { return &n }
