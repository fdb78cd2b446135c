// Package registry describes every resource the API server serves: its names
// and scope for discovery, how its objects are stored, and the strategy hooks
// (defaults, validation, the spec/status split, table columns, field labels)
// that give each kind upstream Kubernetes' behaviour.
//
// The API server is generic: everything kind-specific lives here, one file per
// group of kinds, and in the subpackages defaults, validation and printers.
package registry

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/moorage/moorage/internal/user"
)

// Resource is one served resource (one group/version/plural).
type Resource struct {
	GVK        schema.GroupVersionKind
	Plural     string
	Singular   string
	ShortNames []string
	Categories []string
	Namespaced bool

	// Status says the resource has a /status subresource: writes to the main
	// resource keep the stored status, writes to /status keep everything else.
	Status bool
	// Scale, if set, gives the resource an autoscaling/v1 /scale subresource.
	Scale *ScaleAccess
	// Generation says metadata.generation starts at 1 and grows with every
	// change to the object outside metadata and status.
	Generation bool
	// AllowCreateOnUpdate lets PUT create a missing object (leases, endpoints).
	AllowCreateOnUpdate bool
	// ReturnDeletedObject answers DELETE with the object instead of a Status.
	ReturnDeletedObject bool
	// DefaultDeletePolicy is the propagation policy of a DELETE that names
	// none; "" keeps the object's own finalizers (upstream's default).
	DefaultDeletePolicy metav1.DeletionPropagation
	// StorageResource, if set, stores objects under another resource's keys
	// (events.k8s.io/v1 events are core/v1 events). Convert maps between them.
	StorageResource *Resource
	ToStorage       func(obj runtime.Object) (runtime.Object, error)
	FromStorage     func(obj runtime.Object) (runtime.Object, error)

	// PrepareForCreate resets what a client may not set on create (status,
	// system fields) before defaults and validation run. May be nil.
	PrepareForCreate func(obj runtime.Object)
	// SetRequester records on a new object who creates it (a
	// CertificateSigningRequest's spec.username, uid, groups and extra),
	// after PrepareForCreate. May be nil.
	SetRequester func(obj runtime.Object, requester user.Info)
	// PrepareForUpdate adjusts a main-resource update of old to obj beyond the
	// generic status copy. May be nil.
	PrepareForUpdate func(obj, old runtime.Object)
	// PrepareForStatusUpdate adjusts a /status write of old to obj beyond the
	// generic spec copy. May be nil.
	PrepareForStatusUpdate func(obj, old runtime.Object)
	// StatusWritesMetadata lets a /status write change annotations,
	// finalizers and owner references too: upstream's Deployment status
	// strategy resets only spec and labels (the deployment controller
	// writes its revision annotation with the status).
	StatusWritesMetadata bool
	// Validate, ValidateUpdate and ValidateStatusUpdate return upstream's
	// validation errors; nil funcs accept everything.
	Validate             func(obj runtime.Object) field.ErrorList
	ValidateUpdate       func(obj, old runtime.Object) field.ErrorList
	ValidateStatusUpdate func(obj, old runtime.Object) field.ErrorList
	// Warnings returns upstream's API warnings for a create (old nil) or an
	// update; kubectl prints them as "Warning: ...". May be nil.
	Warnings func(obj, old runtime.Object) []string
	// FieldLabels returns the field-selector labels beyond metadata.name and
	// metadata.namespace, which every resource has.
	FieldLabels func(obj runtime.Object) fields.Set
	// Subresources are the subresources beyond status and scale through
	// which part of the object is read and written (a
	// CertificateSigningRequest's approval).
	Subresources []Subresource
}

// Subresource is a view of the whole object through which a write may
// change only part of it, as /status changes only the status.
type Subresource struct {
	Name string
	// PrepareForUpdate makes obj, a write through the subresource over
	// old (whose metadata and spec obj already keeps), change only what
	// the subresource may change.
	PrepareForUpdate func(obj, old runtime.Object)
	// ValidateUpdate returns upstream's errors for the write.
	ValidateUpdate func(obj, old runtime.Object) field.ErrorList
}

