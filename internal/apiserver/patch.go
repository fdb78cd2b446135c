package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// patch answers PATCH of an object or its status or scale, with JSON patch,
// merge patch, strategic merge patch or server-side apply.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, req *request) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	pt := types.PatchType(mt)
	switch pt {
	case types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType, types.ApplyYAMLPatchType:
	default:
		return apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "patch", req.res.GroupResource(), req.name,
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s, %s, %s, %s",
				types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType, types.ApplyYAMLPatchType), 0, false)
	}
	opts, out, body, err := s.beginWrite(r)
	if err != nil {
		return err
	}
	if req.subresource == "scale" {
		return s.patchScale(w, r, req, out, pt, body, opts)
	}
	if pt == types.ApplyYAMLPatchType {
		return s.apply(w, r, req, out, body, opts)
	}
	if opts.force {
		return apierrors.NewBadRequest("force: Invalid value: true: may not be specified for non-apply patch")
	}
	fm, err := s.fieldManager(req.res, managerSubresource(req.res, req.subresource))
	if err != nil {
		return err
	}
	var warnings []string
	result, _, err := s.guaranteedUpdate(r.Context(), req, opts, func(cur runtime.Object) (runtime.Object, error) {
		curJSON, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		patched, err := applyPatch(pt, curJSON, body, cur)
		if err != nil {
			return nil, err
		}
		into, _ := s.scheme.New(req.res.GVK)
		into.GetObjectKind().SetGroupVersionKind(req.res.GVK)
		info, _ := runtime.SerializerInfoForMediaType(s.codecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
		obj, warns, err := s.decodeWith(info, patched, into, opts.validation)
		if err != nil {
			return nil, err
		}
		warnings = warns
		if obj.GetObjectKind().GroupVersionKind() != req.res.GVK {
			return nil, apierrors.NewBadRequest("a patch may not change the kind or apiVersion of an object")
		}
		om := m(obj)
		if om.GetName() != req.name || om.GetNamespace() != req.namespace {
			return nil, apierrors.NewBadRequest("metadata.name and metadata.namespace may not be changed by a patch")
		}
		if rv := om.GetResourceVersion(); rv != m(cur).GetResourceVersion() {
			// The patch set a resourceVersion: optimistic concurrency.
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name, errors.New(errModified))
		}
		if !bytes.Contains(body, []byte(`"resourceVersion"`)) {
			om.SetResourceVersion("") // unconditional: retried on a race
		}
		return obj, nil
	}, nil, func(cur, obj runtime.Object) (runtime.Object, error) {
		return fm.Update(cur, obj, opts.fieldManager)
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings, req.warnings)
	return s.writeObject(w, http.StatusOK, out, result)
}

