package replicaset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Event reasons, as upstream's pod control.
const (
	ReasonSuccessfulCreate = "SuccessfulCreate"
	ReasonFailedCreate     = "FailedCreate"
	ReasonSuccessfulDelete = "SuccessfulDelete"
	ReasonFailedDelete     = "FailedDelete"
)

// errNoLabels refuses a pod no selector could ever match.
var errNoLabels = errors.New("unable to create pods, no labels")

// podFromTemplate is the pod an owner creates: the template's labels,
// annotations, finalizers and spec, the owner as controller, and a name
// generated from "<owner>-" (or "<owner>" when that would be too long).
func podFromTemplate(template *corev1.PodTemplateSpec, ownerName string, ref *metav1.OwnerReference) *corev1.Pod {
	prefix := ownerName + "-"
	if len(apivalidation.NameIsDNSSubdomain(prefix, true)) != 0 {
		prefix = ownerName
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: prefix,
			Labels:       maps.Clone(template.Labels),
			Annotations:  maps.Clone(template.Annotations),
			Finalizers:   append([]string(nil), template.Finalizers...),
		},
		Spec: *template.Spec.DeepCopy(),
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if ref != nil {
		pod.OwnerReferences = append(pod.OwnerReferences, *ref)
	}
	return pod
}

// createPod creates one pod of rs and records the event upstream records.
func (c *Controller) createPod(ctx context.Context, rs *appsv1.ReplicaSet) error {
	pod := podFromTemplate(&rs.Spec.Template, rs.Name, metav1.NewControllerRef(rs, c.kind.gvk))
	if len(pod.Labels) == 0 {
		return errNoLabels
	}
	created, err := c.client.CoreV1().Pods(rs.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		if !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			c.recorder.Eventf(c.kind.eventTarget(rs), corev1.EventTypeWarning, ReasonFailedCreate, "Error creating: %v", err)
		}
		return err
	}
	c.recorder.Eventf(c.kind.eventTarget(rs), corev1.EventTypeNormal, ReasonSuccessfulCreate, "Created pod: %v", created.Name)
	return nil
}

// deletePod deletes one pod of rs; a pod already gone is returned as
// NotFound with no event.
func (c *Controller) deletePod(ctx context.Context, rs *appsv1.ReplicaSet, name string) error {
	err := c.client.CoreV1().Pods(rs.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return err
	case err != nil:
		c.recorder.Eventf(c.kind.eventTarget(rs), corev1.EventTypeWarning, ReasonFailedDelete, "Error deleting: %v", err)
		return fmt.Errorf("unable to delete pods: %w", err)
	}
	c.recorder.Eventf(c.kind.eventTarget(rs), corev1.EventTypeNormal, ReasonSuccessfulDelete, "Deleted pod: %v", name)
	return nil
}

