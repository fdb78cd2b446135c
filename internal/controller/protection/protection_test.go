package protection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/protection"
	"github.com/moorage/moorage/internal/testserver"
)

// The controllers run inside the test server (app.startControllers): these
// tests drive them end to end through client-go.

const ns = "default"

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

func start(t *testing.T) (kubernetes.Interface, context.Context) {
	t.Helper()
	return testserver.Client(t, testserver.Start(t)), t.Context()
}

func createClaim(t *testing.T, c kubernetes.Interface, name string, owner *corev1.Pod) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if owner != nil {
		pvc.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: owner.Name, UID: owner.UID, Controller: ptr.To(true)}}
	}
	got, err := c.CoreV1().PersistentVolumeClaims(ns).Create(t.Context(), pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Finalizers, []string{protection.PVCFinalizer}) {
		t.Fatalf("claim created with finalizers %v, want [%s]", got.Finalizers, protection.PVCFinalizer)
	}
	return got
}

// createPod creates a pod on node (unscheduled if "") with the given volumes.
func createPod(t *testing.T, c kubernetes.Interface, name, node string, finalizers []string, volumes ...corev1.Volume) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: finalizers},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "busybox"}},
			Volumes:    volumes,
		},
	}
	got, err := c.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func claimVolume(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func ephemeralVolume(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		}}}}}
}