// applyPatch applies a JSON, merge or strategic merge patch to a JSON document.
// schemaObj gives the strategic merge patch its merge keys.
func applyPatch(pt types.PatchType, doc, patch []byte, schemaObj runtime.Object) ([]byte, error) {
	switch pt {
	case types.JSONPatchType:
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		out, err := p.Apply(doc)
		if err != nil {
			return nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", emptyGR, "", err.Error(), 0, false)
		}
		return out, nil
	case types.MergePatchType:
		out, err := jsonpatch.MergePatch(doc, patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		return out, nil
	case types.StrategicMergePatchType:
		out, err := strategicpatch.StrategicMergePatch(doc, patch, schemaObj)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported patch type %q", pt)
}

// apply answers a server-side apply patch: the field manager merges the applied
// configuration into the live object, or creates it.
func (s *Server) apply(w http.ResponseWriter, r *http.Request, req *request, out output, body []byte, opts writeOptions) error {
	if r.URL.Query().Get("fieldManager") == "" {
		return apierrors.NewBadRequest("PATCH, application/apply-patch+yaml requests require a fieldManager query parameter")
	}
	patchMap := map[string]interface{}{}
	if err := yaml.Unmarshal(body, &patchMap); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("error decoding YAML: %v", err))
	}
	applied := &unstructured.Unstructured{Object: patchMap}
	if gvk := applied.GroupVersionKind(); gvk != req.res.GVK {
		return apierrors.NewBadRequest(fmt.Sprintf("the apply configuration's apiVersion and kind (%s, %s) must be %s, %s",
			applied.GetAPIVersion(), applied.GetKind(), req.res.GVK.GroupVersion(), req.res.GVK.Kind))
	}
	if name := applied.GetName(); name != "" && name != req.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", name, req.name))
	}
	if ns := applied.GetNamespace(); req.res.Namespaced && ns != "" && ns != req.namespace {
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	fm, err := s.fieldManager(req.res, managerSubresource(req.res, req.subresource))
	if err != nil {
		return err
	}
	// Unknown fields in an apply configuration are caught by the type
	// converter; with fieldValidation=Strict that is an error as upstream.
	req.createOnMissing = req.subresource == ""
	var created bool
	result, created, err := s.guaranteedUpdate(r.Context(), req, opts, func(cur runtime.Object) (runtime.Object, error) {
		live := cur
		if live == nil {
			live = s.emptyLike(req.res)
			m(live).SetName(req.name)
			m(live).SetNamespace(req.namespace)
		}
		obj, err := fm.Apply(live, applied.DeepCopy(), opts.fieldManager, opts.force)
		if err != nil {
			return nil, err
		}
		return s.typed(req.res, obj)
	}, func(obj runtime.Object) (runtime.Object, error) { return obj, nil }, nil)
	if err != nil {
		return err
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	addWarnings(w, req.warnings)
	return s.writeObject(w, code, out, result)
}

// updateScale answers PUT of an autoscaling/v1 Scale.
func (s *Server) updateScale(w http.ResponseWriter, r *http.Request, req *request, out output, body []byte, opts writeOptions) error {
	into := &autoscalingv1.Scale{}
	into.GetObjectKind().SetGroupVersionKind(autoscalingv1.SchemeGroupVersion.WithKind("Scale"))
	obj, _, err := s.decodeBody(r, body, into, opts.validation)
	if err != nil {
		return err
	}
	scale, ok := obj.(*autoscalingv1.Scale)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected an autoscaling/v1 Scale, got %T", obj))
	}
	return s.writeScale(w, r, req, out, opts, func(cur *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
		if scale.ResourceVersion != "" && scale.ResourceVersion != cur.ResourceVersion {
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name, errors.New(errModified))
		}
		return scale, nil
	})
}

// patchScale answers PATCH of a Scale: the patch applies to the Scale view.
func (s *Server) patchScale(w http.ResponseWriter, r *http.Request, req *request, out output, pt types.PatchType, body []byte, opts writeOptions) error {
	if pt == types.ApplyYAMLPatchType {
		return apierrors.NewBadRequest("server-side apply of the scale subresource is not supported")
	}
	return s.writeScale(w, r, req, out, opts, func(cur *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
		curJSON, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		patched, err := applyPatch(pt, curJSON, body, cur)
		if err != nil {
			return nil, err
		}
		scale := &autoscalingv1.Scale{}
		if err := json.Unmarshal(patched, scale); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		return scale, nil
	})
}

// writeScale updates the parent's spec.replicas from a new Scale.
func (s *Server) writeScale(w http.ResponseWriter, r *http.Request, req *request, out output, opts writeOptions, next func(cur *autoscalingv1.Scale) (*autoscalingv1.Scale, error)) error {
	sa := req.res.Scale
	main := *req
	main.subresource = ""
	result, _, err := s.guaranteedUpdate(r.Context(), &main, opts, func(cur runtime.Object) (runtime.Object, error) {
		curScale, err := sa.ToScale(cur)
		if err != nil {
			return nil, err
		}
		scale, err := next(curScale)
		if err != nil {
			return nil, err
		}
		if scale.Spec.Replicas < 0 {
			return nil, apierrors.NewInvalid(autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind(), req.name,
				field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), scale.Spec.Replicas, "must be greater than or equal to 0")})
		}
		if err := sa.SetReplicas(cur, scale.Spec.Replicas); err != nil {
			return nil, err
		}
		return cur, nil
	}, nil, nil)
	if err != nil {
		return err
	}
	scale, err := sa.ToScale(result)
	if err != nil {
		return err
	}
	return s.writeObject(w, http.StatusOK, out, scale)
}
