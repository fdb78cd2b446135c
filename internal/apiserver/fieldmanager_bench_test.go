package apiserver

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/registry"
)

// BenchmarkManagedFields: what managed fields (upstream's field manager and
// structured-merge-diff) cost each write of a binding, on the objects the
// binder writes: the claim's creation, then upstream's four binding writes
// (the claim's status write costs as the volume's). Each op includes two
// deep copies (~3-8 µs).
func BenchmarkManagedFields(b *testing.B) {
	s := &Server{scheme: scheme.Scheme}
	reg := registry.Builtin()
	pvs, _ := reg.Lookup(corev1.SchemeGroupVersion.WithResource("persistentvolumes"))
	claims, _ := reg.Lookup(corev1.SchemeGroupVersion.WithResource("persistentvolumeclaims"))
	qty := resource.MustParse("1Gi")
	pv := &corev1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{Name: "pv-00001", UID: "u1", ResourceVersion: "7", Finalizers: []string{"kubernetes.io/pv-protection"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: qty},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/pv-00001"}},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "bench",
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable},
	}
	claim := &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: "claim-00001", Namespace: "default", UID: "u2", ResourceVersion: "9", Finalizers: []string{"kubernetes.io/pvc-protection"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: qty}},
			StorageClassName: ptr.To("bench"),
			VolumeMode:       ptr.To(corev1.PersistentVolumeFilesystem),
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
	created := func(b *testing.B, obj runtime.Object, res *registry.Resource) runtime.Object {
		fm, err := s.fieldManager(res, "")
		if err != nil {
			b.Fatal(err)
		}
		out, err := fm.Update(s.emptyLike(res), obj.DeepCopyObject(), "client")
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	livePV, liveClaim := created(b, pv, pvs), created(b, claim, claims)
	boundPV := livePV.DeepCopyObject().(*corev1.PersistentVolume)
	boundPV.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "default", Name: "claim-00001", UID: "u2", ResourceVersion: "9"}
	boundPV.Annotations = map[string]string{"pv.kubernetes.io/bound-by-controller": "yes"}
	phasePV := livePV.DeepCopyObject().(*corev1.PersistentVolume)
	phasePV.Status.Phase = corev1.VolumeBound
	boundClaim := liveClaim.DeepCopyObject().(*corev1.PersistentVolumeClaim)
	boundClaim.Spec.VolumeName = "pv-00001"
	boundClaim.Annotations = map[string]string{"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}
	for _, c := range []struct {
		name      string
		res       *registry.Resource
		sub       string
		cur, next runtime.Object
	}{
		{"create-claim", claims, "", s.emptyLike(claims), claim},
		{"volume-claimRef", pvs, "", livePV, boundPV},
		{"volume-phase", pvs, "status", livePV, phasePV},
		{"claim-volumeName", claims, "", liveClaim, boundClaim},
	} {
		fm, err := s.fieldManager(c.res, c.sub)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fm.Update(c.cur.DeepCopyObject(), c.next.DeepCopyObject(), "kube-controller-manager"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