// claimPods returns the pods rs owns once it has adopted the orphans its
// selector matches and released its pods the selector no longer matches
// (upstream's PodControllerRefManager). Pods owned by another controller
// are left alone. An owner being deleted adopts and releases nothing.
func (c *Controller) claimPods(ctx context.Context, rs *appsv1.ReplicaSet, selector labels.Selector, pods []*corev1.Pod) ([]*corev1.Pod, error) {
	var claimed []*corev1.Pod
	var errs []error
	// Whether rs may adopt is checked once, against the API server, the
	// first time it would.
	var adoptable *error
	canAdopt := func() error {
		if adoptable == nil {
			err := c.recheckNotDeleted(ctx, rs)
			adoptable = &err
		}
		return *adoptable
	}
	for _, pod := range pods {
		matches := selector.Matches(labels.Set(pod.Labels))
		if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
			switch {
			case ref.UID != rs.UID:
			case matches:
				claimed = append(claimed, pod)
			case rs.DeletionTimestamp != nil:
			default:
				if err := c.releasePod(ctx, rs, pod); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		if rs.DeletionTimestamp != nil || !matches || pod.DeletionTimestamp != nil || pod.Namespace != rs.Namespace {
			continue
		}
		if err := canAdopt(); err != nil {
			errs = append(errs, fmt.Errorf("can't adopt Pod %s/%s (%s): %w", pod.Namespace, pod.Name, pod.UID, err))
			continue
		}
		err := c.patchPod(ctx, pod, ownerRefPatch(c.kind.gvk.GroupVersion().String(), c.kind.gvk.Kind, rs.Name, rs.UID, pod.UID))
		switch {
		case err == nil:
			claimed = append(claimed, pod)
		case !apierrors.IsNotFound(err):
			errs = append(errs, err)
		}
	}
	return claimed, errors.Join(errs...)
}

// recheckNotDeleted makes sure, on the API server rather than the cache,
// that rs still exists and is not being deleted before it adopts anything.
func (c *Controller) recheckNotDeleted(ctx context.Context, rs *appsv1.ReplicaSet) error {
	fresh, err := c.kind.fetch(ctx, rs.Namespace, rs.Name)
	if err != nil {
		return fmt.Errorf("can't recheck DeletionTimestamp: %w", err)
	}
	if fresh.UID != rs.UID {
		return fmt.Errorf("can't recheck DeletionTimestamp: original %s %s/%s is gone: got uid %s, wanted %s", c.kind.gvk.Kind, rs.Namespace, rs.Name, fresh.UID, rs.UID)
	}
	if fresh.DeletionTimestamp != nil {
		return fmt.Errorf("%s/%s has just been deleted at %v", fresh.Namespace, fresh.Name, fresh.DeletionTimestamp)
	}
	return nil
}

// releasePod removes rs's controllerRef from the pod. A pod gone, or whose
// reference is gone or belongs to a pod of the same name, is released.
func (c *Controller) releasePod(ctx context.Context, rs *appsv1.ReplicaSet, pod *corev1.Pod) error {
	err := c.patchPod(ctx, pod, deleteOwnerRefPatch(rs.UID, pod.UID))
	if apierrors.IsNotFound(err) || apierrors.IsInvalid(err) {
		return nil
	}
	return err
}

func (c *Controller) patchPod(ctx context.Context, pod *corev1.Pod, patch []byte) error {
	_, err := c.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}

// ownerRefPatch is a strategic merge patch that adds a controllerRef to an
// object; the UID makes it fail on an object of the same name.
func ownerRefPatch(apiVersion, kind, name string, ownerUID, uid types.UID) []byte {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []metav1.OwnerReference{{
			APIVersion: apiVersion, Kind: kind, Name: name, UID: ownerUID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}},
		"uid": uid,
	}})
	return patch
}

// deleteOwnerRefPatch is a strategic merge patch that removes the reference
// to ownerUID from the object of uid.
func deleteOwnerRefPatch(ownerUID, uid types.UID) []byte {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []map[string]any{{"$patch": "delete", "uid": ownerUID}},
		"uid":             uid,
	}})
	return patch
}

// podsByController indexes pods by the UID of their controller, and pods
// without one by orphanKey(namespace).
const podsByController = "podsByControllerUID"

func orphanKey(namespace string) string { return "orphan/" + namespace }

func indexPodByController(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		return []string{string(ref.UID)}, nil
	}
	return []string{orphanKey(pod.Namespace)}, nil
}

// ownedOrOrphan returns the pods rs controls and the orphans of its
// namespace.
func (c *Controller) ownedOrOrphan(rs *appsv1.ReplicaSet) ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	for _, key := range []string{string(rs.UID), orphanKey(rs.Namespace)} {
		objs, err := c.podIndex.ByIndex(podsByController, key)
		if err != nil {
			return nil, err
		}
		for _, obj := range objs {
			if pod, ok := obj.(*corev1.Pod); ok {
				out = append(out, pod)
			}
		}
	}
	return out, nil
}
