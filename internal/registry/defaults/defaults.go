// Package defaults applies Kubernetes' (v1.33) defaulting to the versioned
// k8s.io/api types that moorage serves, so that scheme.Default(obj) fills in
// exactly the fields an upstream kube-apiserver would.
//
// Only true defaulting lives here. Things upstream does in registry
// strategies (namespace finalizers, pod status phase/QoS, service IP and
// IP-family allocation, generation bumps, dropping feature-gated fields) are
// left to the registry.
package defaults

import (
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// RegisterDefaults registers a defaulting function for every served type and
// its list type with scheme.AddTypeDefaultingFunc.
func RegisterDefaults(scheme *runtime.Scheme) {
	// core/v1
	reg(scheme, namespace)
	reg(scheme, func(l *corev1.NamespaceList) { each(l.Items, namespace) })
	reg(scheme, node)
	reg(scheme, func(l *corev1.NodeList) { each(l.Items, node) })
	reg(scheme, pod)
	reg(scheme, func(l *corev1.PodList) { each(l.Items, pod) })
	reg(scheme, persistentVolume)
	reg(scheme, func(l *corev1.PersistentVolumeList) { each(l.Items, persistentVolume) })
	reg(scheme, persistentVolumeClaim)
	reg(scheme, func(l *corev1.PersistentVolumeClaimList) { each(l.Items, persistentVolumeClaim) })
	reg(scheme, configMap)
	reg(scheme, func(l *corev1.ConfigMapList) { each(l.Items, configMap) })
	reg(scheme, secret)
	reg(scheme, func(l *corev1.SecretList) { each(l.Items, secret) })
	reg(scheme, service)
	reg(scheme, func(l *corev1.ServiceList) { each(l.Items, service) })
	reg(scheme, endpoints)
	reg(scheme, func(l *corev1.EndpointsList) { each(l.Items, endpoints) })
	reg(scheme, replicationController)
	reg(scheme, func(l *corev1.ReplicationControllerList) { each(l.Items, replicationController) })
	reg(scheme, func(*corev1.Event) {})
	reg(scheme, func(*corev1.EventList) {})
	reg(scheme, func(*corev1.ServiceAccount) {})
	reg(scheme, func(*corev1.ServiceAccountList) {})

	// storage.k8s.io/v1
	reg(scheme, storageClass)
	reg(scheme, func(l *storagev1.StorageClassList) { each(l.Items, storageClass) })
	reg(scheme, csiDriver)
	reg(scheme, func(l *storagev1.CSIDriverList) { each(l.Items, csiDriver) })
	reg(scheme, func(*storagev1.CSINode) {})
	reg(scheme, func(*storagev1.CSINodeList) {})
	reg(scheme, volumeAttachment)
	reg(scheme, func(l *storagev1.VolumeAttachmentList) { each(l.Items, volumeAttachment) })

	// apps/v1
	reg(scheme, statefulSet)
	reg(scheme, func(l *appsv1.StatefulSetList) { each(l.Items, statefulSet) })
	reg(scheme, daemonSet)
	reg(scheme, func(l *appsv1.DaemonSetList) { each(l.Items, daemonSet) })
	reg(scheme, replicaSet)
	reg(scheme, func(l *appsv1.ReplicaSetList) { each(l.Items, replicaSet) })
	reg(scheme, deployment)
	reg(scheme, func(l *appsv1.DeploymentList) { each(l.Items, deployment) })
	reg(scheme, func(*appsv1.ControllerRevision) {})
	reg(scheme, func(*appsv1.ControllerRevisionList) {})

	// coordination.k8s.io/v1, events.k8s.io/v1: nothing is defaulted upstream.
	reg(scheme, func(*coordinationv1.Lease) {})
	reg(scheme, func(*coordinationv1.LeaseList) {})
	reg(scheme, func(*eventsv1.Event) {})
	reg(scheme, func(*eventsv1.EventList) {})

	// discovery.k8s.io/v1
	reg(scheme, endpointSlice)
	reg(scheme, func(l *discoveryv1.EndpointSliceList) { each(l.Items, endpointSlice) })
}

// reg registers fn as the defaulting function of the type fn takes.
func reg[T any, PT interface {
	*T
	runtime.Object
}](scheme *runtime.Scheme, fn func(PT)) {
	scheme.AddTypeDefaultingFunc(PT(new(T)), func(obj interface{}) { fn(obj.(PT)) })
}

// each applies fn to every element of items in place.
func each[T any](items []T, fn func(*T)) {
	for i := range items {
		fn(&items[i])
	}
}

func ptrTo[T any](v T) *T { return &v }
