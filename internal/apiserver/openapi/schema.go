package openapi

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
)

// gvkExt is one entry of the x-kubernetes-group-version-kind extension.
type gvkExt struct {
	Group   string `json:"group"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
}

// jsonSchema is the subset of an OpenAPI v3 schema object that the
// Kubernetes documents use. Field order is the output order.
type jsonSchema struct {
	Ref                  string                 `json:"$ref,omitempty"`
	AllOf                []*jsonSchema          `json:"allOf,omitempty"`
	OneOf                []*jsonSchema          `json:"oneOf,omitempty"`
	Default              any                    `json:"default,omitempty"`
	Description          string                 `json:"description,omitempty"`
	Type                 string                 `json:"type,omitempty"`
	Format               string                 `json:"format,omitempty"`
	UniqueItems          bool                   `json:"uniqueItems,omitempty"`
	Items                *jsonSchema            `json:"items,omitempty"`
	AdditionalProperties *jsonSchema            `json:"additionalProperties,omitempty"`
	Properties           map[string]*jsonSchema `json:"properties,omitempty"`
	Required             []string               `json:"required,omitempty"`
	GVK                  []gvkExt               `json:"x-kubernetes-group-version-kind,omitempty"`
	PatchMergeKey        string                 `json:"x-kubernetes-patch-merge-key,omitempty"`
	PatchStrategy        string                 `json:"x-kubernetes-patch-strategy,omitempty"`
}

const refPrefix = "#/components/schemas/"

var (
	timeType        = reflect.TypeFor[time.Time]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	marshalerType   = reflect.TypeFor[json.Marshaler]()
)

// openAPITyper and openAPIV3OneOfTyper are the methods apimachinery's
// hand-written types (Quantity, IntOrString, Time, MicroTime, Duration) use
// to declare their wire type instead of their Go shape.
type openAPITyper interface {
	OpenAPISchemaType() []string
	OpenAPISchemaFormat() string
}

type openAPIV3OneOfTyper interface {
	OpenAPIV3OneOfTypes() []string
}

type swaggerDocer interface {
	SwaggerDoc() map[string]string
}

// extraDocs documents the apimachinery types that have no SwaggerDoc method
// (upstream takes these from Go comments, which reflection cannot see);
// the "" key is the type's own description.
var extraDocs = map[string]map[string]string{
	"io.k8s.apimachinery.pkg.api.resource.Quantity": {"": "Quantity is a fixed-point representation of a number, " +
		"serialized as a string such as \"1500m\", \"1.5Gi\" or \"2\": <signedNumber><suffix>, where the suffix is a binary SI " +
		"(Ki, Mi, Gi, Ti, Pi, Ei), decimal SI (m, \"\", k, M, G, T, P, E) or decimal exponent (e<n>, E<n>) suffix. " +
		"A plain JSON number is also accepted. Values are re-emitted in canonical form."},
	"io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"": "IntOrString is a type that can hold an int32 or a string. " +
		"In JSON or YAML it produces or consumes the inner type, so a field can accept, for example, either a name or a number."},
	"io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"": "Time is a wrapper around time.Time which supports correct marshaling " +
		"to YAML and JSON: an RFC 3339 date and time with second precision, in UTC."},
	"io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": {"": "MicroTime is version of Time with microsecond level precision."},
	"io.k8s.apimachinery.pkg.apis.meta.v1.Duration":  {"": "Duration is a wrapper around time.Duration which supports correct marshaling to YAML and JSON (for example \"1h2m3s\")."},
	"io.k8s.apimachinery.pkg.runtime.RawExtension": {"": "RawExtension holds an embedded object of any kind, serialized as " +
		"a complete JSON object with its own apiVersion and kind."},
	"io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent": {
		"":       "Event represents a single event to a watched resource.",
		"type":   "ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.",
		"object": "Object is: the new state of the object for ADDED and MODIFIED; the state of the object immediately before deletion for DELETED; a Status (recommended) for ERROR; an object carrying only metadata.resourceVersion for BOOKMARK.",
	},
}

// optionalFields are the fields of the served API types that are marked
// +optional without an omitempty JSON tag (k8s.io/api v0.33), which
// reflection alone would list as required. Key: component name + "." + field.
var optionalFields = map[string]bool{
	"io.k8s.api.apps.v1.StatefulSetOrdinals.start":                       true,
	"io.k8s.api.apps.v1.StatefulSetSpec.serviceName":                     true,
	"io.k8s.api.apps.v1.StatefulSetStatus.availableReplicas":             true,
	"io.k8s.api.authentication.v1.TokenRequestSpec.boundObjectRef":       true,
	"io.k8s.api.authentication.v1.TokenRequestSpec.expirationSeconds":    true,
	"io.k8s.api.core.v1.AzureFilePersistentVolumeSource.secretNamespace": true,
	"io.k8s.api.core.v1.ContainerImage.names":                            true,
	"io.k8s.api.core.v1.Event.reportingComponent":                        true,
	"io.k8s.api.core.v1.Event.reportingInstance":                         true,
	"io.k8s.api.core.v1.GRPCAction.service":                              true,
	"io.k8s.api.core.v1.NodeRuntimeHandler.name":                         true,
	"io.k8s.api.core.v1.ProjectedVolumeSource.sources":                   true,
	"io.k8s.api.core.v1.TypedLocalObjectReference.apiGroup":              true,
	"io.k8s.api.core.v1.TypedObjectReference.apiGroup":                   true,
	"io.k8s.api.discovery.v1.EndpointSlice.ports":                        true,
	"io.k8s.api.storage.v1.CSINodeDriver.topologyKeys":                   true,
}

// generator turns Go types into named component schemas, once per type.
type generator struct {
	gvks  map[reflect.Type][]gvkExt
	defs  map[string]*jsonSchema
	types map[string]reflect.Type
	deps  map[string][]string // component name → component names it references
	err   error
}

func newGenerator(scheme *runtime.Scheme) *generator {
	g := &generator{
		gvks:  map[reflect.Type][]gvkExt{},
		defs:  map[string]*jsonSchema{},
		types: map[string]reflect.Type{},
		deps:  map[string][]string{},
	}
	for gvk, t := range scheme.AllKnownTypes() {
		if gvk.Version == runtime.APIVersionInternal || gvk.Version == "" {
			continue
		}
		g.gvks[t] = append(g.gvks[t], gvkExt{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind})
	}
	for _, l := range g.gvks {
		sortGVKs(l)
	}
	return g
}

func sortGVKs(l []gvkExt) {
	sort.Slice(l, func(i, j int) bool {
		if l[i].Group != l[j].Group {
			return l[i].Group < l[j].Group
		}
		if l[i].Version != l[j].Version {
			return l[i].Version < l[j].Version
		}
		return l[i].Kind < l[j].Kind
	})
}

// addGVK records gvk for t when the scheme did not (e.g. autoscaling/v1 Scale
// served as a subresource of a group whose scheme lacks autoscaling).
func (g *generator) addGVK(t reflect.Type, gvk gvkExt) {
	for _, e := range g.gvks[t] {
		if e == gvk {
			return
		}
	}
	if name, ok := g.nameIfBuilt(t); ok {
		g.defs[name].GVK = append(g.defs[name].GVK, gvk)
		sortGVKs(g.defs[name].GVK)
	}
	g.gvks[t] = append(g.gvks[t], gvk)
	sortGVKs(g.gvks[t])
}

func (g *generator) nameIfBuilt(t reflect.Type) (string, bool) {
	name := defName(t)
	return name, g.types[name] == t
}

// defName is upstream's component name: the Go package path with its first
// (domain) element reversed, then the type name, joined by dots:
// k8s.io/api/core/v1.Pod → io.k8s.api.core.v1.Pod.
func defName(t reflect.Type) string {
	p := t.PkgPath()
	if i := strings.LastIndex(p, "/vendor/"); i >= 0 {
		p = p[i+len("/vendor/"):]
	}
	parts := strings.Split(p, "/")
	if strings.Contains(parts[0], ".") {
		d := strings.Split(parts[0], ".")
		for i, j := 0, len(d)-1; i < j; i, j = i+1, j-1 {
			d[i], d[j] = d[j], d[i]
		}
		parts[0] = strings.Join(d, ".")
	}
	return strings.Join(parts, ".") + "." + t.Name()
}

// ref makes sure t (a named struct type) has a component and returns its name.
func (g *generator) ref(t reflect.Type) string {
	name := defName(t)
	if prev, ok := g.types[name]; ok {
		if prev != t && g.err == nil {
			g.err = fmt.Errorf("openapi: types %v and %v both map to component %q", prev, t, name)
		}
		return name
	}
	g.types[name] = t
	s := &jsonSchema{}
	g.defs[name] = s // before building: recursive types end here
	g.component(t, name, s)
	return name
}

func (g *generator) component(t reflect.Type, name string, s *jsonSchema) {
	s.Description = typeDoc(t, name)
	if l := g.gvks[t]; len(l) > 0 {
		s.GVK = append([]gvkExt(nil), l...)
	}
	if typer, ok := valueOf(t).(openAPITyper); ok {
		types, format := typer.OpenAPISchemaType(), typer.OpenAPISchemaFormat()
		s.Format = format
		if oneOf, ok := valueOf(t).(openAPIV3OneOfTyper); ok && len(oneOf.OpenAPIV3OneOfTypes()) > 0 {
			for _, ot := range oneOf.OpenAPIV3OneOfTypes() {
				s.OneOf = append(s.OneOf, &jsonSchema{Type: ot})
			}
		} else if len(types) > 0 {
			s.Type = types[0]
		}
		return
	}
	s.Type = "object"
	if reflect.PointerTo(t).Implements(marshalerType) {
		return // RawExtension, FieldsV1, ...: free-form JSON objects
	}
	g.addFields(t, name, s)
}

// addFields adds t's JSON fields to s, flattening embedded (inline) structs
// the way encoding/json does.
func (g *generator) addFields(t reflect.Type, owner string, s *jsonSchema) {
	docs := swaggerDoc(t)
	if docs == nil {
		docs = extraDocs[defName(t)]
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.addFields(ft, owner, s)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		omitEmpty := hasOpt(opts, "omitempty") || hasOpt(opts, "omitzero")
		p := g.property(f.Type, owner, strings.TrimRight(docs[name], " \n"), omitEmpty)
		if v := f.Tag.Get("patchStrategy"); v != "" {
			p.PatchStrategy = v
		}
		if v := f.Tag.Get("patchMergeKey"); v != "" {
			p.PatchMergeKey = v
		}
		if s.Properties == nil {
			s.Properties = map[string]*jsonSchema{}
		}
		s.Properties[name] = p
		if !omitEmpty && !optionalFields[owner+"."+name] {
			s.Required = append(s.Required, name)
		}
	}
}

func hasOpt(opts, want string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == want {
			return true
		}
	}
	return false
}

// property is the schema of a struct field: a $ref is wrapped in a one-entry
// allOf when the field has a description or a default, as upstream does.
func (g *generator) property(t reflect.Type, owner, desc string, omitEmpty bool) *jsonSchema {
	s := g.typeSchema(t, owner)
	def := defaultFor(t, omitEmpty)
	if s.Ref != "" {
		if desc == "" && def == nil {
			return s
		}
		return &jsonSchema{AllOf: []*jsonSchema{s}, Default: def, Description: desc}
	}
	s.Default, s.Description = def, desc
	return s
}

// element is the schema of a slice item or map value.
func (g *generator) element(t reflect.Type, owner string) *jsonSchema {
	s := g.typeSchema(t, owner)
	def := defaultFor(t, false)
	if def == nil {
		return s
	}
	if s.Ref != "" {
		return &jsonSchema{AllOf: []*jsonSchema{s}, Default: def}
	}
	s.Default = def
	return s
}

// typeSchema returns a fresh inline schema for t, or a $ref for named structs.
func (g *generator) typeSchema(t reflect.Type, owner string) *jsonSchema {
	switch t.Kind() {
	case reflect.Pointer:
		return g.typeSchema(t.Elem(), owner)
	case reflect.Struct:
		if t == timeType {
			return &jsonSchema{Type: "string", Format: "date-time"}
		}
		if t.Name() == "" { // anonymous struct: inline
			s := &jsonSchema{Type: "object"}
			g.addFields(t, owner, s)
			return s
		}
		name := g.ref(t)
		if owner != "" {
			g.deps[owner] = append(g.deps[owner], name)
		}
		return &jsonSchema{Ref: refPrefix + name}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return &jsonSchema{Type: "string", Format: "byte"}
		}
		return &jsonSchema{Type: "array", Items: g.element(t.Elem(), owner)}
	case reflect.Map:
		return &jsonSchema{Type: "object", AdditionalProperties: g.element(t.Elem(), owner)}
	case reflect.Interface:
		return &jsonSchema{Type: "object"}
	case reflect.String:
		return &jsonSchema{Type: "string"}
	case reflect.Bool:
		return &jsonSchema{Type: "boolean"}
	case reflect.Int, reflect.Int16, reflect.Int32, reflect.Uint, reflect.Uint16:
		return &jsonSchema{Type: "integer", Format: "int32"}
	case reflect.Int8, reflect.Uint8:
		return &jsonSchema{Type: "integer", Format: "byte"}
	case reflect.Int64, reflect.Uint32, reflect.Uint64:
		return &jsonSchema{Type: "integer", Format: "int64"}
	case reflect.Float32:
		return &jsonSchema{Type: "number", Format: "float"}
	case reflect.Float64:
		return &jsonSchema{Type: "number", Format: "double"}
	}
	return &jsonSchema{}
}

// defaultFor follows upstream openapi-gen: non-pointer structs default to {}
// (unless they unmarshal themselves, like Time or Quantity); scalars that are
// not omitempty default to their zero value; everything else has no default.
func defaultFor(t reflect.Type, omitEmpty bool) any {
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Array, reflect.Interface:
		return nil
	case reflect.Struct:
		if reflect.PointerTo(t).Implements(unmarshalerType) {
			return nil
		}
		if t.NumField() == 1 && t.Field(0).Anonymous {
			return defaultFor(t.Field(0).Type, omitEmpty)
		}
		return map[string]any{}
	case reflect.String:
		if !omitEmpty {
			return ""
		}
	case reflect.Bool:
		if !omitEmpty {
			return false
		}
	default:
		if !omitEmpty {
			return 0
		}
	}
	return nil
}

func valueOf(t reflect.Type) any { return reflect.Zero(t).Interface() }

// swaggerDoc returns t's own SwaggerDoc map, ignoring one promoted from an
// embedded struct (which would describe the embedded type instead).
func swaggerDoc(t reflect.Type) map[string]string {
	d, ok := valueOf(t).(swaggerDocer)
	if !ok {
		return nil
	}
	docs := d.SwaggerDoc()
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.Anonymous {
			if e, ok := valueOf(f.Type).(swaggerDocer); ok && reflect.ValueOf(e.SwaggerDoc()).UnsafePointer() == reflect.ValueOf(docs).UnsafePointer() {
				return nil
			}
		}
	}
	return docs
}

func typeDoc(t reflect.Type, name string) string {
	if d := swaggerDoc(t); d != nil {
		return strings.TrimRight(d[""], " \n")
	}
	return extraDocs[name][""]
}

// closure returns every component name reachable from roots, sorted.
func (g *generator) closure(roots map[string]bool) []string {
	seen := map[string]bool{}
	var stack []string
	for n := range roots {
		stack = append(stack, n)
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, g.deps[n]...)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
