package apiserver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
)

// get answers GET of one object or of its status or scale.
func (s *Server) get(w http.ResponseWriter, r *http.Request, req *request) error {
	out, err := s.negotiate(r, req.subresource == "" || req.subresource == "status" || req.res.Subresource(req.subresource) != nil)
	if err != nil {
		return err
	}
	obj, _, err := s.objects.get(r.Context(), req.res, req.namespace, req.name)
	if err != nil {
		return err
	}
	if req.subresource == "scale" {
		scale, err := req.res.Scale.ToScale(obj)
		if err != nil {
			return err
		}
		return s.writeObject(w, http.StatusOK, out, scale)
	}
	return s.writeRead(w, r, out, req.res, []runtime.Object{obj}, m(obj).GetResourceVersion(), "", false)
}

// selectors are a list's or watch's label and field selectors.
type selectors struct {
	label labels.Selector
	field fields.Selector
}

func (s *Server) parseSelectors(r *http.Request, req *request) (selectors, error) {
	q := r.URL.Query()
	sel := selectors{label: labels.Everything(), field: fields.Everything()}
	var err error
	if v := q.Get("labelSelector"); v != "" {
		if sel.label, err = labels.Parse(v); err != nil {
			return sel, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
		}
	}
	if v := q.Get("fieldSelector"); v != "" {
		if sel.field, err = fields.ParseSelector(v); err != nil {
			return sel, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
		}
	}
	if req.name != "" {
		sel.field = fields.AndSelectors(sel.field, fields.OneTermEqualSelector("metadata.name", req.name))
	}
	// Every field named must be one the resource supports.
	if sel.field.Empty() {
		return sel, nil
	}
	zero, err := s.scheme.New(req.res.GVK)
	if err != nil {
		return sel, err
	}
	supported := fieldSet(req.res, zero)
	for _, term := range sel.field.Requirements() {
		if _, ok := supported[term.Field]; !ok {
			names := make([]string, 0, len(supported))
			for k := range supported {
				names = append(names, strconv.Quote(k))
			}
			sort.Strings(names)
			return sel, apierrors.NewBadRequest(fmt.Sprintf("%q is not a known field selector: only %s", term.Field, strings.Join(names, ", ")))
		}
	}
	return sel, nil
}

// fieldSet returns the field-selector labels of obj.
func fieldSet(res *registry.Resource, obj runtime.Object) fields.Set {
	om := m(obj)
	set := fields.Set{"metadata.name": om.GetName(), "metadata.namespace": om.GetNamespace()}
	if res.FieldLabels != nil {
		for k, v := range res.FieldLabels(obj) {
			set[k] = v
		}
	}
	return set
}

func (sel selectors) matches(res *registry.Resource, obj runtime.Object) bool {
	return sel.matchesWith(obj, func() fields.Set { return fieldSet(res, obj) })
}

// matchesWith is matches with obj's field set from fieldsOf, called only
// when there is a field selector.
func (sel selectors) matchesWith(obj runtime.Object, fieldsOf func() fields.Set) bool {
	if !sel.label.Empty() && !sel.label.Matches(labels.Set(m(obj).GetLabels())) {
		return false
	}
	return sel.field.Empty() || sel.field.Matches(fieldsOf())
}

// continueToken is the opaque paging token, as upstream shapes it.
type continueToken struct {
	APIVersion      string `json:"v"`
	ResourceVersion int64  `json:"rv"`
	StartKey        string `json:"start"`
}

func encodeContinue(rv int64, startKey string) string {
	b, _ := json.Marshal(continueToken{APIVersion: "meta.k8s.io/v1", ResourceVersion: rv, StartKey: startKey})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (continueToken, error) {
	var t continueToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.APIVersion != "meta.k8s.io/v1" || t.StartKey == "" {
		return t, apierrors.NewBadRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
	}
	return t, nil
}

// list answers GET of a collection.
func (s *Server) list(w http.ResponseWriter, r *http.Request, req *request) error {
	out, err := s.negotiate(r, true)
	if err != nil {
		return err
	}
	sel, err := s.parseSelectors(r, req)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	prefix := req.res.KeyPrefix(req.namespace)
	opts := store.ListOptions{StartKey: prefix}
	if c := q.Get("continue"); c != "" {
		tok, err := decodeContinue(c)
		if err != nil {
			return err
		}
		opts.Revision, opts.StartKey = tok.ResourceVersion, prefix+tok.StartKey
	} else if rv := q.Get("resourceVersion"); rv != "" && rv != "0" && q.Get("resourceVersionMatch") == string(metav1.ResourceVersionMatchExact) {
		if opts.Revision, err = strconv.ParseInt(rv, 10, 64); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("invalid resource version: %s", rv))
		}
	}
	objs, rev, next, err := s.listObjects(r, req.res, prefix, opts, sel, limit)
	if err != nil {
		return err
	}
	cont := ""
	if next != "" {
		cont = encodeContinue(rev, next[len(prefix):])
	}
	return s.writeRead(w, r, out, req.res, objs, strconv.FormatInt(rev, 10), cont, true)
}

