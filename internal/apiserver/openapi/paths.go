package openapi

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

type operation struct {
	Description string               `json:"description,omitempty"`
	OperationID string               `json:"operationId,omitempty"`
	Parameters  []*parameter         `json:"parameters,omitempty"`
	RequestBody *requestBody         `json:"requestBody,omitempty"`
	Responses   map[string]*response `json:"responses"`
	Tags        []string             `json:"tags,omitempty"`
	Action      string               `json:"x-kubernetes-action,omitempty"`
	GVK         *gvkExt              `json:"x-kubernetes-group-version-kind,omitempty"`
}

type pathItem struct {
	Delete     *operation   `json:"delete,omitempty"`
	Get        *operation   `json:"get,omitempty"`
	Head       *operation   `json:"head,omitempty"`
	Options    *operation   `json:"options,omitempty"`
	Parameters []*parameter `json:"parameters,omitempty"`
	Patch      *operation   `json:"patch,omitempty"`
	Post       *operation   `json:"post,omitempty"`
	Put        *operation   `json:"put,omitempty"`
}

type mediaType struct {
	Schema *jsonSchema `json:"schema,omitempty"`
}

type requestBody struct {
	Content map[string]*mediaType `json:"content"`
}

type response struct {
	Content     map[string]*mediaType `json:"content,omitempty"`
	Description string                `json:"description"`
}

var (
	objectMediaTypes = []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}
	listMediaTypes   = []string{"application/json", "application/json;stream=watch", "application/yaml",
		"application/vnd.kubernetes.protobuf", "application/vnd.kubernetes.protobuf;stream=watch"}
	patchMediaTypes = []string{"application/apply-patch+yaml", "application/json-patch+json",
		"application/merge-patch+json", "application/strategic-merge-patch+json"}
	unauthorized = &response{Description: "Unauthorized"}
)

func content(s *jsonSchema, types []string) map[string]*mediaType {
	m := make(map[string]*mediaType, len(types))
	for _, t := range types {
		m[t] = &mediaType{Schema: s}
	}
	return m
}

// docBuilder collects the paths and referenced components of one group-version.
type docBuilder struct {
	g      *generator
	scheme *runtime.Scheme
	gv     schema.GroupVersion
	prefix string // "/api/v1", "/apis/apps/v1"
	gvName string // "CoreV1", "AppsV1", "StorageV1"
	tags   []string
	paths  map[string]*pathItem
	roots  map[string]bool
}

