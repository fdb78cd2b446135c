package statefulset_test

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

const (
	retain = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	remove = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
)

// owners names the kinds controlling a claim ("StatefulSet", "Pod").
func owners(claim *corev1.PersistentVolumeClaim) []string {
	var out []string
	for _, ref := range claim.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			out = append(out, ref.Kind+"/"+ref.Name)
		}
	}
	return out
}

func (e *env) deleteSet(name string) {
	e.t.Helper()
	err := e.c.AppsV1().StatefulSets(ns).Delete(e.t.Context(), name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil {
		e.t.Fatal(err)
	}
}

func TestRetentionDeleteDeleteGarbageCollectsClaims(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2).parallel().withClaim("data").retention(remove, remove))
	e.eventually("claims owned by the set", func() bool {
		for _, n := range []string{"data-web-0", "data-web-1"} {
			if c := e.claim(n); c == nil || len(owners(c)) != 1 || owners(c)[0] != "StatefulSet/web" {
				return false
			}
		}
		return true
	})
	e.readyInOrder("web-0", "web-1")

	// Scaling down hands the condemned claim to its pod; the garbage
	// collector deletes it after the pod.
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptrInt(1) })
	e.waitPods("web", "web-0")
	e.eventually("data-web-1 collected", func() bool { return e.claim("data-web-1") == nil })
	if got := owners(e.claim("data-web-0")); len(got) != 1 || got[0] != "StatefulSet/web" {
		t.Errorf("data-web-0 owners %v", got)
	}

	// Deleting the set deletes the remaining claim too.
	e.deleteSet("web")
	e.eventually("data-web-0 collected", func() bool { return e.claim("data-web-0") == nil })
}

func TestRetentionRetainKeepsClaims(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2).parallel().withClaim("data").retention(retain, retain))
	e.readyInOrder("web-0", "web-1")
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptrInt(1) })
	e.waitPods("web", "web-0")
	e.deleteSet("web")
	e.waitPods("web")
	for _, n := range []string{"data-web-0", "data-web-1"} {
		if c := e.claim(n); c == nil || len(c.OwnerReferences) != 0 {
			t.Errorf("claim %s: %v", n, c)
		}
	}
}

func TestRetentionScaledDeleteOnlyOwnsCondemnedClaims(t *testing.T) {
	e := start(t)
	e.create(newSet("web", 2).parallel().withClaim("data").retention(remove, retain))
	e.readyInOrder("web-0", "web-1")
	e.waitStatus("web", "ready", func(s appsv1.StatefulSetStatus) bool { return s.ReadyReplicas == 2 })
	if c := e.claim("data-web-1"); len(c.OwnerReferences) != 0 {
		t.Errorf("in-range claim owned: %v", owners(c))
	}
	// A finalizer keeps the condemned claim terminating after its pod is
	// gone; scaling up again must wait for it rather than reuse it.
	patch := `{"metadata":{"finalizers":["example.com/hold"]}}`
	if _, err := e.c.CoreV1().PersistentVolumeClaims(ns).Patch(t.Context(), "data-web-1", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptrInt(1) })
	e.waitPods("web", "web-0")
	e.eventually("data-web-1 owned by web-1 and being deleted", func() bool {
		c := e.claim("data-web-1")
		return c != nil && c.DeletionTimestamp != nil && len(owners(c)) == 1 && owners(c)[0] == "Pod/web-1"
	})
	e.updateSet("web", func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptrInt(2) })
	e.waitStatus("web", "scale up observed", func(appsv1.StatefulSetStatus) bool { return true })
	if e.pod("web-1") != nil {
		t.Fatal("web-1 created while its old claim was being deleted")
	}
	c := e.claim("data-web-1")
	c.Finalizers = nil
	if _, err := e.c.CoreV1().PersistentVolumeClaims(ns).Update(t.Context(), c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitPods("web", "web-0", "web-1")
	e.eventually("a fresh data-web-1", func() bool { c := e.claim("data-web-1"); return c != nil && c.DeletionTimestamp == nil })

	// whenDeleted=Retain: deleting the set leaves the claims.
	e.deleteSet("web")
	e.waitPods("web")
	if e.claim("data-web-0") == nil {
		t.Error("data-web-0 deleted with the set")
	}
}
