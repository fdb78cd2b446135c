package replicaset

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// kind holds what differs between the two kinds of owner. The controller
// works on apps/v1 ReplicaSets; a ReplicationController is converted to one
// on the way in and back on the way out, as upstream's replication manager
// does.
type kind struct {
	gvk       schema.GroupVersionKind
	queueName string
	informer  cache.SharedIndexInformer
	// view converts an object of the informer to the controller's view;
	// false if obj is not of the kind.
	view func(obj any) (*appsv1.ReplicaSet, bool)
	// fetch reads the owner from the API server, not the cache.
	fetch func(ctx context.Context, namespace, name string) (*appsv1.ReplicaSet, error)
	// updateStatus writes rs.Status to the owner's status subresource.
	updateStatus func(ctx context.Context, rs *appsv1.ReplicaSet) (*appsv1.ReplicaSet, error)
	// eventTarget is the object events about rs are recorded on.
	eventTarget func(rs *appsv1.ReplicaSet) runtime.Object
}

var (
	replicaSetKind            = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")
	replicationControllerKind = corev1.SchemeGroupVersion.WithKind("ReplicationController")
)

func replicaSets(client kubernetes.Interface, factory informers.SharedInformerFactory) *kind {
	view := func(obj any) (*appsv1.ReplicaSet, bool) {
		rs, ok := obj.(*appsv1.ReplicaSet)
		return rs, ok
	}
	return &kind{
		gvk: replicaSetKind, queueName: "replicaset",
		informer: factory.Apps().V1().ReplicaSets().Informer(),
		view:     view,
		fetch: func(ctx context.Context, namespace, name string) (*appsv1.ReplicaSet, error) {
			return client.AppsV1().ReplicaSets(namespace).Get(ctx, name, metav1.GetOptions{})
		},
		updateStatus: func(ctx context.Context, rs *appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
			return client.AppsV1().ReplicaSets(rs.Namespace).UpdateStatus(ctx, rs, metav1.UpdateOptions{})
		},
		eventTarget: func(rs *appsv1.ReplicaSet) runtime.Object { return rs },
	}
}

func replicationControllers(client kubernetes.Interface, factory informers.SharedInformerFactory) *kind {
	view := func(obj any) (*appsv1.ReplicaSet, bool) {
		rc, ok := obj.(*corev1.ReplicationController)
		if !ok {
			return nil, false
		}
		return replicaSetOf(rc), true
	}
	return &kind{
		gvk: replicationControllerKind, queueName: "replicationmanager",
		informer: factory.Core().V1().ReplicationControllers().Informer(),
		view:     view,
		fetch: func(ctx context.Context, namespace, name string) (*appsv1.ReplicaSet, error) {
			rc, err := client.CoreV1().ReplicationControllers(namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return replicaSetOf(rc), nil
		},
		updateStatus: func(ctx context.Context, rs *appsv1.ReplicaSet) (*appsv1.ReplicaSet, error) {
			rc, err := client.CoreV1().ReplicationControllers(rs.Namespace).UpdateStatus(ctx, replicationControllerOf(rs), metav1.UpdateOptions{})
			if err != nil {
				return nil, err
			}
			return replicaSetOf(rc), nil
		},
		eventTarget: func(rs *appsv1.ReplicaSet) runtime.Object { return replicationControllerOf(rs) },
	}
}

// cached returns the owner from the informer's cache, as a NotFound error
// when it is not there.
func (k *kind) cached(namespace, name string) (*appsv1.ReplicaSet, error) {
	obj, ok, err := k.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: k.gvk.Group, Resource: k.gvk.Kind}, name)
	}
	rs, ok := k.view(obj)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T in the %s cache", obj, k.gvk.Kind)
	}
	return rs, nil
}

// resolve returns the owner a controllerRef points at, or nil if it is not
// of this kind or no longer exists (a new object of the same name has
// another UID). As upstream, only the kind of the reference is compared.
func (k *kind) resolve(namespace string, ref *metav1.OwnerReference) *appsv1.ReplicaSet {
	if ref.Kind != k.gvk.Kind {
		return nil
	}
	rs, err := k.cached(namespace, ref.Name)
	if err != nil || rs.UID != ref.UID {
		return nil
	}
	return rs
}

