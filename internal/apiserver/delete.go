package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
)

// Finalizers that the garbage collector acts on (upstream's names).
const (
	FinalizerOrphan     = metav1.FinalizerOrphanDependents
	FinalizerForeground = metav1.FinalizerDeleteDependents
)

// undeletableNamespaces may never be deleted, as upstream.
var undeletableNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic}

// parseDeleteOptions reads DeleteOptions from the body (kubectl sends them
// without apiVersion and kind) and the query.
func (s *Server) parseDeleteOptions(r *http.Request) (metav1.DeleteOptions, error) {
	var opts metav1.DeleteOptions
	body, err := readBody(r)
	if err == nil {
		into := &metav1.DeleteOptions{}
		gvk := schema.GroupVersion{Version: "v1"}.WithKind("DeleteOptions")
		info, ok := runtime.SerializerInfoForMediaType(s.codecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if i, ok2 := runtime.SerializerInfoForMediaType(s.codecs.SupportedMediaTypes(), ct); ok2 {
				info, ok = i, true
			}
		}
		if !ok {
			return opts, unsupportedMediaType(r.Header.Get("Content-Type"))
		}
		obj, _, derr := info.Serializer.Decode(body, &gvk, into)
		if derr != nil {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("unable to decode DeleteOptions: %v", derr))
		}
		opts = *obj.(*metav1.DeleteOptions)
	} else if st, ok := err.(apierrors.APIStatus); !ok || st.Status().Message != "the request body is empty" {
		return opts, err
	}
	// The query may carry the same options (a deletecollection's query also
	// carries the list's selectors, which are not DeleteOptions).
	q := r.URL.Query()
	if v := q.Get("gracePeriodSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("gracePeriodSeconds: invalid value %q", v))
		}
		opts.GracePeriodSeconds = &n
	}
	if v := q.Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		opts.PropagationPolicy = &p
	}
	if v := q.Get("orphanDependents"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("orphanDependents: invalid value %q", v))
		}
		opts.OrphanDependents = &b
	}
	opts.DryRun = append(opts.DryRun, q["dryRun"]...)
	for _, d := range opts.DryRun {
		if d != metav1.DryRunAll {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("Invalid dry run value: %q, supported values: All", d))
		}
	}
	if p := opts.PropagationPolicy; p != nil {
		switch *p {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return opts, apierrors.NewBadRequest(fmt.Sprintf("propagationPolicy: Unsupported value: %q: supported values: \"Foreground\", \"Background\", \"Orphan\"", *p))
		}
		if opts.OrphanDependents != nil {
			return opts, apierrors.NewBadRequest("orphanDependents: Invalid value: cannot set both orphanDependents and propagationPolicy")
		}
	}
	if g := opts.GracePeriodSeconds; g != nil && *g < 0 {
		zero := int64(0)
		opts.GracePeriodSeconds = &zero
	}
	return opts, nil
}

// delete answers DELETE of one object.
func (s *Server) delete(w http.ResponseWriter, r *http.Request, req *request) error {
	opts, err := s.parseDeleteOptions(r)
	if err != nil {
		return err
	}
	out, err := s.negotiate(r, false)
	if err != nil {
		return err
	}
	obj, deleted, err := s.deleteObject(r.Context(), req.res, req.namespace, req.name, opts)
	if err != nil {
		return err
	}
	if deleted && !req.res.ReturnDeletedObject {
		writeJSON(w, http.StatusOK, successStatus(req.res, obj))
		return nil
	}
	return s.writeObject(w, http.StatusOK, out, obj)
}

func successStatus(res *registry.Resource, obj runtime.Object) *metav1.Status {
	om := m(obj)
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusSuccess,
		Details:  &metav1.StatusDetails{Name: om.GetName(), Group: res.GVK.Group, Kind: res.Plural, UID: om.GetUID()},
	}
}