// listObjects reads matching objects, page by page from the store, until limit
// of them are found (0: all). next is the key to continue from, if any.
func (s *Server) listObjects(r *http.Request, res *registry.Resource, prefix string, opts store.ListOptions, sel selectors, limit int) (objs []runtime.Object, rev int64, next string, err error) {
	for {
		page := opts
		if limit > 0 {
			page.Limit = limit - len(objs)
		}
		lr, err := s.objects.store.List(r.Context(), prefix, page)
		if err != nil {
			if errors.Is(err, store.ErrCompacted) {
				return nil, 0, "", apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
			}
			if errors.Is(err, store.ErrFutureRevision) {
				return nil, 0, "", apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d", opts.Revision), 1)
			}
			return nil, 0, "", err
		}
		rev = lr.Revision
		for _, kv := range lr.KVs {
			obj, err := s.objects.decode(res, kv)
			if err != nil {
				return nil, 0, "", err
			}
			if sel.matches(res, obj) {
				objs = append(objs, obj)
			}
		}
		if !lr.More {
			return objs, rev, "", nil
		}
		last := lr.KVs[len(lr.KVs)-1].Key
		if limit > 0 && len(objs) >= limit {
			return objs, rev, last + "\x00", nil
		}
		opts.Revision, opts.StartKey = rev, last+"\x00"
	}
}

// writeRead writes objects read from the store in the negotiated form: a
// single object, a typed list, a Table, or metadata.
func (s *Server) writeRead(w http.ResponseWriter, r *http.Request, out output, res *registry.Resource, objs []runtime.Object, rv, cont string, isList bool) error {
	switch out.kind {
	case outputTable:
		table, err := s.toTable(r, res, objs, true)
		if err != nil {
			return err
		}
		table.ResourceVersion, table.Continue = rv, cont
		return s.writeObject(w, http.StatusOK, out, table)
	case outputMetadata:
		if !isList {
			return s.writeObject(w, http.StatusOK, out, toPartial(objs[0]))
		}
		l := &metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadataList"}}
		l.ResourceVersion, l.Continue = rv, cont
		for _, o := range objs {
			l.Items = append(l.Items, *toPartial(o))
		}
		return s.writeObject(w, http.StatusOK, out, l)
	}
	if !isList {
		return s.writeObject(w, http.StatusOK, out, objs[0])
	}
	list, err := s.newList(res, objs)
	if err != nil {
		return err
	}
	lm, _ := meta.ListAccessor(list)
	lm.SetResourceVersion(rv)
	lm.SetContinue(cont)
	return s.writeObject(w, http.StatusOK, out, list)
}

// newList builds the resource's typed list (e.g. *corev1.PodList) of objs.
func (s *Server) newList(res *registry.Resource, objs []runtime.Object) (runtime.Object, error) {
	list, err := s.scheme.New(res.ListGVK())
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		o.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	}
	if err := meta.SetList(list, objs); err != nil {
		return nil, err
	}
	list.GetObjectKind().SetGroupVersionKind(res.ListGVK())
	return list, nil
}

func toPartial(obj runtime.Object) *metav1.PartialObjectMetadata {
	p := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}}
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		if om, ok := a.GetObjectMeta().(*metav1.ObjectMeta); ok {
			p.ObjectMeta = *om
		}
	}
	return p
}

// writeObject encodes one object with the negotiated serializer.
func (s *Server) writeObject(w http.ResponseWriter, code int, out output, obj runtime.Object) error {
	gv := obj.GetObjectKind().GroupVersionKind().GroupVersion()
	enc := s.codecs.EncoderForVersion(out.serializer.Serializer, gv)
	data, err := runtime.Encode(enc, obj)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", out.mediaType)
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(code)
	_, err = w.Write(data)
	return err
}

// m returns obj's metadata accessor; every served object has one.
func m(obj runtime.Object) metav1.Object {
	a, err := meta.Accessor(obj)
	if err != nil {
		panic(fmt.Sprintf("%T has no metadata: %v", obj, err))
	}
	return a
}
