package apiserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/user"
)

// writeOptions are the query parameters every write takes.
type writeOptions struct {
	dryRun       bool
	fieldManager string
	validation   string // metav1.FieldValidation{Strict,Warn,Ignore}
	force        bool
}

func parseWriteOptions(r *http.Request) (writeOptions, error) {
	q := r.URL.Query()
	o := writeOptions{fieldManager: q.Get("fieldManager"), validation: q.Get("fieldValidation")}
	for _, d := range q["dryRun"] {
		if d != metav1.DryRunAll {
			return o, apierrors.NewBadRequest(fmt.Sprintf("Invalid dry run value: %q, supported values: All", d))
		}
		o.dryRun = true
	}
	switch o.validation {
	case "":
		o.validation = metav1.FieldValidationWarn
	case metav1.FieldValidationStrict, metav1.FieldValidationWarn, metav1.FieldValidationIgnore:
	default:
		return o, apierrors.NewBadRequest(fmt.Sprintf("invalid fieldValidation directive: %s, must be one of Ignore, Warn, Strict", o.validation))
	}
	if len(o.fieldManager) > 128 {
		return o, apierrors.NewBadRequest("fieldManager: Too long: may not be longer than 128 characters")
	}
	if o.fieldManager == "" {
		// As upstream: the user agent's program name.
		ua := r.Header.Get("User-Agent")
		o.fieldManager, _, _ = strings.Cut(ua, "/")
		if o.fieldManager == "" {
			o.fieldManager = "unknown"
		}
	}
	if f := q.Get("force"); f != "" {
		var err error
		if o.force, err = strconv.ParseBool(f); err != nil {
			return o, apierrors.NewBadRequest(fmt.Sprintf("invalid force value %q", f))
		}
	}
	return o, nil
}

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, tooLarge()
		}
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, apierrors.NewBadRequest("the request body is empty")
	}
	return body, nil
}

// beginWrite reads what every write starts with: the query's options, the
// response format, and the body.
func (s *Server) beginWrite(r *http.Request) (writeOptions, output, []byte, error) {
	opts, err := parseWriteOptions(r)
	if err != nil {
		return opts, output{}, nil, err
	}
	out, err := s.negotiate(r, false)
	if err != nil {
		return opts, out, nil, err
	}
	body, err := readBody(r)
	return opts, out, body, err
}

// create answers POST to a collection.
func (s *Server) create(w http.ResponseWriter, r *http.Request, req *request) error {
	opts, out, body, err := s.beginWrite(r)
	if err != nil {
		return err
	}
	obj, warnings, err := s.decodeRequestObject(r, req, body, opts)
	if err != nil {
		return err
	}
	fm, err := s.fieldManager(req.res, "")
	if err != nil {
		return err
	}
	created, err := s.createObject(r.Context(), req, obj, opts, func(obj runtime.Object) (runtime.Object, error) {
		return fm.Update(s.emptyLike(req.res), obj, opts.fieldManager)
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings, req.warnings)
	return s.writeObject(w, http.StatusCreated, out, created)
}

// decodeRequestObject decodes a create or update body and checks that its
// kind, namespace and (for updates) name fit the URL.
func (s *Server) decodeRequestObject(r *http.Request, req *request, body []byte, opts writeOptions) (runtime.Object, []string, error) {
	into, err := s.scheme.New(req.res.GVK)
	if err != nil {
		return nil, nil, err
	}
	into.GetObjectKind().SetGroupVersionKind(req.res.GVK)
	obj, warnings, err := s.decodeBody(r, body, into, opts.validation)
	if err != nil {
		return nil, nil, err
	}
	if gvk := obj.GetObjectKind().GroupVersionKind(); gvk != req.res.GVK {
		// Upstream's words, with the reason spelled out.
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: the data is a %s (apiVersion %s) but this URL takes a %s (apiVersion %s)",
			gvk.Kind, gvk.Version, req.res.GVK.Kind, gvk.Kind, gvk.GroupVersion(), req.res.GVK.Kind, req.res.GVK.GroupVersion()))
	}
	om := m(obj)
	if req.res.Namespaced {
		switch ns := om.GetNamespace(); {
		case ns == "":
			om.SetNamespace(req.namespace)
		case ns != req.namespace && req.namespace != "":
			return nil, nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		if om.GetNamespace() == "" {
			return nil, nil, apierrors.NewBadRequest("the server could not find the requested resource: a namespace is required")
		}
	} else {
		om.SetNamespace("")
	}
	if req.name != "" && om.GetName() != req.name {
		if om.GetName() == "" {
			om.SetName(req.name)
		} else {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", om.GetName(), req.name))
		}
	}
	return obj, warnings, nil
}

