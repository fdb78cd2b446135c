package apiserver_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/testserver"
)

const (
	pvcProtection = "kubernetes.io/pvc-protection"
	pvProtection  = "kubernetes.io/pv-protection"
)

func testClaim(name string, class *string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func testVolume(name, class string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:       class,
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/" + name}},
		},
	}
}

func TestStorageObjectInUseProtectionAdmission(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	claims := c.CoreV1().PersistentVolumeClaims("default")

	got, err := claims.Create(ctx, testClaim("plain", nil), metav1.CreateOptions{})
	if err != nil || !slices.Equal(got.Finalizers, []string{pvcProtection}) {
		t.Fatalf("new claim: %v, finalizers %v", err, got.Finalizers)
	}
	// Appended to the finalizers the claim has, never twice.
	withOthers := testClaim("others", nil)
	withOthers.Finalizers = []string{"example.com/keep"}
	if got, err = claims.Create(ctx, withOthers, metav1.CreateOptions{}); err != nil || !slices.Equal(got.Finalizers, []string{"example.com/keep", pvcProtection}) {
		t.Fatalf("claim with a finalizer: %v, finalizers %v", err, got.Finalizers)
	}
	already := testClaim("already", nil)
	already.Finalizers = []string{pvcProtection, "example.com/keep"}
	if got, err = claims.Create(ctx, already, metav1.CreateOptions{}); err != nil || !slices.Equal(got.Finalizers, []string{pvcProtection, "example.com/keep"}) {
		t.Fatalf("claim with the finalizer: %v, finalizers %v", err, got.Finalizers)
	}
	// Admission runs on dry runs too.
	if got, err = claims.Create(ctx, testClaim("dry", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil || !slices.Equal(got.Finalizers, []string{pvcProtection}) {
		t.Fatalf("dry-run claim: %v, finalizers %v", err, got.Finalizers)
	}

	pv, err := c.CoreV1().PersistentVolumes().Create(ctx, testVolume("vol", ""), metav1.CreateOptions{})
	if err != nil || !slices.Equal(pv.Finalizers, []string{pvProtection}) {
		t.Fatalf("new volume: %v, finalizers %v", err, pv.Finalizers)
	}

	// On create only: an update may remove the finalizer (the controller
	// puts it back later).
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := claims.Get(ctx, "plain", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Finalizers = nil
		if got, err = claims.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		return nil
	})
	if err != nil || len(got.Finalizers) != 0 {
		t.Fatalf("update removing the finalizer: %v, finalizers %v", err, got.Finalizers)
	}
}

// boundClaim creates a claim of class and a volume bound to each other, as
// the binder leaves them (both pointers, both phases Bound, the claim's
// status from the volume), so that a binder has nothing left to write.
func boundClaim(t *testing.T, c kubernetes.Interface, name string, class *string) *corev1.PersistentVolumeClaim {
	t.Helper()
	ctx := t.Context()
	claims := c.CoreV1().PersistentVolumeClaims("default")
	claim, err := claims.Create(ctx, testClaim(name, class), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv := testVolume("pv-"+name, ptr.Deref(class, ""))
	pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "default", Name: name, UID: claim.UID}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	update := func(what string, fn func() error) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, fn); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	update("binding the volume", func() error {
		cur, err := c.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil || cur.Status.Phase == corev1.VolumeBound {
			return err
		}
		cur.Status.Phase = corev1.VolumeBound
		_, err = c.CoreV1().PersistentVolumes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	update("binding the claim", func() error {
		cur, err := claims.Get(ctx, name, metav1.GetOptions{})
		if err != nil || cur.Spec.VolumeName != "" {
			return err
		}
		cur.Spec.VolumeName = pv.Name
		metav1.SetMetaDataAnnotation(&cur.ObjectMeta, "pv.kubernetes.io/bind-completed", "yes")
		_, err = claims.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	update("the claim's status", func() error {
		cur, err := claims.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Status.Phase == corev1.ClaimBound {
			claim = cur
			return nil
		}
		cur.Status.Phase = corev1.ClaimBound
		cur.Status.AccessModes = pv.Spec.AccessModes
		cur.Status.Capacity = pv.Spec.Capacity
		claim, err = claims.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	return claim
}

// grow asks for 2Gi with a merge patch, as kubectl patch does.
func grow(ctx context.Context, c kubernetes.Interface, name string) (*corev1.PersistentVolumeClaim, error) {
	return c.CoreV1().PersistentVolumeClaims("default").Patch(ctx, name, types.MergePatchType,
		[]byte(`{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}`), metav1.PatchOptions{})
}

// unchanged checks that a refused write left the claim as it was.
func unchanged(t *testing.T, c kubernetes.Interface, before *corev1.PersistentVolumeClaim) {
	t.Helper()
	after, err := c.CoreV1().PersistentVolumeClaims("default").Get(t.Context(), before.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	size := after.Spec.Resources.Requests[corev1.ResourceStorage]
	if after.ResourceVersion != before.ResourceVersion || size.String() != "1Gi" {
		t.Fatalf("refused resize of %s wrote: resourceVersion %s → %s, request %s", before.Name, before.ResourceVersion, after.ResourceVersion, size.String())
	}
}

func TestPersistentVolumeClaimResizeAdmission(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	for name, allow := range map[string]*bool{"expandable": ptr.To(true), "fixed": nil, "off": ptr.To(false)} {
		sc := &storagev1.StorageClass{
			ObjectMeta:           metav1.ObjectMeta{Name: name},
			Provisioner:          "example.com/csi",
			AllowVolumeExpansion: allow,
			// No provisioning before a pod: a binder leaves pending claims alone.
			VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		}
		if _, err := c.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// An unbound claim: validation refuses any change of its spec, before
	// admission is asked (upstream runs validating admission after the
	// strategy's validation).
	pending, err := c.CoreV1().PersistentVolumeClaims("default").Create(ctx, testClaim("pending", ptr.To("expandable")), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grow(ctx, c, "pending"); !apierrors.IsInvalid(err) {
		t.Fatalf("growing an unbound claim: want 422 Invalid, got %v", err)
	}
	unchanged(t, c, pending)

	const refusal = `persistentvolumeclaims "%s" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize`
	for _, tc := range []struct{ claim, class string }{
		{"fixed-claim", "fixed"},     // allowVolumeExpansion unset
		{"off-claim", "off"},         // allowVolumeExpansion false
		{"missing-claim", "missing"}, // no such class
		{"classless", ""},            // no class at all
	} {
		claim := boundClaim(t, c, tc.claim, ptr.To(tc.class))
		_, err := grow(ctx, c, tc.claim)
		var status apierrors.APIStatus
		if !apierrors.IsForbidden(err) || !asStatus(err, &status) || status.Status().Code != http.StatusForbidden ||
			err.Error() != fmt.Sprintf(refusal, tc.claim) {
			t.Fatalf("growing %s (class %q): want 403 %q, got %v", tc.claim, tc.class, fmt.Sprintf(refusal, tc.claim), err)
		}
		if d := status.Status().Details; d == nil || d.Name != tc.claim || d.Kind != "persistentvolumeclaims" {
			t.Fatalf("growing %s: details %+v", tc.claim, d)
		}
		unchanged(t, c, claim)
		// A PUT is refused the same way, a dry run too.
		put := claim.DeepCopy()
		put.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("2Gi")
		if _, err := c.CoreV1().PersistentVolumeClaims("default").Update(ctx, put, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
			t.Fatalf("growing %s with a dry-run PUT: want 403, got %v", tc.claim, err)
		}
		unchanged(t, c, claim)
		// Changes other than growth are not admission's business.
		if _, err := c.CoreV1().PersistentVolumeClaims("default").Patch(ctx, tc.claim, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"tier":"gold"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatalf("labelling %s: %v", tc.claim, err)
		}
	}

	boundClaim(t, c, "grows", ptr.To("expandable"))
	got, err := grow(ctx, c, "grows")
	if err != nil {
		t.Fatalf("growing a bound claim of an expandable class: %v", err)
	}
	if size := got.Spec.Resources.Requests[corev1.ResourceStorage]; size.String() != "2Gi" {
		t.Fatalf("grown claim requests %s", size.String())
	}
	// Shrinking back is validation's business (down to, not including,
	// status.capacity): 422, not 403.
	shrunk := got.DeepCopy()
	shrunk.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("1Gi")
	if _, err := c.CoreV1().PersistentVolumeClaims("default").Update(ctx, shrunk, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("shrinking to status.capacity: want 422 Invalid, got %v", err)
	}
}

func asStatus(err error, status *apierrors.APIStatus) bool {
	s, ok := err.(apierrors.APIStatus)
	*status = s
	return ok
}

// Upstream's DefaultTolerationSeconds: every new pod tolerates the not-ready
// and unreachable NoExecute taints for 300 s, unless it already tolerates them.
func TestDefaultTolerationSeconds(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	pod := func(name string, tolerations ...corev1.Toleration) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}, Tolerations: tolerations,
		}}
	}
	def := func(key string) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}
	}
	own := corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)}
	everything := corev1.Toleration{Operator: corev1.TolerationOpExists}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want []corev1.Toleration
	}{
		{pod("plain"), []corev1.Toleration{def(corev1.TaintNodeNotReady), def(corev1.TaintNodeUnreachable)}},
		{pod("own", own), []corev1.Toleration{own, def(corev1.TaintNodeNotReady)}},
		{pod("all", everything), []corev1.Toleration{everything}},
	} {
		got, err := c.CoreV1().Pods("default").Create(ctx, tc.pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(got.Spec.Tolerations, tc.want) {
			t.Errorf("%s: tolerations = %v, want %v", tc.pod.Name, got.Spec.Tolerations, tc.want)
		}
	}
}
