package apiserver

import (
	"reflect"
	"strings"
	"sync"

	goruntime "runtime"
	"weak"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	"sigs.k8s.io/structured-merge-diff/v4/typed"
	"sigs.k8s.io/structured-merge-diff/v4/value"
)

// typeConverter is the managed-fields type converter. It differs from the
// schema-driven one it wraps in a single way: an object the server has
// already decoded into its Go type and validated is not walked a second time
// to validate it against the schema when the caller tolerates duplicates
// (what managed fields ask for the live and new objects of every write). That
// walk found nothing a Go struct could violate and cost a third of every
// update's managed-fields time. Unstructured objects, and apply
// configurations (which must be checked for duplicates), are validated as
// before.
//
// It also remembers which Go object each such typed value came from, so that
// turning the value back into an object is a deep copy rather than a
// reflective walk to unstructured data: managed fields do that for every
// manager of every write, only to read the object's apiVersion.
type typeConverter struct {
	scheme *runtime.Scheme
	inner  managedfields.TypeConverter
	parser interface {
		Type(string) typed.ParseableType
	}

	mu    sync.RWMutex
	types map[schema.GroupVersionKind]typed.ParseableType

	// origins maps a typed value made from a Go object to that object, for
	// as long as the typed value lives.
	origins sync.Map // weak.Pointer[typed.TypedValue] -> runtime.Object
}

func newTypeConverter(scheme *runtime.Scheme) *typeConverter {
	inner := applyconfigurations.NewTypeConverter(scheme)
	return &typeConverter{scheme: scheme, inner: inner, parser: inner.TypeResolver, types: map[schema.GroupVersionKind]typed.ParseableType{}}
}

func (c *typeConverter) ObjectToTyped(obj runtime.Object, opts ...typed.ValidationOptions) (*typed.TypedValue, error) {
	if _, unstructured := obj.(runtime.Unstructured); unstructured || !allowsDuplicates(opts) {
		return c.inner.ObjectToTyped(obj, opts...)
	}
	t, ok := c.typeOf(obj.GetObjectKind().GroupVersionKind())
	if !ok {
		return c.inner.ObjectToTyped(obj, opts...)
	}
	v, err := value.NewValueReflect(obj)
	if err != nil {
		return nil, err
	}
	tv := typed.AsTypedUnvalidated(v, t.Schema, t.TypeRef)
	key := weak.Make(tv)
	c.origins.Store(key, obj)
	goruntime.AddCleanup(tv, func(k weak.Pointer[typed.TypedValue]) { c.origins.Delete(k) }, key)
	return tv, nil
}

func (c *typeConverter) TypedToObject(v *typed.TypedValue) (runtime.Object, error) {
	if obj, ok := c.origins.Load(weak.Make(v)); ok {
		return obj.(runtime.Object).DeepCopyObject(), nil
	}
	return c.inner.TypedToObject(v)
}

func allowsDuplicates(opts []typed.ValidationOptions) bool {
	for _, o := range opts {
		if o == typed.AllowDuplicates {
			return true
		}
	}
	return false
}

// typeOf finds the schema type of a Go API type by its OpenAPI name
// ("io.k8s.api.core.v1.PersistentVolume").
func (c *typeConverter) typeOf(gvk schema.GroupVersionKind) (typed.ParseableType, bool) {
	c.mu.RLock()
	t, ok := c.types[gvk]
	c.mu.RUnlock()
	if ok {
		return t, t.IsValid()
	}
	obj, err := c.scheme.New(gvk)
	if err == nil {
		rt := reflect.TypeOf(obj).Elem()
		t = c.parser.Type(openAPIName(rt.PkgPath(), rt.Name()))
	}
	c.mu.Lock()
	c.types[gvk] = t
	c.mu.Unlock()
	return t, t.IsValid()
}

// openAPIName turns a Go package path and type name into the OpenAPI
// definition name: the domain of the path reversed ("k8s.io/api/core/v1" ->
// "io.k8s.api.core.v1"), then the type.
func openAPIName(pkgPath, name string) string {
	domain, rest, _ := strings.Cut(pkgPath, "/")
	labels := strings.Split(domain, ".")
	for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
		labels[i], labels[j] = labels[j], labels[i]
	}
	parts := []string{strings.Join(labels, ".")}
	if rest != "" {
		parts = append(parts, strings.ReplaceAll(rest, "/", "."))
	}
	return strings.Join(append(parts, name), ".")
}
