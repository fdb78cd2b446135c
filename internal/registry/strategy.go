package registry

import (
	"fmt"
	"reflect"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// This file holds the kind-independent parts of upstream's create/update
// strategies, done by reflection on the conventional Spec and Status fields.

// CopyStatus sets dst's Status field to src's (a main-resource write keeps the
// stored status). Types without a Status field are left alone.
func CopyStatus(dst, src runtime.Object) { copyField(dst, src, "Status") }

// ClearStatus resets the Status field to its zero value (creates ignore it).
func ClearStatus(obj runtime.Object) {
	if f := structField(obj, "Status"); f.IsValid() && f.CanSet() {
		f.Set(reflect.Zero(f.Type()))
	}
}

// KeepAllButStatus makes obj, a /status write over old, keep everything of old
// but its status: the spec and the metadata a status write may not change.
func KeepAllButStatus(obj, old runtime.Object) {
	status := structField(obj, "Status")
	var saved reflect.Value
	if status.IsValid() {
		saved = reflect.New(status.Type()).Elem()
		saved.Set(status)
	}
	nm, _ := meta.Accessor(obj)
	// Fields a status write may change in metadata: none of upstream's
	// ResetObjectMetaForStatus list (labels, annotations, finalizers, owners,
	// deletion timestamp, generation).
	rv := nm.GetResourceVersion()
	managed := nm.GetManagedFields()
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(old.DeepCopyObject()).Elem())
	if status.IsValid() {
		structField(obj, "Status").Set(saved)
	}
	nm, _ = meta.Accessor(obj)
	nm.SetResourceVersion(rv)
	nm.SetManagedFields(managed)
}

// SpecChanged tells whether anything outside metadata and status differs,
// which is when upstream bumps metadata.generation.
func SpecChanged(obj, old runtime.Object) bool {
	a, b := reflect.ValueOf(obj).Elem(), reflect.ValueOf(old).Elem()
	for i := 0; i < a.NumField(); i++ {
		name := a.Type().Field(i).Name
		if name == "TypeMeta" || name == "ObjectMeta" || name == "Status" {
			continue
		}
		if !apiequality.Semantic.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			return true
		}
	}
	return false
}

func structField(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName(name)
}

func copyField(dst, src runtime.Object, name string) {
	d, s := structField(dst, name), structField(src, name)
	if d.IsValid() && s.IsValid() && d.CanSet() {
		d.Set(s)
	}
}

// ScaleAccess reads and writes the replica count of a scalable kind, so the
// API server can serve its autoscaling/v1 Scale subresource.
type ScaleAccess struct {
	// Selector returns the label selector of the pods the object owns, in its
	// string form (the Scale status's selector).
	Selector func(obj runtime.Object) (string, error)
}

// specReplicas is the reflective path to Spec.Replicas (*int32).
func specReplicas(obj runtime.Object) reflect.Value {
	spec := structField(obj, "Spec")
	if !spec.IsValid() {
		return reflect.Value{}
	}
	return spec.FieldByName("Replicas")
}

// ToScale renders obj's scale subresource.
func (s *ScaleAccess) ToScale(obj runtime.Object) (*autoscalingv1.Scale, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	out := &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"},
		ObjectMeta: metav1.ObjectMeta{
			Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp(),
		},
	}
	if r := specReplicas(obj); r.IsValid() && !r.IsNil() {
		out.Spec.Replicas = int32(r.Elem().Int())
	}
	if st := structField(obj, "Status"); st.IsValid() {
		if r := st.FieldByName("Replicas"); r.IsValid() {
			out.Status.Replicas = int32(r.Int())
		}
	}
	sel, err := s.Selector(obj)
	if err != nil {
		return nil, err
	}
	out.Status.Selector = sel
	return out, nil
}

// SetReplicas writes a new replica count into obj's spec.
func (s *ScaleAccess) SetReplicas(obj runtime.Object, n int32) error {
	r := specReplicas(obj)
	if !r.IsValid() {
		return fmt.Errorf("%T has no spec.replicas", obj)
	}
	r.Set(reflect.ValueOf(&n))
	return nil
}

// LabelSelectorOf is a ScaleAccess.Selector for kinds whose spec.selector is a
// *metav1.LabelSelector.
func LabelSelectorOf(obj runtime.Object) (string, error) {
	spec := structField(obj, "Spec")
	sel, _ := spec.FieldByName("Selector").Interface().(*metav1.LabelSelector)
	if sel == nil {
		return "", nil
	}
	ls, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", err
	}
	return ls.String(), nil
}

// MapSelectorOf is a ScaleAccess.Selector for kinds whose spec.selector is a
// plain map (ReplicationController).
func MapSelectorOf(obj runtime.Object) (string, error) {
	spec := structField(obj, "Spec")
	sel, _ := spec.FieldByName("Selector").Interface().(map[string]string)
	return labels.SelectorFromSet(sel).String(), nil
}