func deleteClaim(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	if err := c.CoreV1().PersistentVolumeClaims(ns).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deletePod(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	if err := c.CoreV1().Pods(ns).Delete(t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
}

func claimGone(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	eventually(t, "claim "+name+" to go", func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// settled returns once the controller has handled the claim and pod
// events so far: a fresh claim, deleted while a pod uses it, goes once that
// pod is deleted, after the claims queued by earlier events of either
// informer were handled (events of an informer in order, one FIFO queue,
// one worker).
func settled(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	barriers++
	name := fmt.Sprintf("barrier-%d", barriers)
	createClaim(t, c, name, nil)
	createPod(t, c, name, "node-1", nil, claimVolume("vol", name))
	deleteClaim(t, c, name)
	deletePod(t, c, name)
	claimGone(t, c, name)
}

var barriers int

// terminating checks that the claim stays, being deleted, with its
// finalizer, and that tables (kubectl get pvc) show it Terminating.
func terminating(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	settled(t, c)
	got, err := c.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("claim %s in use: %v", name, err)
	}
	if got.DeletionTimestamp == nil || !slices.Contains(got.Finalizers, protection.PVCFinalizer) {
		t.Fatalf("claim %s in use: deletionTimestamp %v, finalizers %v", name, got.DeletionTimestamp, got.Finalizers)
	}
	raw, err := c.CoreV1().RESTClient().Get().Namespace(ns).Resource("persistentvolumeclaims").Name(name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	col := slices.IndexFunc(table.ColumnDefinitions, func(d metav1.TableColumnDefinition) bool { return d.Name == "Status" })
	if col < 0 || len(table.Rows) != 1 || table.Rows[0].Cells[col] != "Terminating" {
		t.Fatalf("table of claim %s in use: columns %v, rows %v; want STATUS Terminating", name, table.ColumnDefinitions, table.Rows)
	}
}

func TestUnusedClaimIsDeleted(t *testing.T) {
	c, _ := start(t)
	createClaim(t, c, "data", nil)
	deleteClaim(t, c, "data")
	claimGone(t, c, "data")
}

func TestClaimUsedByScheduledPodStays(t *testing.T) {
	c, ctx := start(t)
	createClaim(t, c, "data", nil)
	createClaim(t, c, "other", nil)
	pod := createPod(t, c, "app", "node-1", nil, claimVolume("vol", "data"))
	deleteClaim(t, c, "data")
	deleteClaim(t, c, "other")
	claimGone(t, c, "other") // the pod uses only "data"
	terminating(t, c, "data")

	// A pod's phase does not matter: a finished pod still holds its claim.
	pod.Status.Phase = corev1.PodSucceeded
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	terminating(t, c, "data")

	deletePod(t, c, "app")
	claimGone(t, c, "data")
}

// The claim is in use from the moment the pod is scheduled: a pod is
// deleted while the claim waits for it, and another one takes over.
func TestClaimUsedByRecreatedPod(t *testing.T) {
	c, _ := start(t)
	createClaim(t, c, "data", nil)
	createPod(t, c, "app", "node-1", nil, claimVolume("vol", "data"))
	createPod(t, c, "app2", "node-2", nil, claimVolume("vol", "data"))
	deleteClaim(t, c, "data")
	terminating(t, c, "data")
	deletePod(t, c, "app")
	terminating(t, c, "data")
	deletePod(t, c, "app2")
	claimGone(t, c, "data")
}

// Unscheduled pods do not hold claims: no kubelet will start them with a
// claim being deleted.
func TestClaimUsedByUnscheduledPodIsDeleted(t *testing.T) {
	c, _ := start(t)
	createClaim(t, c, "data", nil)
	createPod(t, c, "pending", "", nil, claimVolume("vol", "data"))
	deleteClaim(t, c, "data")
	claimGone(t, c, "data")
}

// A generic ephemeral volume's claim is held by its pod (the claim named
// <pod>-<volume> that the pod controls) until the pod is shut down.
func TestEphemeralClaim(t *testing.T) {
	c, ctx := start(t)
	// The finalizer keeps the pod, deleted with a zero grace period (shut
	// down), in the store.
	const podFinalizer = "example.com/hold"
	pod := createPod(t, c, "web", "node-1", []string{podFinalizer}, ephemeralVolume("scratch"), claimVolume("vol", "shared"))
	createClaim(t, c, "web-scratch", pod)
	createClaim(t, c, "shared", nil)
	stranger := createPod(t, c, "db", "node-1", nil, ephemeralVolume("scratch"))
	createClaim(t, c, "db-scratch", nil) // not controlled by pod db: not its claim
	_ = stranger

	deleteClaim(t, c, "web-scratch")
	deleteClaim(t, c, "db-scratch")
	deleteClaim(t, c, "shared")
	claimGone(t, c, "db-scratch")
	terminating(t, c, "web-scratch")
	terminating(t, c, "shared")

	// Shut down: the ephemeral claim is free, the claim it names is not.
	deletePod(t, c, "web")
	claimGone(t, c, "web-scratch")
	terminating(t, c, "shared")

	pod, err := c.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Finalizers = nil
	if _, err := c.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	claimGone(t, c, "shared")
}

// A finalizer removed by an update (admission adds it on create only) is
// put back.
func TestClaimFinalizerIsRestored(t *testing.T) {
	c, ctx := start(t)
	pvc := createClaim(t, c, "data", nil)
	pvc.Finalizers = nil
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Update(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the finalizer to come back", func(ctx context.Context) (bool, error) {
		got, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
		return err == nil && slices.Equal(got.Finalizers, []string{protection.PVCFinalizer}), err
	})
}

func TestBoundVolumeStays(t *testing.T) {
	c, ctx := start(t)
	// A real bound pair: the binder binds the claim to the volume (a volume
	// merely marked Bound, without a claim, would be made Available again).
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "vol"},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:       "protected",
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/vol"}},
		},
	}
	pv, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pv.Finalizers, []string{protection.PVFinalizer}) {
		t.Fatalf("volume created with finalizers %v, want [%s]", pv.Finalizers, protection.PVFinalizer)
	}
	class := "protected"
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "user", Namespace: "default"}, Spec: corev1.PersistentVolumeClaimSpec{
		StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if _, err := c.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the volume to be Bound", func(ctx context.Context) (bool, error) {
		got, err := c.CoreV1().PersistentVolumes().Get(ctx, "vol", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.VolumeBound, err
	})
	if err := c.CoreV1().PersistentVolumes().Delete(ctx, "vol", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Barrier: an unbound volume deleted after it goes once the controller
	// has handled the events before.
	barrier := pv.DeepCopy()
	barrier.ObjectMeta = metav1.ObjectMeta{Name: "barrier"}
	barrier.Spec.StorageClassName = "none"
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, barrier, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().PersistentVolumes().Delete(ctx, "barrier", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	volumeGone(t, c, "barrier")
	got, err := c.CoreV1().PersistentVolumes().Get(ctx, "vol", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("bound volume: %v", err)
	}
	if got.DeletionTimestamp == nil || !slices.Contains(got.Finalizers, protection.PVFinalizer) {
		t.Fatalf("bound volume: deletionTimestamp %v, finalizers %v", got.DeletionTimestamp, got.Finalizers)
	}

	// The claim goes: the volume is Released, no longer protected, and goes.
	if err := c.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "user", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	volumeGone(t, c, "vol")
}

func volumeGone(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	eventually(t, "volume "+name+" to go", func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}
