package gc_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/testserver"
)

// The collector runs inside the test server (app.startControllers): these
// tests drive it end to end through client-go.

type env struct {
	t   *testing.T
	ctx context.Context
	c   kubernetes.Interface
	ns  string
}

func setup(t *testing.T) *env {
	t.Helper()
	srv := testserver.Start(t)
	e := &env{t: t, ctx: t.Context(), c: testserver.Client(t, srv), ns: "gc-test"}
	if _, err := e.c.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// eventually polls cond until it holds, failing the test after a deadline.
func (e *env) eventually(what string, cond func() (bool, error)) {
	e.t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(e.ctx, 20*time.Millisecond, 8*time.Second, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok, nil
	})
	if err != nil {
		e.t.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

func ref(kind string, obj metav1.Object, block bool) metav1.OwnerReference {
	apiVersion := "v1"
	if kind == "StorageClass" {
		apiVersion = "storage.k8s.io/v1"
	}
	r := metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: obj.GetName(), UID: obj.GetUID()}
	if block {
		r.BlockOwnerDeletion = &block
	}
	return r
}

func (e *env) configMap(name string, owners []metav1.OwnerReference, finalizers ...string) *corev1.ConfigMap {
	e.t.Helper()
	cm, err := e.c.CoreV1().ConfigMaps(e.ns).Create(e.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: name, OwnerReferences: owners, Finalizers: finalizers}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating configmap %s: %v", name, err)
	}
	return cm
}

func (e *env) secret(name string, owners []metav1.OwnerReference) *corev1.Secret {
	e.t.Helper()
	s, err := e.c.CoreV1().Secrets(e.ns).Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: name, OwnerReferences: owners}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating secret %s: %v", name, err)
	}
	return s
}

func (e *env) pvc(name string, owners []metav1.OwnerReference) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	p, err := e.c.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: owners},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating pvc %s: %v", name, err)
	}
	return p
}