// selecting returns the owners of pod's namespace whose selector matches its
// labels (upstream's GetPodReplicaSets); more than one is a user error that
// controllerRefs keep harmless.
func (k *kind) selecting(pod *corev1.Pod) []*appsv1.ReplicaSet {
	if len(pod.Labels) == 0 {
		return nil
	}
	objs, err := k.informer.GetIndexer().ByIndex(cache.NamespaceIndex, pod.Namespace)
	if err != nil {
		return nil
	}
	var out []*appsv1.ReplicaSet
	for _, obj := range objs {
		rs, ok := k.view(obj)
		if !ok {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil || selector.Empty() || !selector.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, rs)
	}
	return out
}

// withSameController returns the owners controlled by the same object as rs
// (the ReplicaSets of one Deployment), rs included.
func (k *kind) withSameController(rs *appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	ref := metav1.GetControllerOfNoCopy(rs)
	if ref == nil {
		return nil
	}
	objs, err := k.informer.GetIndexer().ByIndex(byControllerUID, string(ref.UID))
	if err != nil {
		return nil
	}
	out := make([]*appsv1.ReplicaSet, 0, len(objs))
	for _, obj := range objs {
		if other, ok := k.view(obj); ok {
			out = append(out, other)
		}
	}
	return out
}

const byControllerUID = "controllerUID"

func indexByControllerUID(obj any) ([]string, error) {
	o, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil
	}
	ref := metav1.GetControllerOfNoCopy(o)
	if ref == nil {
		return nil, nil
	}
	return []string{string(ref.UID)}, nil
}

// replicaSetOf converts an RC to the ReplicaSet it stands for, deep-copied
// so that the result can be changed.
func replicaSetOf(rc *corev1.ReplicationController) *appsv1.ReplicaSet {
	rc = rc.DeepCopy()
	rs := &appsv1.ReplicaSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "ReplicaSet"},
		ObjectMeta: rc.ObjectMeta,
		Spec: appsv1.ReplicaSetSpec{
			Replicas:        rc.Spec.Replicas,
			MinReadySeconds: rc.Spec.MinReadySeconds,
			Selector:        &metav1.LabelSelector{MatchLabels: rc.Spec.Selector},
		},
		Status: appsv1.ReplicaSetStatus{
			Replicas:             rc.Status.Replicas,
			FullyLabeledReplicas: rc.Status.FullyLabeledReplicas,
			ReadyReplicas:        rc.Status.ReadyReplicas,
			AvailableReplicas:    rc.Status.AvailableReplicas,
			ObservedGeneration:   rc.Status.ObservedGeneration,
		},
	}
	if rs.Spec.Replicas == nil {
		one := int32(1)
		rs.Spec.Replicas = &one
	}
	if rc.Spec.Template != nil {
		rs.Spec.Template = *rc.Spec.Template
	}
	for _, c := range rc.Status.Conditions {
		rs.Status.Conditions = append(rs.Status.Conditions, appsv1.ReplicaSetCondition{
			Type: appsv1.ReplicaSetConditionType(c.Type), Status: c.Status,
			LastTransitionTime: c.LastTransitionTime, Reason: c.Reason, Message: c.Message,
		})
	}
	return rs
}

// replicationControllerOf converts the controller's view of an RC back.
func replicationControllerOf(rs *appsv1.ReplicaSet) *corev1.ReplicationController {
	rs = rs.DeepCopy()
	rc := &corev1.ReplicationController{
		TypeMeta:   metav1.TypeMeta{APIVersion: corev1.SchemeGroupVersion.String(), Kind: "ReplicationController"},
		ObjectMeta: rs.ObjectMeta,
		Spec: corev1.ReplicationControllerSpec{
			Replicas:        rs.Spec.Replicas,
			MinReadySeconds: rs.Spec.MinReadySeconds,
			Template:        &rs.Spec.Template,
		},
		Status: corev1.ReplicationControllerStatus{
			Replicas:             rs.Status.Replicas,
			FullyLabeledReplicas: rs.Status.FullyLabeledReplicas,
			ReadyReplicas:        rs.Status.ReadyReplicas,
			AvailableReplicas:    rs.Status.AvailableReplicas,
			ObservedGeneration:   rs.Status.ObservedGeneration,
		},
	}
	if rs.Spec.Selector != nil {
		rc.Spec.Selector = rs.Spec.Selector.MatchLabels
	}
	for _, c := range rs.Status.Conditions {
		rc.Status.Conditions = append(rc.Status.Conditions, corev1.ReplicationControllerCondition{
			Type: corev1.ReplicationControllerConditionType(c.Type), Status: c.Status,
			LastTransitionTime: c.LastTransitionTime, Reason: c.Reason, Message: c.Message,
		})
	}
	return rc
}