func newDocBuilder(g *generator, scheme *runtime.Scheme, gv schema.GroupVersion) *docBuilder {
	b := &docBuilder{g: g, scheme: scheme, gv: gv, paths: map[string]*pathItem{}, roots: map[string]bool{}}
	group := gv.Group
	b.prefix = "/apis/" + gv.Group + "/" + gv.Version
	if group == "" {
		group, b.prefix = "core", "/api/"+gv.Version
	}
	var camel string
	for _, p := range strings.Split(strings.TrimSuffix(group, ".k8s.io"), ".") {
		camel += upperFirst(p)
	}
	b.gvName = camel + upperFirst(gv.Version)
	b.tags = []string{lowerFirst(camel) + "_" + gv.Version}
	b.path(b.prefix + "/").Get = &operation{
		Description: "get available resources",
		OperationID: "get" + b.gvName + "APIResources",
		Responses:   b.ok(reflect.TypeFor[metav1.APIResourceList](), objectMediaTypes),
		Tags:        b.tags,
	}
	return b
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func (b *docBuilder) path(p string) *pathItem {
	it := b.paths[p]
	if it == nil {
		it = &pathItem{}
		b.paths[p] = it
	}
	return it
}

// ref returns a $ref to t's component and marks it as used by this document.
func (b *docBuilder) ref(t reflect.Type) *jsonSchema {
	name := b.g.ref(t)
	b.roots[name] = true
	return &jsonSchema{Ref: refPrefix + name}
}

func (b *docBuilder) ok(t reflect.Type, types []string) map[string]*response {
	return map[string]*response{"200": {Content: content(b.ref(t), types), Description: "OK"}, "401": unauthorized}
}

func (b *docBuilder) written(t reflect.Type, accepted bool) map[string]*response {
	s := b.ref(t)
	r := map[string]*response{
		"200": {Content: content(s, objectMediaTypes), Description: "OK"},
		"201": {Content: content(s, objectMediaTypes), Description: "Created"},
		"401": unauthorized,
	}
	if accepted {
		r["202"] = &response{Content: content(s, objectMediaTypes), Description: "Accepted"}
	}
	return r
}

func (b *docBuilder) body(t reflect.Type) *requestBody {
	return &requestBody{Content: content(b.ref(t), []string{"*/*"})}
}

func (b *docBuilder) patchBody() *requestBody {
	return &requestBody{Content: content(b.ref(reflect.TypeFor[metav1.Patch]()), patchMediaTypes)}
}

// typeOf is the Go struct type the scheme registers for gvk, or fallback.
func (b *docBuilder) typeOf(gvk schema.GroupVersionKind, fallback any) (reflect.Type, error) {
	if obj, err := b.scheme.New(gvk); err == nil {
		return reflect.TypeOf(obj).Elem(), nil
	} else if fallback == nil {
		return nil, fmt.Errorf("openapi: %v: %w", gvk, err)
	}
	t := reflect.TypeOf(fallback)
	b.g.addGVK(t, gvkExt{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind})
	return t, nil
}

// kindOps names and describes the operations on one kind at one set of paths.
type kindOps struct {
	gvk        *gvkExt
	t          reflect.Type
	id         string // e.g. "NamespacedPod", "PersistentVolume", "NamespacedStatefulSetScale"
	what       string // e.g. "the specified Pod", "status of the specified Pod"
	pathParams []*parameter
}

func (k *kindOps) op(verb, desc, action string, params []*parameter) *operation {
	ps := append(append([]*parameter{}, k.pathParams...), params...)
	return &operation{Description: desc, OperationID: verb, Parameters: ps, Action: action, GVK: k.gvk,
		Responses: map[string]*response{}}
}

func (b *docBuilder) finish(o *operation, idSuffix string) *operation {
	o.OperationID += b.gvName + idSuffix
	o.Tags = b.tags
	return o
}

// addResource adds every path of r to the document.
func (b *docBuilder) addResource(r Resource) error {
	kindT, err := b.typeOf(r.GVK, nil)
	if err != nil {
		return err
	}
	verbs := r.Verbs
	if len(verbs) == 0 {
		verbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	}
	has := func(v string) bool { return slices.Contains(verbs, v) }
	var listT reflect.Type
	if has("list") || has("watch") {
		listGVK := r.ListGVK
		if listGVK.Empty() {
			listGVK = r.GVK.GroupVersion().WithKind(r.GVK.Kind + "List")
		}
		if listT, err = b.typeOf(listGVK, nil); err != nil {
			return err
		}
	}
	kind := r.GVK.Kind
	gvk := &gvkExt{Group: r.GVK.Group, Version: r.GVK.Version, Kind: kind}
	scope, base, watchBase := "", b.prefix, b.prefix+"/watch"
	nameParam := pathParam("name", "name of the "+kind)
	itemParams := []*parameter{nameParam}
	collParams := []*parameter{}
	if r.Namespaced {
		scope = "Namespaced"
		base += "/namespaces/{namespace}"
		watchBase += "/namespaces/{namespace}"
		itemParams = append(itemParams, namespaceParam)
		collParams = append(collParams, namespaceParam)
	}
	itemParams = append(itemParams, query("pretty")...)
	collParams = append(collParams, query("pretty")...)
	coll, item := base+"/"+r.Plural, base+"/"+r.Plural+"/{name}"
	k := &kindOps{gvk: gvk, t: kindT, id: scope + kind, what: "the specified " + kind, pathParams: itemParams}

	it := b.path(item)
	if has("get") {
		it.Get = b.readOp(k)
	}
	if has("update") {
		it.Put = b.replaceOp(k)
	}
	if has("patch") {
		it.Patch = b.patchOp(k)
	}
	if has("delete") {
		o := k.op("delete", "delete a "+kind, "delete", query(deleteParams...))
		o.RequestBody = b.body(reflect.TypeFor[metav1.DeleteOptions]())
		o.Responses = b.written(reflect.TypeFor[metav1.Status](), true)
		delete(o.Responses, "201")
		it.Delete = b.finish(o, k.id)
	}

	listQuery := listParams
	if has("watch") {
		listQuery = append(append([]string{}, listParams...), watchParams...)
	}
	ck := &kindOps{gvk: gvk, t: kindT, id: k.id, pathParams: collParams}
	ct := b.path(coll)
	if has("list") {
		o := ck.op("list", "list or watch objects of kind "+kind, "list", query(listQuery...))
		o.Responses = b.ok(listT, listMediaTypes)
		ct.Get = b.finish(o, k.id)
		if r.Namespaced {
			ak := &kindOps{gvk: gvk, pathParams: query("pretty")}
			o := ak.op("list", o.Description, "list", query(listQuery...))
			o.Responses = b.ok(listT, listMediaTypes)
			b.path(b.prefix + "/" + r.Plural).Get = b.finish(o, kind+"ForAllNamespaces")
		}
	}
	if has("create") {
		o := ck.op("create", "create a "+kind, "post", query(writeParams...))
		o.RequestBody = b.body(kindT)
		o.Responses = b.written(kindT, true)
		ct.Post = b.finish(o, k.id)
	}
	if has("deletecollection") {
		o := ck.op("delete", "delete collection of "+kind, "deletecollection", query(deleteCollectionPs...))
		o.RequestBody = b.body(reflect.TypeFor[metav1.DeleteOptions]())
		o.Responses = b.ok(reflect.TypeFor[metav1.Status](), objectMediaTypes)
		ct.Delete = b.finish(o, "Collection"+k.id)
	}
	if has("watch") {
		wq := query(append(append([]string{}, listParams...), watchParams...)...)
		event := reflect.TypeFor[metav1.WatchEvent]()
		o := (&kindOps{gvk: gvk, pathParams: collParams}).op("watch",
			"watch individual changes to a list of "+kind+". deprecated: use the 'watch' parameter with a list operation instead.", "watchlist", wq)
		o.Responses = b.ok(event, listMediaTypes)
		b.path(watchBase + "/" + r.Plural).Get = b.finish(o, k.id+"List")
		o = (&kindOps{gvk: gvk, pathParams: itemParams}).op("watch",
			"watch changes to an object of kind "+kind+". deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter.", "watch", wq)
		o.Responses = b.ok(event, listMediaTypes)
		b.path(watchBase + "/" + r.Plural + "/{name}").Get = b.finish(o, k.id)
		if r.Namespaced {
			o = (&kindOps{gvk: gvk, pathParams: query("pretty")}).op("watch",
				"watch individual changes to a list of "+kind+". deprecated: use the 'watch' parameter with a list operation instead.", "watchlist", wq)
			o.Responses = b.ok(event, listMediaTypes)
			b.path(b.prefix + "/watch/" + r.Plural).Get = b.finish(o, kind+"ListForAllNamespaces")
		}
	}
	for _, sub := range r.Subresources {
		if err := b.addSubresource(r, k, item+"/"+sub, sub); err != nil {
			return err
		}
	}
	return nil
}

func (b *docBuilder) readOp(k *kindOps) *operation {
	o := k.op("read", "read "+k.what, "get", nil)
	o.Responses = b.ok(k.t, objectMediaTypes)
	return b.finish(o, k.id)
}

func (b *docBuilder) replaceOp(k *kindOps) *operation {
	o := k.op("replace", "replace "+k.what, "put", query(writeParams...))
	o.RequestBody = b.body(k.t)
	o.Responses = b.written(k.t, false)
	return b.finish(o, k.id)
}

func (b *docBuilder) patchOp(k *kindOps) *operation {
	o := k.op("patch", "partially update "+k.what, "patch", query(patchParams...))
	o.RequestBody = b.patchBody()
	o.Responses = b.written(k.t, false)
	return b.finish(o, k.id)
}

// addSubresource adds the path of one subresource. Unknown subresources are
// left out of the document.
func (b *docBuilder) addSubresource(r Resource, parent *kindOps, p, sub string) error {
	kind := r.GVK.Kind
	gv := r.GVK.GroupVersion()
	sk := &kindOps{gvk: parent.gvk, t: parent.t, id: parent.id + upperFirst(sub),
		what: sub + " of the specified " + kind, pathParams: parent.pathParams}
	it := b.path(p)
	switch sub {
	case "status", "ephemeralcontainers", "resize", "scale":
		if sub == "scale" {
			t, err := b.typeOf(autoscalingv1.SchemeGroupVersion.WithKind("Scale"), autoscalingv1.Scale{})
			if err != nil {
				return err
			}
			sk.gvk = &gvkExt{Group: "autoscaling", Version: "v1", Kind: "Scale"}
			sk.t = t
		}
		it.Get, it.Put, it.Patch = b.readOp(sk), b.replaceOp(sk), b.patchOp(sk)
	case "finalize":
		it.Put = b.replaceOp(sk)
	case "eviction", "binding", "token":
		gvk, fallback := policyv1.SchemeGroupVersion.WithKind("Eviction"), any(policyv1.Eviction{})
		switch sub {
		case "binding":
			gvk, fallback = gv.WithKind("Binding"), corev1.Binding{}
		case "token":
			gvk, fallback = authenticationv1.SchemeGroupVersion.WithKind("TokenRequest"), authenticationv1.TokenRequest{}
		}
		t, err := b.typeOf(gvk, fallback)
		if err != nil {
			return err
		}
		sk.gvk, sk.t = &gvkExt{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind}, t
		o := sk.op("create", "create "+sub+" of a "+kind, "post", query(writeParams...))
		o.RequestBody = b.body(t)
		o.Responses = b.written(t, true)
		it.Post = b.finish(o, sk.id)
	case "log":
		o := sk.op("read", "read log of the specified "+kind, "get", b.optionParams(gv.WithKind(kind+"LogOptions")))
		str := &jsonSchema{Type: "string"}
		o.Responses = map[string]*response{"200": {Content: content(str, append([]string{"text/plain"}, objectMediaTypes...)), Description: "OK"}, "401": unauthorized}
		it.Get = b.finish(o, sk.id)
	case "exec", "attach", "portforward", "proxy":
		optKind := kind + map[string]string{"exec": "Exec", "attach": "Attach", "portforward": "PortForward", "proxy": "Proxy"}[sub] + "Options"
		sk.gvk = &gvkExt{Group: gv.Group, Version: gv.Version, Kind: optKind}
		params := b.optionParams(gv.WithKind(optKind))
		methods := []string{"Get", "Post"}
		if sub == "proxy" {
			methods = []string{"Delete", "Get", "Head", "Options", "Patch", "Post", "Put"}
		}
		pathParams := parent.pathParams[:len(parent.pathParams)-1] // name, namespace; no pretty
		for _, m := range methods {
			o := &operation{Description: "connect " + strings.ToUpper(m) + " requests to " + sub + " of " + kind,
				OperationID: "connect" + b.gvName + m + sk.id, Action: "connect", GVK: sk.gvk, Tags: b.tags,
				Parameters: append(append([]*parameter{}, pathParams...), params...),
				Responses: map[string]*response{"200": {Content: content(&jsonSchema{Type: "string"}, []string{"*/*"}), Description: "OK"},
					"401": unauthorized}}
			it.set(m, o)
		}
	default:
		delete(b.paths, p)
	}
	return nil
}

// optionParams turns the scalar fields of an options kind (PodLogOptions,
// PodExecOptions, ...) into query parameters, with their SwaggerDoc texts.
func (b *docBuilder) optionParams(gvk schema.GroupVersionKind) []*parameter {
	obj, err := b.scheme.New(gvk)
	if err != nil {
		return nil
	}
	t := reflect.TypeOf(obj).Elem()
	docs := swaggerDoc(t)
	var out []*parameter
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous || name == "" || name == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		s := b.g.typeSchema(ft, "")
		if s.Type == "" || s.Type == "array" || s.Type == "object" {
			continue
		}
		out = append(out, &parameter{Description: docs[name], In: "query", Name: name,
			Schema: &jsonSchema{Type: s.Type, UniqueItems: true}})
	}
	return out
}