// gone polls until get reports NotFound.
func (e *env) gone(what string, get func() error) {
	e.t.Helper()
	e.eventually(what+" to be deleted", func() (bool, error) {
		err := get()
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

func (e *env) cmGone(name string) {
	e.t.Helper()
	e.gone("configmap "+name, func() error {
		_, err := e.c.CoreV1().ConfigMaps(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		return err
	})
}

func (e *env) getCM(name string) *corev1.ConfigMap {
	e.t.Helper()
	cm, err := e.c.CoreV1().ConfigMaps(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("configmap %s: %v", name, err)
	}
	return cm
}

// graphSynced waits until the collector has seen every configmap and secret
// created so far: watch events of a resource arrive in order, so once a
// sentinel created now (owned by a uid that never existed) is collected,
// everything created before it is in the graph.
func (e *env) graphSynced() {
	e.t.Helper()
	ghost := []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "ghost", UID: uuid.NewUUID()}}
	name := fmt.Sprintf("sentinel-%s", uuid.NewUUID()[:8])
	e.configMap(name, ghost)
	e.secret(name, ghost)
	e.cmGone(name)
	e.gone("secret "+name, func() error {
		_, err := e.c.CoreV1().Secrets(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		return err
	})
}

func (e *env) deleteCM(name string, policy metav1.DeletionPropagation) {
	e.t.Helper()
	if err := e.c.CoreV1().ConfigMaps(e.ns).Delete(e.ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy}); err != nil {
		e.t.Fatalf("deleting %s: %v", name, err)
	}
}

func TestBackgroundCascade(t *testing.T) {
	e := setup(t)
	owner := e.configMap("owner", nil)
	owned := []metav1.OwnerReference{ref("ConfigMap", owner, false)}
	e.configMap("dep-cm", owned)
	e.secret("dep-secret", owned)
	e.pvc("dep-pvc", owned)
	// A dependent of a dependent goes too.
	grandchild := e.configMap("grandchild", []metav1.OwnerReference{ref("ConfigMap", e.getCM("dep-cm"), false)})
	bystander := e.configMap("bystander", nil)

	e.deleteCM("owner", metav1.DeletePropagationBackground)
	e.cmGone("dep-cm")
	e.cmGone(grandchild.Name)
	e.gone("secret dep-secret", func() error {
		_, err := e.c.CoreV1().Secrets(e.ns).Get(e.ctx, "dep-secret", metav1.GetOptions{})
		return err
	})
	e.gone("pvc dep-pvc", func() error {
		_, err := e.c.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, "dep-pvc", metav1.GetOptions{})
		return err
	})
	if got := e.getCM(bystander.Name); got.UID != bystander.UID {
		t.Fatalf("bystander replaced")
	}
}

func TestOrphan(t *testing.T) {
	e := setup(t)
	owner := e.configMap("owner", nil)
	other := e.configMap("other-owner", nil)
	e.configMap("dep-cm", []metav1.OwnerReference{ref("ConfigMap", owner, true)})
	e.secret("dep-secret", []metav1.OwnerReference{ref("ConfigMap", owner, false), ref("ConfigMap", other, false)})
	e.graphSynced()

	e.deleteCM("owner", metav1.DeletePropagationOrphan)
	e.cmGone("owner")
	if refs := e.getCM("dep-cm").OwnerReferences; len(refs) != 0 {
		t.Errorf("dep-cm ownerReferences = %v, want none", refs)
	}
	s, err := e.c.CoreV1().Secrets(e.ns).Get(e.ctx, "dep-secret", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != other.UID {
		t.Errorf("dep-secret ownerReferences = %v, want only other-owner", s.OwnerReferences)
	}
}

func TestForeground(t *testing.T) {
	e := setup(t)
	const hold = "example.com/hold"
	owner := e.configMap("owner", nil)
	e.configMap("blocking", []metav1.OwnerReference{ref("ConfigMap", owner, true)}, hold)
	e.secret("plain", []metav1.OwnerReference{ref("ConfigMap", owner, true)})
	e.graphSynced()

	e.deleteCM("owner", metav1.DeletePropagationForeground)
	e.gone("secret plain", func() error {
		_, err := e.c.CoreV1().Secrets(e.ns).Get(e.ctx, "plain", metav1.GetOptions{})
		return err
	})
	e.eventually("blocking to be deleted", func() (bool, error) {
		return e.getCM("blocking").DeletionTimestamp != nil, nil
	})
	// The blocking dependent is held by its finalizer: the owner waits.
	o := e.getCM("owner")
	if o.DeletionTimestamp == nil || !slices.Contains(o.Finalizers, metav1.FinalizerDeleteDependents) {
		t.Fatalf("owner = deletionTimestamp %v, finalizers %v; want it waiting for its dependents", o.DeletionTimestamp, o.Finalizers)
	}

	b := e.getCM("blocking")
	b.Finalizers = nil
	if _, err := e.c.CoreV1().ConfigMaps(e.ns).Update(e.ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.cmGone("blocking")
	e.cmGone("owner")
}

func TestForegroundNoDependents(t *testing.T) {
	e := setup(t)
	e.configMap("owner", nil)
	e.deleteCM("owner", metav1.DeletePropagationForeground)
	e.cmGone("owner")
}

func TestTwoOwnersOneDeleted(t *testing.T) {
	e := setup(t)
	a := e.configMap("owner-a", nil)
	b := e.configMap("owner-b", nil)
	e.configMap("dep", []metav1.OwnerReference{ref("ConfigMap", a, false), ref("ConfigMap", b, false)})

	e.deleteCM("owner-a", metav1.DeletePropagationBackground)
	// The dangling reference is removed; the dependent stays.
	e.eventually("dep to lose its reference to owner-a", func() (bool, error) {
		refs := e.getCM("dep").OwnerReferences
		return len(refs) == 1 && refs[0].UID == b.UID, nil
	})
	e.deleteCM("owner-b", metav1.DeletePropagationBackground)
	e.cmGone("dep")
}

func TestDanglingReference(t *testing.T) {
	e := setup(t)
	named := e.configMap("named", nil)
	e.configMap("never-existed", []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "nobody", UID: uuid.NewUUID()}})
	// The name exists, but with another uid: that owner is gone too.
	e.configMap("wrong-uid", []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: named.Name, UID: uuid.NewUUID()}})
	e.cmGone("never-existed")
	e.cmGone("wrong-uid")
	if got := e.getCM(named.Name); got.UID != named.UID {
		t.Fatal("the named configmap was replaced")
	}
}

func TestRecreatedOwnerDoesNotSaveDependents(t *testing.T) {
	e := setup(t)
	old := e.configMap("owner", nil)
	e.configMap("old-dep", []metav1.OwnerReference{ref("ConfigMap", old, false)})

	e.deleteCM("owner", metav1.DeletePropagationBackground)
	recreated := e.configMap("owner", nil)
	e.configMap("new-dep", []metav1.OwnerReference{ref("ConfigMap", recreated, false)})
	e.cmGone("old-dep")
	e.graphSynced()
	if got := e.getCM("owner"); got.UID != recreated.UID {
		t.Fatal("the re-created owner was deleted")
	}
	e.getCM("new-dep")
}

