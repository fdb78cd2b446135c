package binder_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/testserver"
)

// Builders keep the tests short.

type pvb struct{ *corev1.PersistentVolume }

func newPV(name, size string) pvb {
	return pvb{&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
		AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/moorage-binder-test/" + name}},
	}}}
}
func (b pvb) class(c string) pvb { b.Spec.StorageClassName = c; return b }
func (b pvb) labels(l map[string]string) pvb {
	b.Labels = l
	return b
}
func (b pvb) policy(p corev1.PersistentVolumeReclaimPolicy) pvb {
	b.Spec.PersistentVolumeReclaimPolicy = p
	return b
}
func (b pvb) path(p string) pvb { b.Spec.HostPath.Path = p; return b }
func (b pvb) claimRef(ns, name string) pvb {
	b.Spec.ClaimRef = &corev1.ObjectReference{Namespace: ns, Name: name}
	return b
}

type pvcb struct{ *corev1.PersistentVolumeClaim }

func newClaim(name, size string) pvcb {
	return pvcb{&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
	}}}
}
func (b pvcb) class(c string) pvcb { b.Spec.StorageClassName = &c; return b }
func (b pvcb) selector(s *metav1.LabelSelector) pvcb {
	b.Spec.Selector = s
	return b
}
func (b pvcb) volume(v string) pvcb { b.Spec.VolumeName = v; return b }

type env struct {
	t *testing.T
	c kubernetes.Interface
}

func start(t *testing.T) env {
	srv := testserver.Start(t)
	return env{t, testserver.Client(t, srv)}
}