// emptyLike is an empty object of the resource's kind, the "live" object a
// create's managed fields start from.
func (s *Server) emptyLike(res *registry.Resource) runtime.Object {
	obj, _ := s.scheme.New(res.GVK)
	obj.GetObjectKind().SetGroupVersionKind(res.GVK)
	return obj
}

// createObject runs upstream's create pipeline on obj and stores it: system
// fields, the resource's PrepareForCreate, defaults, managed fields (manage),
// namespace lifecycle, validation. Nothing is written on error or dry run.
func (s *Server) createObject(ctx context.Context, req *request, obj runtime.Object, opts writeOptions, manage func(runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	res := req.res
	om := m(obj)
	if om.GetResourceVersion() != "" {
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	om.SetUID(uuid.NewUUID())
	om.SetCreationTimestamp(now())
	om.SetDeletionTimestamp(nil)
	om.SetDeletionGracePeriodSeconds(nil)
	om.SetSelfLink("")
	om.SetGeneration(0)
	if res.Generation {
		om.SetGeneration(1)
	}
	if res.PrepareForCreate != nil {
		res.PrepareForCreate(obj)
	}
	if requester, ok := user.From(ctx); ok && res.SetRequester != nil {
		res.SetRequester(obj, requester)
	}
	s.scheme.Default(obj)
	obj, err := manage(obj)
	if err != nil {
		return nil, err
	}
	obj, err = s.typed(res, obj)
	if err != nil {
		return nil, err
	}
	om = m(obj)
	generated := om.GetName() == "" && om.GetGenerateName() != ""
	if generated {
		om.SetName(om.GetGenerateName() + randomSuffix())
	}
	admissionWarnings, err := s.admitCreate(ctx, obj)
	if err != nil {
		return nil, err
	}
	if res.Warnings != nil {
		req.warnings = res.Warnings(obj, nil)
	}
	req.warnings = append(req.warnings, admissionWarnings...)
	if res.Validate != nil {
		if errs := res.Validate(obj); len(errs) > 0 {
			return nil, apierrors.NewInvalid(res.GVK.GroupKind(), om.GetName(), errs)
		}
	}
	if res.Namespaced {
		if err := s.admitNamespace(ctx, res, om.GetNamespace(), om.GetName()); err != nil {
			return nil, err
		}
	}
	release := func() {}
	if svc, ok := obj.(*corev1.Service); ok {
		var err error
		if release, err = s.allocateService(ctx, svc, opts.dryRun); err != nil {
			return nil, err
		}
	}
	if opts.dryRun {
		return obj, nil
	}
	for attempt := 0; ; attempt++ {
		data, err := s.objects.encode(res, obj)
		if err != nil {
			return nil, err
		}
		kv, err := s.objects.store.Create(ctx, res.Key(om.GetNamespace(), om.GetName()), data)
		if errors.Is(err, store.ErrExists) && generated && attempt < 3 {
			om.SetName(om.GetGenerateName() + randomSuffix())
			continue
		}
		if err != nil {
			release()
			return nil, storeError(res, om.GetName(), err)
		}
		om.SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
		obj.GetObjectKind().SetGroupVersionKind(res.GVK)
		return obj, nil
	}
}

// admitNamespace is upstream's NamespaceLifecycle admission: content may be
// created only in a namespace that exists and is not being deleted.
func (s *Server) admitNamespace(ctx context.Context, res *registry.Resource, ns, name string) error {
	nsRes, _ := s.reg.Lookup(corev1.SchemeGroupVersion.WithResource("namespaces"))
	obj, _, err := s.objects.get(ctx, nsRes, "", ns)
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(nsRes.GroupResource(), ns)
	}
	if err != nil {
		return err
	}
	if obj.(*corev1.Namespace).Status.Phase == corev1.NamespaceTerminating {
		err := apierrors.NewForbidden(res.GroupResource(), name,
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
		err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
			Type: corev1.NamespaceTerminatingCause, Message: fmt.Sprintf("namespace %s is being terminated", ns), Field: "metadata.namespace"})
		return err
	}
	return nil
}

// randomSuffix is generateName's five random characters, from upstream's
// alphabet (no vowels, no look-alikes).
func randomSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func addWarnings(w http.ResponseWriter, warnings ...[]string) {
	for _, warning := range slices.Concat(warnings...) {
		w.Header().Add("Warning", `299 - "`+strings.ReplaceAll(warning, `"`, `\"`)+`"`)
	}
}