// deleteObject runs upstream's delete: preconditions, graceful deletion
// (pods on a node), finalizers for the propagation policy, and removal once
// nothing holds the object. deleted tells whether it is gone from the store.
func (s *Server) deleteObject(ctx context.Context, res *registry.Resource, ns, name string, opts metav1.DeleteOptions) (runtime.Object, bool, error) {
	if res.Plural == "namespaces" && slices.Contains(undeletableNamespaces, name) {
		return nil, false, apierrors.NewForbidden(res.GroupResource(), name, errors.New("this namespace may not be deleted"))
	}
	dryRun := len(opts.DryRun) > 0
	for {
		cur, kv, err := s.objects.get(ctx, res, ns, name)
		if err != nil {
			return nil, false, err
		}
		om := m(cur)
		if p := opts.Preconditions; p != nil {
			if p.UID != nil && *p.UID != om.GetUID() {
				return nil, false, apierrors.NewConflict(res.GroupResource(), name,
					fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, om.GetUID()))
			}
			if p.ResourceVersion != nil && *p.ResourceVersion != om.GetResourceVersion() {
				return nil, false, apierrors.NewConflict(res.GroupResource(), name,
					fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, om.GetResourceVersion()))
			}
		}
		grace := gracePeriod(cur, opts)
		finalizers := finalizersFor(res, om.GetFinalizers(), opts)
		// A namespace with spec.finalizers stays, Terminating, until the
		// namespace controller has emptied and finalized it.
		pending := len(finalizers) > 0 || grace > 0 || namespacePending(cur)
		if !pending {
			if dryRun {
				return cur, true, nil
			}
			_, err := s.objects.store.Delete(ctx, kv.Key, kv.ModRevision)
			if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, false, err
			}
			s.afterDelete(ctx, cur)
			return cur, true, nil
		}
		changed := !slices.Equal(finalizers, om.GetFinalizers())
		if ns, ok := cur.(*corev1.Namespace); ok && ns.Status.Phase != corev1.NamespaceTerminating {
			ns.Status.Phase = corev1.NamespaceTerminating
			changed = true
		}
		om.SetFinalizers(finalizers)
		if om.GetDeletionTimestamp() == nil {
			ts := metav1.NewTime(time.Now().Add(time.Duration(grace) * time.Second).Truncate(time.Second))
			om.SetDeletionTimestamp(&ts)
			om.SetDeletionGracePeriodSeconds(&grace)
			changed = true
		} else if g := om.GetDeletionGracePeriodSeconds(); g != nil && grace < *g {
			// A shorter grace period may replace a longer one.
			ts := metav1.NewTime(time.Now().Add(time.Duration(grace) * time.Second).Truncate(time.Second))
			om.SetDeletionTimestamp(&ts)
			om.SetDeletionGracePeriodSeconds(&grace)
			changed = true
		}
		if !changed || dryRun {
			return cur, false, nil
		}
		if deletionComplete(cur) {
			if _, err = s.objects.store.Delete(ctx, kv.Key, kv.ModRevision); err == nil {
				s.afterDelete(ctx, cur)
			}
		} else {
			var data []byte
			if data, err = s.objects.encode(res, cur); err == nil {
				var nkv store.KeyValue
				if nkv, err = s.objects.store.Update(ctx, kv.Key, data, kv.ModRevision); err == nil {
					om.SetResourceVersion(fmt.Sprint(nkv.ModRevision))
				}
			}
		}
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		return cur, false, nil
	}
}

// namespacePending: a namespace whose content the namespace controller still
// has to delete (spec.finalizers not empty) stays, Terminating.
func namespacePending(obj runtime.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && len(ns.Spec.Finalizers) > 0
}

// gracePeriod is how long the object lingers before it is removed: only pods
// bound to a node wait for their node agent, as upstream.
func gracePeriod(obj runtime.Object, opts metav1.DeleteOptions) int64 {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return 0
	}
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return 0
	}
	if opts.GracePeriodSeconds != nil {
		return *opts.GracePeriodSeconds
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}

// finalizersFor adds or removes the garbage collector's finalizers for the
// delete's propagation policy, as upstream does.
func finalizersFor(res *registry.Resource, current []string, opts metav1.DeleteOptions) []string {
	out := slices.Clone(current)
	policy := opts.PropagationPolicy
	if policy == nil && opts.OrphanDependents != nil {
		p := metav1.DeletePropagationBackground
		if *opts.OrphanDependents {
			p = metav1.DeletePropagationOrphan
		}
		policy = &p
	}
	if policy == nil && res.DefaultDeletePolicy != "" {
		policy = &res.DefaultDeletePolicy
	}
	if policy == nil {
		return out
	}
	without := func(f string) { out = slices.DeleteFunc(out, func(x string) bool { return x == f }) }
	with := func(f string) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	switch *policy {
	case metav1.DeletePropagationOrphan:
		without(FinalizerForeground)
		with(FinalizerOrphan)
	case metav1.DeletePropagationForeground:
		without(FinalizerOrphan)
		with(FinalizerForeground)
	case metav1.DeletePropagationBackground:
		without(FinalizerOrphan)
		without(FinalizerForeground)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// deleteCollection answers DELETE of a collection: every matching object is
// deleted with the same options.
func (s *Server) deleteCollection(w http.ResponseWriter, r *http.Request, req *request) error {
	opts, err := s.parseDeleteOptions(r)
	if err != nil {
		return err
	}
	out, err := s.negotiate(r, false)
	if err != nil {
		return err
	}
	sel, err := s.parseSelectors(r, req)
	if err != nil {
		return err
	}
	prefix := req.res.KeyPrefix(req.namespace)
	objs, rev, _, err := s.listObjects(r, req.res, prefix, store.ListOptions{}, sel, 0)
	if err != nil {
		return err
	}
	var deleted []runtime.Object
	for _, obj := range objs {
		om := m(obj)
		if req.res.Plural == "namespaces" && slices.Contains(undeletableNamespaces, om.GetName()) {
			continue
		}
		d, _, err := s.deleteObject(r.Context(), req.res, om.GetNamespace(), om.GetName(), opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		deleted = append(deleted, d)
	}
	return s.writeRead(w, r, out, req.res, deleted, fmt.Sprint(rev), "", true)
}
