package apiserver

import (
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// createBinding answers POST pods/NAME/binding, the scheduler's way of
// placing a pod, as upstream: the pod gets spec.nodeName, the binding's
// annotations and the PodScheduled condition; a pod already placed or being
// deleted is a conflict. The reply is a Status.
func (s *Server) createBinding(w http.ResponseWriter, r *http.Request, req *request) error {
	opts, _, body, err := s.beginWrite(r)
	if err != nil {
		return err
	}
	into := &corev1.Binding{}
	into.GetObjectKind().SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Binding"))
	obj, _, err := s.decodeBody(r, body, into, opts.validation)
	if err != nil {
		return err
	}
	binding, ok := obj.(*corev1.Binding)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected a v1 Binding, got %T", obj))
	}
	if binding.Name != "" && binding.Name != req.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the binding (%s) does not match the name of the pod in the URL (%s)", binding.Name, req.name))
	}
	var errs field.ErrorList
	if binding.Target.Kind != "" && binding.Target.Kind != "Node" {
		errs = append(errs, field.NotSupported(field.NewPath("target", "kind"), binding.Target.Kind, []string{"Node", "<empty>"}))
	}
	if binding.Target.Name == "" {
		errs = append(errs, field.Required(field.NewPath("target", "name"), ""))
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), req.name, errs)
	}
	result, _, err := s.guaranteedUpdate(r.Context(), req, opts, func(cur runtime.Object) (runtime.Object, error) {
		pod := cur.(*corev1.Pod)
		if uid := binding.UID; uid != "" && uid != pod.UID {
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name,
				fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", uid, pod.UID))
		}
		if pod.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name, fmt.Errorf("pod %s is being deleted, cannot be assigned to a host", pod.Name))
		}
		if pod.Spec.NodeName != "" {
			return nil, apierrors.NewConflict(req.res.GroupResource(), req.name, fmt.Errorf("pod %v is already assigned to node %q", pod.Name, pod.Spec.NodeName))
		}
		pod.Spec.NodeName = binding.Target.Name
		// Not conditional on the pod's resourceVersion: a race with
		// another writer (the scheduler's status) is retried, as upstream.
		pod.ResourceVersion = ""
		for k, v := range binding.Annotations {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[k] = v
		}
		setPodScheduled(pod)
		return pod, nil
	}, nil, nil)
	if err != nil {
		return err
	}
	status := successStatus(req.res, result)
	status.Code = http.StatusCreated
	writeJSON(w, http.StatusCreated, status)
	return nil
}

func setPodScheduled(pod *corev1.Pod) {
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			if c.Status != corev1.ConditionTrue {
				pod.Status.Conditions[i] = corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second))}
			}
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second))})
}
