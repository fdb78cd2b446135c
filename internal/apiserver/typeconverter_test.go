package apiserver

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/structured-merge-diff/v4/typed"
)

func TestOpenAPIName(t *testing.T) {
	for _, c := range []struct{ pkg, name, want string }{
		{"k8s.io/api/core/v1", "PersistentVolume", "io.k8s.api.core.v1.PersistentVolume"},
		{"k8s.io/api/storage/v1", "StorageClass", "io.k8s.api.storage.v1.StorageClass"},
		{"example.com", "Thing", "com.example.Thing"},
	} {
		if got := openAPIName(c.pkg, c.name); got != c.want {
			t.Errorf("openAPIName(%q, %q) = %q, want %q", c.pkg, c.name, got, c.want)
		}
	}
}

// The fast path must give managed fields exactly what the validating
// converter gives: the same typed value, and the same object back.
func TestTypeConverterMatchesValidatingOne(t *testing.T) {
	tc := newTypeConverter(scheme.Scheme)
	pv := &corev1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1", Labels: map[string]string{"a": "b"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/x"}},
			ClaimRef:               &corev1.ObjectReference{Namespace: "default", Name: "c", UID: "u"},
		},
	}
	fast, err := tc.ObjectToTyped(pv, typed.AllowDuplicates)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := tc.inner.ObjectToTyped(pv, typed.AllowDuplicates)
	if err != nil {
		t.Fatal(err)
	}
	cmp, err := fast.Compare(slow)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.IsSame() {
		t.Fatalf("typed values differ: %v", cmp)
	}
	back, err := tc.TypedToObject(fast)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(back, runtime.Object(pv)) || back == runtime.Object(pv) {
		t.Fatalf("TypedToObject gave %#v", back)
	}
	// Values the converter did not make are converted as before.
	if obj, err := tc.TypedToObject(slow); err != nil || obj.GetObjectKind().GroupVersionKind().Kind != "PersistentVolume" {
		t.Fatalf("TypedToObject(validated value) = %v, %v", obj, err)
	}
}
