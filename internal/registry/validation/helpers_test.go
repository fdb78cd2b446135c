package validation

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/moorage/moorage/internal/registry/defaults"
)

// Small builders of valid, defaulted objects; tests mutate copies.

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	defaults.RegisterDefaults(s)
	return s
}()

func defaulted[T runtime.Object](obj T) T {
	scheme.Default(obj)
	return obj
}

func om(name, ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: "1"}
}

func ptr[T any](v T) *T { return &v }

func rl(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func newPodSpec() corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}}}
}

func newPod() *corev1.Pod {
	return defaulted(&corev1.Pod{ObjectMeta: om("web", "default"), Spec: newPodSpec()})
}

func newPV() *corev1.PersistentVolume {
	return defaulted(&corev1.PersistentVolume{
		ObjectMeta: om("pv1", ""),
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               rl("storage", "1Gi"),
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data"}},
		},
	})
}

func newPVC() *corev1.PersistentVolumeClaim {
	return defaulted(&corev1.PersistentVolumeClaim{
		ObjectMeta: om("data", "default"),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: rl("storage", "1Gi")},
		},
	})
}

func newSC() *storagev1.StorageClass {
	return defaulted(&storagev1.StorageClass{ObjectMeta: om("fast", ""), Provisioner: "moorage.io/local", Parameters: map[string]string{"type": "ssd"}})
}

func newCSIDriver() *storagev1.CSIDriver {
	return defaulted(&storagev1.CSIDriver{ObjectMeta: om("csi.moorage.io", "")})
}

func newSTS() *appsv1.StatefulSet {
	labels := map[string]string{"app": "db"}
	return defaulted(&appsv1.StatefulSet{
		ObjectMeta: om("db", "default"),
		Spec: appsv1.StatefulSetSpec{
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			ServiceName: "db",
			Template:    corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: newPodSpec()},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:   corev1.VolumeResourceRequirements{Requests: rl("storage", "1Gi")},
				},
			}},
		},
	})
}

// tc is one table case: mutate a fresh valid object and expect an error at
// path of the given type; msg, if set, must equal the error's full text.
type tc[T any] struct {
	name   string
	mutate func(T)
	path   string
	typ    field.ErrorType
	msg    string
}

func runCases[T runtime.Object](t *testing.T, fresh func() T, validate func(T) field.ErrorList, cases []tc[T]) {
	t.Helper()
	if errs := validate(fresh()); len(errs) != 0 {
		t.Fatalf("valid object rejected: %v", errs)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			obj := fresh()
			c.mutate(obj)
			expectErr(t, validate(obj), c.path, c.typ, c.msg)
		})
	}
}

func expectErr(t *testing.T, errs field.ErrorList, path string, typ field.ErrorType, msg string) {
	t.Helper()
	for _, e := range errs {
		if e.Field == path && e.Type == typ {
			if msg != "" && e.Error() != msg {
				t.Errorf("message:\n got: %s\nwant: %s", e.Error(), msg)
			}
			return
		}
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	t.Errorf("no %s error at %q; got:\n  %s", typ, path, strings.Join(got, "\n  "))
}

func expectNone(t *testing.T, errs field.ErrorList) {
	t.Helper()
	if len(errs) != 0 {
		t.Errorf("unexpected errors: %v", errs)
	}
}

func selector(k, v string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}