// update answers PUT of an object, its status, scale or (namespaces) finalize.
func (s *Server) update(w http.ResponseWriter, r *http.Request, req *request) error {
	opts, out, body, err := s.beginWrite(r)
	if err != nil {
		return err
	}
	if req.subresource == "scale" {
		return s.updateScale(w, r, req, out, body, opts)
	}
	obj, warnings, err := s.decodeRequestObject(r, req, body, opts)
	if err != nil {
		return err
	}
	fm, err := s.fieldManager(req.res, managerSubresource(req.res, req.subresource))
	if err != nil {
		return err
	}
	result, created, err := s.guaranteedUpdate(r.Context(), req, opts, func(cur runtime.Object) (runtime.Object, error) {
		if cur == nil { // create on update
			return obj.DeepCopyObject(), nil
		}
		if rv := m(obj).GetResourceVersion(); rv != "" && rv != m(cur).GetResourceVersion() {
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name, errors.New(errModified))
		}
		if uid := m(obj).GetUID(); uid != "" && uid != m(cur).GetUID() {
			// As upstream: a uid in the body is a precondition.
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name,
				fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", uid, m(cur).GetUID()))
		}
		return obj.DeepCopyObject(), nil
	}, func(obj runtime.Object) (runtime.Object, error) {
		return fm.Update(s.emptyLike(req.res), obj, opts.fieldManager)
	}, func(cur, obj runtime.Object) (runtime.Object, error) {
		return fm.Update(cur, obj, opts.fieldManager)
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings, req.warnings)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	return s.writeObject(w, code, out, result)
}

// managerSubresource is the subresource whose field manager tracks a write.
func managerSubresource(res *registry.Resource, sub string) string {
	if sub == "status" || res.Subresource(sub) != nil {
		return sub
	}
	return ""
}

// guaranteedUpdate reads the current object, lets tryUpdate compute the new
// one, runs upstream's update pipeline and writes it with compare-and-swap,
// retrying on conflicts that tryUpdate did not cause. A missing object is
// created with createManage when the resource allows create-on-update and
// createManage is non-nil. manage records managed fields of an update; nil
// when tryUpdate did (server-side apply).
func (s *Server) guaranteedUpdate(ctx context.Context, req *request, opts writeOptions,
	tryUpdate func(cur runtime.Object) (runtime.Object, error),
	createManage func(runtime.Object) (runtime.Object, error),
	manage func(cur, obj runtime.Object) (runtime.Object, error)) (runtime.Object, bool, error) {
	res := req.res
	for {
		cur, kv, err := s.objects.get(ctx, res, req.namespace, req.name)
		if apierrors.IsNotFound(err) && createManage != nil && (res.AllowCreateOnUpdate || req.createOnMissing) && req.subresource == "" {
			obj, err := tryUpdate(nil)
			if err != nil {
				return nil, false, err
			}
			m(obj).SetResourceVersion("")
			created, err := s.createObject(ctx, req, obj, opts, createManage)
			if apierrors.IsAlreadyExists(err) {
				continue // raced with another create: update it instead
			}
			return created, err == nil, err
		}
		if err != nil {
			return nil, false, err
		}
		obj, err := tryUpdate(cur.DeepCopyObject())
		if err != nil {
			return nil, false, err
		}
		if obj, err = s.typed(res, obj); err != nil {
			return nil, false, err
		}
		// A write that named no resourceVersion is unconditional: a race
		// with another writer is retried on the newer object, as upstream.
		unconditional := m(obj).GetResourceVersion() == ""
		if obj, err = s.prepareUpdate(ctx, req, obj, cur, manage); err != nil {
			return nil, false, err
		}
		result, err := s.commitUpdate(ctx, req, obj, kv, opts)
		if errors.Is(err, store.ErrConflict) && unconditional {
			continue
		}
		if err != nil {
			return nil, false, storeError(res, req.name, err)
		}
		return result, false, nil
	}
}