// finalize sorts parameters and hoists the ones shared by every operation
// of a path to the path, as upstream does. Parameters of a PATCH operation
// other than name/namespace/pretty stay on the operation: kubectl looks for
// fieldValidation among the PATCH operation's own parameters.
func (b *docBuilder) finalize() {
	for p, it := range b.paths {
		ops := it.operations()
		if len(ops) == 0 {
			delete(b.paths, p)
			continue
		}
		var common []*parameter
		for _, prm := range ops[0].Parameters {
			if it.Patch != nil && prm.Name != "name" && prm.Name != "namespace" && prm.Name != "pretty" {
				continue
			}
			shared := true
			for _, o := range ops[1:] {
				shared = shared && slices.ContainsFunc(o.Parameters, func(q *parameter) bool { return q.Name == prm.Name && q.In == prm.In })
			}
			if shared {
				common = append(common, prm)
			}
		}
		for _, o := range ops {
			o.Parameters = slices.DeleteFunc(o.Parameters, func(q *parameter) bool {
				return slices.ContainsFunc(common, func(c *parameter) bool { return c.Name == q.Name && c.In == q.In })
			})
			sortParams(o.Parameters)
			if len(o.Parameters) == 0 {
				o.Parameters = nil
			}
		}
		sortParams(common)
		it.Parameters = common
	}
}

func (it *pathItem) operations() []*operation {
	var ops []*operation
	for _, o := range []*operation{it.Delete, it.Get, it.Head, it.Options, it.Patch, it.Post, it.Put} {
		if o != nil {
			ops = append(ops, o)
		}
	}
	return ops
}

func (it *pathItem) set(method string, o *operation) {
	switch method {
	case "Delete":
		it.Delete = o
	case "Get":
		it.Get = o
	case "Head":
		it.Head = o
	case "Options":
		it.Options = o
	case "Patch":
		it.Patch = o
	case "Post":
		it.Post = o
	case "Put":
		it.Put = o
	}
}