// createPV creates a volume and waits until the binder has seen it (it
// moves every new volume out of Pending): a claim created next is matched
// against it, not only against the volumes whose events came first.
func (e env) createPV(b pvb) {
	e.t.Helper()
	if _, err := e.c.CoreV1().PersistentVolumes().Create(context.Background(), b.PersistentVolume, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("volume "+b.Name+" synced by the binder", func() bool {
		pv := e.pv(b.Name)
		return pv == nil || pv.Status.Phase != corev1.VolumePending
	})
}

func (e env) createClaim(b pvcb) {
	e.t.Helper()
	if _, err := e.c.CoreV1().PersistentVolumeClaims("default").Create(context.Background(), b.PersistentVolumeClaim, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e env) pv(name string) *corev1.PersistentVolume {
	pv, err := e.c.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return pv
}

func (e env) claim(name string) *corev1.PersistentVolumeClaim {
	c, err := e.c.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return c
}

// eventually polls until cond holds (30 s at most: CI machines are busy).
func (e env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e env) waitBound(claim, volume string) {
	e.t.Helper()
	e.eventually(claim+" Bound to "+volume, func() bool {
		c, pv := e.claim(claim), e.pv(volume)
		return c.Status.Phase == corev1.ClaimBound && c.Spec.VolumeName == volume && pv.Status.Phase == corev1.VolumeBound
	})
}

func (e env) event(objName, reason string) *corev1.Event {
	list, err := e.c.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", objName).String()})
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range list.Items {
		if list.Items[i].Reason == reason {
			return &list.Items[i]
		}
	}
	return nil
}

// 1: a claim binds the smallest volume that fits, both sides written as upstream.
func TestBindWritesBothSides(t *testing.T) {
	e := start(t)
	e.createPV(newPV("big", "10Gi").class("manual"))
	e.createPV(newPV("small", "2Gi").class("manual"))
	e.createPV(newPV("tiny", "1Gi").class("manual"))
	e.createClaim(newClaim("claim", "2Gi").class("manual"))
	e.waitBound("claim", "small")
	pv, c := e.pv("small"), e.claim("claim")
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != c.UID || pv.Spec.ClaimRef.Kind != "PersistentVolumeClaim" {
		t.Fatalf("claimRef %+v", pv.Spec.ClaimRef)
	}
	if pv.Annotations["pv.kubernetes.io/bound-by-controller"] != "yes" || c.Annotations["pv.kubernetes.io/bind-completed"] != "yes" || c.Annotations["pv.kubernetes.io/bound-by-controller"] != "yes" {
		t.Fatalf("annotations: pv %v claim %v", pv.Annotations, c.Annotations)
	}
	if got := c.Status.Capacity[corev1.ResourceStorage]; got.String() != "2Gi" || len(c.Status.AccessModes) != 1 {
		t.Fatalf("claim status %+v", c.Status)
	}
	if pv.Status.LastPhaseTransitionTime == nil {
		t.Fatal("no lastPhaseTransitionTime")
	}
	for _, other := range []string{"big", "tiny"} {
		e.eventually(other+" Available", func() bool { return e.pv(other).Status.Phase == corev1.VolumeAvailable })
	}
}

// 2: class "" is not unset; the beta annotation is the class; selectors.
func TestMatchingRules(t *testing.T) {
	e := start(t)
	e.createPV(newPV("classless", "1Gi"))
	e.createPV(newPV("fast-a", "1Gi").class("fast").labels(map[string]string{"tier": "a"}))
	e.createPV(newPV("fast-b", "1Gi").class("fast").labels(map[string]string{"tier": "b"}))
	e.createClaim(newClaim("empty-class", "1Gi").class(""))
	e.createClaim(newClaim("picky", "1Gi").class("fast").selector(&metav1.LabelSelector{MatchLabels: map[string]string{"tier": "b"}}))
	e.waitBound("empty-class", "classless")
	e.waitBound("picky", "fast-b")
}

// 3: claims pre-bound by spec.volumeName, volumes pre-bound by claimRef.
func TestPreBinding(t *testing.T) {
	e := start(t)
	e.createPV(newPV("reserved", "5Gi").class("x").claimRef("default", "owner"))
	e.createPV(newPV("named", "5Gi").class("x"))
	e.createPV(newPV("wrong-class", "5Gi").class("y"))
	e.createClaim(newClaim("other", "1Gi").class("x").volume("named"))
	e.createClaim(newClaim("owner", "1Gi").class("x"))
	e.createClaim(newClaim("mismatch", "1Gi").class("x").volume("wrong-class"))
	e.waitBound("other", "named")
	e.waitBound("owner", "reserved")
	e.eventually("VolumeMismatch event", func() bool {
		ev := e.event("mismatch", "VolumeMismatch")
		return ev != nil && ev.Message == `Cannot bind to requested volume "wrong-class": storageClassName does not match`
	})
	if e.claim("mismatch").Status.Phase != corev1.ClaimPending {
		t.Fatal("mismatched claim is not Pending")
	}
	if _, ok := e.pv("named").Annotations["pv.kubernetes.io/bound-by-controller"]; !ok {
		t.Fatal("a volume bound through the claim's volumeName is bound by the controller")
	}
	if _, ok := e.pv("reserved").Annotations["pv.kubernetes.io/bound-by-controller"]; ok {
		t.Fatal("a volume the user pre-bound is not bound-by-controller")
	}
}

// 4: no class, no volume: upstream's FailedBinding; WaitForFirstConsumer.
func TestPendingEvents(t *testing.T) {
	e := start(t)
	e.createClaim(newClaim("lonely", "1Gi").class(""))
	e.eventually("FailedBinding", func() bool {
		ev := e.event("lonely", "FailedBinding")
		return ev != nil && strings.HasPrefix(ev.Message, "no persistent volumes available for this claim and no storage class is set")
	})
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	if _, err := e.c.StorageV1().StorageClasses().Create(context.Background(), &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "local"}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &wffc}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.createPV(newPV("local-1", "1Gi").class("local"))
	e.createClaim(newClaim("waiting", "1Gi").class("local"))
	e.eventually("WaitForFirstConsumer", func() bool {
		ev := e.event("waiting", "WaitForFirstConsumer")
		return ev != nil && ev.Message == "waiting for first consumer to be created before binding"
	})
	if e.claim("waiting").Spec.VolumeName != "" {
		t.Fatal("a WaitForFirstConsumer claim was bound without a consumer")
	}
	if _, err := e.c.StorageV1().StorageClasses().Create(context.Background(), &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Provisioner: "example.com/ext"}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.createClaim(newClaim("external", "1Gi").class("ext"))
	e.eventually("ExternalProvisioning", func() bool {
		c := e.claim("external")
		return e.event("external", "ExternalProvisioning") != nil && c.Annotations["volume.kubernetes.io/storage-provisioner"] == "example.com/ext"
	})
}

// 5: reclaim policies, with real files.
func TestReclaim(t *testing.T) {
	e := start(t)
	dir, err := os.MkdirTemp("/tmp", "moorage-reclaim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, name := range []string{"retain", "recycle", "delete"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "sub", "data"), []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.createPV(newPV("retain", "1Gi").class("r").path(filepath.Join(dir, "retain")).policy(corev1.PersistentVolumeReclaimRetain))
	e.createPV(newPV("recycle", "1Gi").class("c").path(filepath.Join(dir, "recycle")).policy(corev1.PersistentVolumeReclaimRecycle))
	e.createPV(newPV("delete", "1Gi").class("d").path(filepath.Join(dir, "delete")).policy(corev1.PersistentVolumeReclaimDelete))
	e.createPV(newPV("outside-tmp", "1Gi").class("o").path("/var/lib/moorage-test-never").policy(corev1.PersistentVolumeReclaimDelete))
	for _, c := range []string{"r", "c", "d", "o"} {
		e.createClaim(newClaim("claim-"+c, "1Gi").class(c))
	}
	e.waitBound("claim-r", "retain")
	e.waitBound("claim-c", "recycle")
	e.waitBound("claim-d", "delete")
	e.waitBound("claim-o", "outside-tmp")
	for _, c := range []string{"r", "c", "d", "o"} {
		if err := e.c.CoreV1().PersistentVolumeClaims("default").Delete(context.Background(), "claim-"+c, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.eventually("Retain: Released, data kept", func() bool {
		pv := e.pv("retain")
		_, err := os.Stat(filepath.Join(dir, "retain", "sub", "data"))
		return pv.Status.Phase == corev1.VolumeReleased && pv.Spec.ClaimRef != nil && err == nil
	})
	e.eventually("Recycle: scrubbed, Available", func() bool {
		pv := e.pv("recycle")
		left, _ := os.ReadDir(filepath.Join(dir, "recycle"))
		return pv.Status.Phase == corev1.VolumeAvailable && pv.Spec.ClaimRef == nil && len(left) == 0 && e.event("recycle", "VolumeRecycled") != nil
	})
	e.eventually("Delete: backend and object gone", func() bool {
		_, err := os.Stat(filepath.Join(dir, "delete"))
		return os.IsNotExist(err) && e.pv("delete").Name == ""
	})
	e.eventually("Delete outside /tmp: Failed with upstream's message", func() bool {
		pv := e.pv("outside-tmp")
		return pv.Status.Phase == corev1.VolumeFailed && pv.Status.Message == "host_path deleter only supports /tmp/.+ but received provided /var/lib/moorage-test-never"
	})
}

// 6: a bound claim whose volume disappears is Lost.
func TestClaimLost(t *testing.T) {
	e := start(t)
	e.createPV(newPV("doomed", "1Gi").class("l"))
	e.createClaim(newClaim("victim", "1Gi").class("l"))
	e.waitBound("victim", "doomed")
	// Delete it, then lift its protection (a Bound volume is protected) so
	// it really goes.
	if err := e.c.CoreV1().PersistentVolumes().Delete(context.Background(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CoreV1().PersistentVolumes().Patch(context.Background(), "doomed", types.JSONPatchType,
		[]byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("claim Lost with ClaimLost", func() bool {
		ev := e.event("victim", "ClaimLost")
		return e.claim("victim").Status.Phase == corev1.ClaimLost && ev != nil && ev.Message == "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
	})
}

// 7: a claim created before any default class gets the default later
// (upstream's retroactive default StorageClass), then binds in it.
func TestRetroactiveDefaultClass(t *testing.T) {
	e := start(t)
	claim := newClaim("early", "1Gi")
	e.createClaim(claim) // no class at all
	e.createPV(newPV("later", "1Gi").class("std"))
	if _, err := e.c.StorageV1().StorageClasses().Create(context.Background(), &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "std", Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner: "kubernetes.io/no-provisioner"}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitBound("early", "later")
	if sc := e.claim("early").Spec.StorageClassName; sc == nil || *sc != "std" {
		t.Fatalf("storageClassName = %v, want std", sc)
	}
}

// 8: WaitForFirstConsumer: once the scheduler picks a node, the claim binds a
// volume whose node affinity allows that node.
func TestWaitForFirstConsumerBindsOnTheSelectedNode(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	if _, err := e.c.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "local"}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &wffc}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node-a", "node-b"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"kubernetes.io/hostname": n}}}
		if _, err := e.c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pv := newPV("pv-on-"+n, "1Gi").class("local")
		pv.Spec.HostPath, pv.Spec.Local = nil, &corev1.LocalVolumeSource{Path: "/mnt/disks/" + n}
		pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{n}}}}}}}
		e.createPV(pv)
	}
	claim := newClaim("data", "1Gi").class("local")
	claim.Annotations = map[string]string{"volume.kubernetes.io/selected-node": "node-b"}
	e.createClaim(claim)
	e.waitBound("data", "pv-on-node-b")
}

// A claim that names its volume before the volume exists, and a volume
// pre-bound to it (claimRef with the claim's uid) created afterwards: they
// bind when the volume appears, not at the next 15 s resync.
func TestPreBoundVolumeCreatedAfterItsClaim(t *testing.T) {
	e := start(t)
	e.createClaim(newClaim("early", "1Gi").class("x").volume("late"))
	e.eventually("the claim to be Pending", func() bool { return e.claim("early").Status.Phase == corev1.ClaimPending })
	c := e.claim("early")
	pv := newPV("late", "5Gi").class("x").claimRef("default", "early")
	pv.Spec.ClaimRef.UID = c.UID
	start := time.Now()
	e.createPV(pv)
	e.waitBound("early", "late")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("bound after %v; want well before the resync", d)
	}
}