// Subresource returns the resource's extra subresource named name, or nil.
func (r *Resource) Subresource(name string) *Subresource {
	for i := range r.Subresources {
		if r.Subresources[i].Name == name {
			return &r.Subresources[i]
		}
	}
	return nil
}

// GVR is the resource's group, version and plural.
func (r *Resource) GVR() schema.GroupVersionResource {
	return r.GVK.GroupVersion().WithResource(r.Plural)
}

// GroupResource is the resource's group and plural, as errors name it.
func (r *Resource) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.GVK.Group, Resource: r.Plural}
}

// ListGVK is the kind of the resource's list.
func (r *Resource) ListGVK() schema.GroupVersionKind {
	return r.GVK.GroupVersion().WithKind(r.GVK.Kind + "List")
}

// KeyPrefix is the store prefix under which all objects of the resource in
// namespace ns (every namespace when ns is "") are kept.
func (r *Resource) KeyPrefix(ns string) string {
	s := r
	if r.StorageResource != nil {
		s = r.StorageResource
	}
	p := "/registry/" + s.GVK.Group + "/" + s.Plural + "/"
	if s.GVK.Group == "" {
		p = "/registry/core/" + s.Plural + "/"
	}
	if r.Namespaced && ns != "" {
		p += ns + "/"
	}
	return p
}

// Key is the store key of one object.
func (r *Resource) Key(ns, name string) string {
	return r.KeyPrefix(ns) + name
}

// Verbs are the verbs discovery lists for the resource.
func (r *Resource) Verbs() []string {
	return []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
}

// Registry is the set of served resources.
type Registry struct {
	list  []*Resource
	byGVR map[schema.GroupVersionResource]*Resource
	byGVK map[schema.GroupVersionKind]*Resource
}

// New builds a registry from resources; a duplicate is a programming error.
func New(resources ...*Resource) (*Registry, error) {
	reg := &Registry{
		byGVR: map[schema.GroupVersionResource]*Resource{},
		byGVK: map[schema.GroupVersionKind]*Resource{},
	}
	for _, r := range resources {
		if _, dup := reg.byGVR[r.GVR()]; dup {
			return nil, fmt.Errorf("registry: resource %v registered twice", r.GVR())
		}
		reg.byGVR[r.GVR()] = r
		reg.byGVK[r.GVK] = r
		reg.list = append(reg.list, r)
	}
	sort.SliceStable(reg.list, func(i, j int) bool { return reg.list[i].Plural < reg.list[j].Plural })
	return reg, nil
}

// Lookup finds a resource by group, version and plural.
func (reg *Registry) Lookup(gvr schema.GroupVersionResource) (*Resource, bool) {
	r, ok := reg.byGVR[gvr]
	return r, ok
}

// ForKind finds the resource that serves a kind.
func (reg *Registry) ForKind(gvk schema.GroupVersionKind) (*Resource, bool) {
	r, ok := reg.byGVK[gvk]
	return r, ok
}

// All returns every resource, sorted by plural.
func (reg *Registry) All() []*Resource { return reg.list }

// GroupVersions returns the served group-versions: the core group first, then
// the others in the order upstream lists them.
func (reg *Registry) GroupVersions() []schema.GroupVersion {
	seen := map[schema.GroupVersion]bool{}
	var out []schema.GroupVersion
	for _, r := range reg.list {
		gv := r.GVK.GroupVersion()
		if !seen[gv] {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return groupRank(out[i].Group) < groupRank(out[j].Group) })
	return out
}

// groupRank orders groups as upstream's /apis does.
func groupRank(g string) int {
	order := []string{"", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
		"autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io", "policy",
		"rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io",
		"apiextensions.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
		"discovery.k8s.io", "flowcontrol.apiserver.k8s.io"}
	for i, o := range order {
		if o == g {
			return i
		}
	}
	return len(order)
}