func TestClusterScopedReferences(t *testing.T) {
	e := setup(t)
	sc, err := e.c.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "owner-class"}, Provisioner: "example.com/none"}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A namespaced dependent may have a cluster-scoped owner.
	e.configMap("of-class", []metav1.OwnerReference{ref("StorageClass", sc, false)})
	// A cluster-scoped dependent may not have a namespaced owner: it is
	// reported, and never collected.
	nsOwner := e.configMap("ns-owner", nil)
	invalid, err := e.c.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "invalid", OwnerReferences: []metav1.OwnerReference{ref("ConfigMap", nsOwner, false)}},
		Provisioner: "example.com/none"}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("an OwnerRefInvalidNamespace event", func() (bool, error) {
		evs, err := e.c.CoreV1().Events(metav1.NamespaceDefault).List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "OwnerRefInvalidNamespace" && ev.InvolvedObject.UID == invalid.UID && ev.Type == corev1.EventTypeWarning {
				return true, nil
			}
		}
		return false, nil
	})

	e.deleteCM(nsOwner.Name, metav1.DeletePropagationBackground)
	if err := e.c.StorageV1().StorageClasses().Delete(e.ctx, sc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.cmGone("of-class")
	e.graphSynced()
	if got, err := e.c.StorageV1().StorageClasses().Get(e.ctx, "invalid", metav1.GetOptions{}); err != nil || got.UID != invalid.UID {
		t.Fatalf("the cluster-scoped dependent with a namespaced owner was collected: %v", err)
	}
}

func TestOwnerInAnotherNamespace(t *testing.T) {
	e := setup(t)
	if _, err := e.c.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign, err := e.c.CoreV1().ConfigMaps("elsewhere").Create(e.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.graphSynced()
	// The reference means a configmap "foreign" of the dependent's own
	// namespace, which does not exist: the dependent is collected, and the
	// mismatch reported.
	dep := e.configMap("dep", []metav1.OwnerReference{ref("ConfigMap", foreign, false)})
	e.cmGone("dep")
	e.eventually("an OwnerRefInvalidNamespace event", func() (bool, error) {
		evs, err := e.c.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "OwnerRefInvalidNamespace" && ev.InvolvedObject.UID == dep.UID {
				want := fmt.Sprintf(`ownerRef [v1/ConfigMap, namespace: %s, name: foreign, uid: %s] does not exist in namespace %q`, e.ns, foreign.UID, e.ns)
				if ev.Message != want {
					return false, fmt.Errorf("message %q, want %q", ev.Message, want)
				}
				return true, nil
			}
		}
		return false, nil
	})
	if _, err := e.c.CoreV1().ConfigMaps("elsewhere").Get(e.ctx, "foreign", metav1.GetOptions{}); err != nil {
		t.Fatalf("the owner in the other namespace: %v", err)
	}
}

func TestForegroundNested(t *testing.T) {
	e := setup(t)
	const hold = "example.com/hold"
	a := e.configMap("a", nil)
	b := e.configMap("b", []metav1.OwnerReference{ref("ConfigMap", a, true)})
	e.configMap("c", []metav1.OwnerReference{ref("ConfigMap", b, true)}, hold)
	e.graphSynced()

	e.deleteCM("a", metav1.DeletePropagationForeground)
	// b has a dependent: it is deleted in foreground too, and waits for c.
	e.eventually("c to be deleted", func() (bool, error) { return e.getCM("c").DeletionTimestamp != nil, nil })
	for _, name := range []string{"a", "b"} {
		cm := e.getCM(name)
		if cm.DeletionTimestamp == nil || !slices.Contains(cm.Finalizers, metav1.FinalizerDeleteDependents) {
			t.Fatalf("%s: deletionTimestamp %v, finalizers %v; want it waiting for its dependents", name, cm.DeletionTimestamp, cm.Finalizers)
		}
	}
	c := e.getCM("c")
	c.Finalizers = nil
	if _, err := e.c.CoreV1().ConfigMaps(e.ns).Update(e.ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.cmGone("c")
	e.cmGone("b")
	e.cmGone("a")
}