// prepareUpdate is upstream's BeforeUpdate: system metadata from the current
// object, the status split, defaults, managed fields, generation, validation.
func (s *Server) prepareUpdate(ctx context.Context, req *request, obj, cur runtime.Object, manage func(cur, obj runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	res := req.res
	om, cm := m(obj), m(cur)
	if om.GetUID() == "" {
		om.SetUID(cm.GetUID())
	}
	om.SetCreationTimestamp(cm.GetCreationTimestamp())
	om.SetGeneration(cm.GetGeneration())
	om.SetSelfLink("")
	if cm.GetDeletionTimestamp() != nil {
		om.SetDeletionTimestamp(cm.GetDeletionTimestamp())
	}
	if cm.GetDeletionGracePeriodSeconds() != nil {
		om.SetDeletionGracePeriodSeconds(cm.GetDeletionGracePeriodSeconds())
	}
	if om.GetResourceVersion() == "" {
		om.SetResourceVersion(cm.GetResourceVersion())
	}
	sub := res.Subresource(req.subresource)
	switch {
	case req.subresource == "status":
		annotations, finalizers, owners := om.GetAnnotations(), om.GetFinalizers(), om.GetOwnerReferences()
		registry.KeepAllButStatus(obj, cur)
		if res.StatusWritesMetadata {
			om = m(obj)
			om.SetAnnotations(annotations)
			om.SetFinalizers(finalizers)
			om.SetOwnerReferences(owners)
		}
		if res.PrepareForStatusUpdate != nil {
			res.PrepareForStatusUpdate(obj, cur)
		}
	case req.subresource == "binding":
		// Only the node, annotations and PodScheduled condition changed,
		// set by createBinding itself.
	case sub != nil:
		registry.KeepAllButStatus(obj, cur)
		sub.PrepareForUpdate(obj, cur)
	case req.subresource == "finalize":
		fin := obj.(*corev1.Namespace).Spec.Finalizers
		registry.KeepAllButStatus(obj, cur)
		ns := obj.(*corev1.Namespace)
		ns.Status = cur.(*corev1.Namespace).Status
		ns.Spec.Finalizers = fin
	default:
		if res.Status {
			registry.CopyStatus(obj, cur)
		}
		if res.PrepareForUpdate != nil {
			res.PrepareForUpdate(obj, cur)
		}
		if svc, ok := obj.(*corev1.Service); ok {
			keepServiceAllocations(svc, cur.(*corev1.Service))
		}
	}
	s.scheme.Default(obj)
	if manage != nil {
		var err error
		if obj, err = manage(cur, obj); err != nil {
			return nil, err
		}
		if obj, err = s.typed(res, obj); err != nil {
			return nil, err
		}
		om = m(obj)
	}
	if res.Generation && req.subresource == "" && registry.SpecChanged(obj, cur) {
		om.SetGeneration(cm.GetGeneration() + 1)
	}
	req.warnings = nil // this may be a retry
	if res.Warnings != nil && req.subresource == "" {
		req.warnings = res.Warnings(obj, cur)
	}
	validate := res.ValidateUpdate
	switch {
	case req.subresource == "status":
		validate = res.ValidateStatusUpdate
	case sub != nil:
		validate = sub.ValidateUpdate
	}
	if validate != nil && req.subresource != "binding" {
		if errs := validate(obj, cur); len(errs) > 0 {
			return nil, apierrors.NewInvalid(res.GVK.GroupKind(), req.name, errs)
		}
	}
	if req.subresource == "" {
		warnings, err := s.admitUpdate(ctx, obj, cur)
		if err != nil {
			return nil, err
		}
		req.warnings = append(req.warnings, warnings...)
	}
	return obj, nil
}

// commitUpdate writes obj over kv, unless nothing changed; an object being
// deleted whose last finalizer is gone is deleted instead.
func (s *Server) commitUpdate(ctx context.Context, req *request, obj runtime.Object, kv store.KeyValue, opts writeOptions) (runtime.Object, error) {
	res := req.res
	om := m(obj)
	if rv := om.GetResourceVersion(); rv != strconv.FormatInt(kv.ModRevision, 10) {
		return nil, apierrors.NewConflict(res.GroupResource(), req.name, errors.New(errModified))
	}
	data, err := s.objects.encode(res, obj)
	if err != nil {
		return nil, err
	}
	if opts.dryRun {
		return obj, nil
	}
	if deletionComplete(obj) {
		if _, err := s.objects.store.Delete(ctx, kv.Key, kv.ModRevision); err != nil {
			return nil, err
		}
		s.afterDelete(ctx, obj)
		return obj, nil
	}
	if bytes.Equal(data, kv.Value) {
		return obj, nil // a no-op update writes nothing, as upstream
	}
	nkv, err := s.objects.store.Update(ctx, kv.Key, data, kv.ModRevision)
	if err != nil {
		return nil, err
	}
	om.SetResourceVersion(strconv.FormatInt(nkv.ModRevision, 10))
	obj.GetObjectKind().SetGroupVersionKind(res.GVK)
	return obj, nil
}

// afterDelete frees what an object held outside itself once it is gone.
func (s *Server) afterDelete(ctx context.Context, obj runtime.Object) {
	if svc, ok := obj.(*corev1.Service); ok {
		s.releaseService(ctx, svc)
	}
}

// deletionComplete: the object is being deleted, nothing holds it any more.
func deletionComplete(obj runtime.Object) bool {
	om := m(obj)
	if om.GetDeletionTimestamp() == nil || len(om.GetFinalizers()) > 0 || namespacePending(obj) {
		return false
	}
	g := om.GetDeletionGracePeriodSeconds()
	return g == nil || *g == 0
}

// typed converts what the field manager returns (sometimes unstructured) into
// the resource's typed object.
func (s *Server) typed(res *registry.Resource, obj runtime.Object) (runtime.Object, error) {
	u, ok := obj.(runtime.Unstructured)
	if !ok {
		return obj, nil
	}
	out, err := s.scheme.New(res.GVK)
	if err != nil {
		return nil, err
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), out); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	out.GetObjectKind().SetGroupVersionKind(res.GVK)
	return out, nil
}
