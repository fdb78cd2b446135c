// Package validation reproduces Kubernetes' (v1.33) API validation for the
// versioned k8s.io/api types that moorage serves: the same checks, field
// paths and messages as kube-apiserver's registry strategies, so that kubectl
// prints the errors users know.
//
// Objects are expected to be defaulted (see package defaults) before they are
// validated, as upstream does.
package validation

import (
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	storagev1 "k8s.io/api/storage/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateCreate returns upstream's errors for a new object (after defaulting).
// Unknown types return nil.
func ValidateCreate(obj runtime.Object) field.ErrorList {
	var errs field.ErrorList
	switch o := obj.(type) {
	case *corev1.Namespace:
		errs = validateNamespace(o)
	case *corev1.Node:
		errs = validateNode(o)
	case *corev1.Pod:
		errs = validatePodCreate(o)
	case *corev1.PersistentVolume:
		errs = validatePersistentVolume(o)
	case *corev1.PersistentVolumeClaim:
		errs = validatePersistentVolumeClaim(o)
	case *corev1.ConfigMap:
		errs = validateConfigMap(o)
	case *corev1.Secret:
		errs = validateSecret(o)
	case *corev1.Service:
		errs = validateService(o)
	case *corev1.Endpoints:
		errs = validateEndpoints(o)
	case *corev1.Event:
		errs = validateCoreEvent(o)
	case *corev1.ServiceAccount:
		errs = validateObjectMeta(&o.ObjectMeta, true, apimachineryvalidation.ValidateServiceAccountName, metaPath)
	case *corev1.ReplicationController:
		errs = validateReplicationController(o)
	case *storagev1.StorageClass:
		errs = validateStorageClass(o)
	case *storagev1.CSIDriver:
		errs = validateCSIDriver(o)
	case *storagev1.CSINode:
		errs = validateCSINode(o)
	case *storagev1.VolumeAttachment:
		errs = validateVolumeAttachment(o)
	case *appsv1.StatefulSet:
		errs = validateStatefulSet(o)
	case *appsv1.DaemonSet:
		errs = validateDaemonSet(o)
	case *appsv1.ReplicaSet:
		errs = validateReplicaSet(o)
	case *appsv1.Deployment:
		errs = validateDeployment(o)
	case *appsv1.ControllerRevision:
		errs = validateControllerRevision(o)
	case *coordinationv1.Lease:
		errs = validateLease(o)
	case *eventsv1.Event:
		errs = validateEventsV1Event(o, nil)
	case *discoveryv1.EndpointSlice:
		errs = validateEndpointSlice(o, false)
	case *certificatesv1.CertificateSigningRequest:
		errs = validateCSRCreate(o)
	default:
		return nil
	}
	if len(errs) > 0 {
		return errs
	}
	// The generic registry checks the common metadata rules after the
	// strategy's own validation has passed.
	return commonMeta(obj)
}

// ValidateUpdate returns upstream's errors for replacing old with obj through
// the main resource (immutable fields etc.). Unknown types return nil.
func ValidateUpdate(obj, old runtime.Object) field.ErrorList {
	errs, ok := validateUpdate(obj, old)
	if !ok {
		return nil
	}
	return append(commonMetaUpdate(obj, old), errs...)
}

// ValidateStatusUpdate returns upstream's errors for a write through the
// /status subresource. Unknown types return nil.
func ValidateStatusUpdate(obj, old runtime.Object) field.ErrorList {
	errs, ok := validateStatusUpdate(obj, old)
	if !ok {
		return nil
	}
	return append(commonMetaUpdate(obj, old), errs...)
}

var metaPath = field.NewPath("metadata")

// namespaced reports whether obj is one of the namespaced kinds served.
func namespaced(obj runtime.Object) bool {
	switch obj.(type) {
	case *corev1.Namespace, *corev1.Node, *corev1.PersistentVolume, *certificatesv1.CertificateSigningRequest,
		*storagev1.StorageClass, *storagev1.CSIDriver, *storagev1.CSINode, *storagev1.VolumeAttachment:
		return false
	}
	return true
}

func commonMeta(obj runtime.Object) field.ErrorList {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	return apimachineryvalidation.ValidateObjectMetaAccessor(m, namespaced(obj), path.ValidatePathSegmentName, metaPath)
}

func commonMetaUpdate(obj, old runtime.Object) field.ErrorList {
	m, ok1 := obj.(metav1.Object)
	o, ok2 := old.(metav1.Object)
	if !ok1 || !ok2 {
		return nil
	}
	errs := apimachineryvalidation.ValidateObjectMetaAccessor(m, namespaced(obj), path.ValidatePathSegmentName, metaPath)
	return append(errs, apimachineryvalidation.ValidateObjectMetaAccessorUpdate(m, o, metaPath)...)
}

// validateObjectMeta is core's ObjectMeta validation: apimachinery's checks
// plus the rule on legacy (unqualified) finalizer names.
func validateObjectMeta(meta *metav1.ObjectMeta, requiresNamespace bool, nameFn apimachineryvalidation.ValidateNameFunc, fldPath *field.Path) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(meta, requiresNamespace, nameFn, fldPath)
	for i, f := range meta.Finalizers {
		errs = append(errs, validateKubeFinalizerName(f, fldPath.Child("finalizers").Index(i))...)
	}
	return errs
}

func validateObjectMetaUpdate(newMeta, oldMeta *metav1.ObjectMeta, fldPath *field.Path) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMetaUpdate(newMeta, oldMeta, fldPath)
	for i, f := range newMeta.Finalizers {
		errs = append(errs, validateKubeFinalizerName(f, fldPath.Child("finalizers").Index(i))...)
	}
	return errs
}

var standardFinalizers = map[string]bool{
	string(corev1.FinalizerKubernetes): true,
	metav1.FinalizerOrphanDependents:   true,
	metav1.FinalizerDeleteDependents:   true,
}

func validateKubeFinalizerName(name string, fldPath *field.Path) field.ErrorList {
	if !strings.Contains(name, "/") && !standardFinalizers[name] {
		return field.ErrorList{field.Invalid(fldPath, name, "name is neither a standard finalizer name nor is it fully qualified")}
	}
	return nil
}

// validateUpdate dispatches main-resource updates; ok is false for unknown
// types or when old is not of obj's type.
func validateUpdate(obj, old runtime.Object) (errs field.ErrorList, ok bool) {
	if reflect.TypeOf(obj) != reflect.TypeOf(old) {
		return nil, false
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		return validateNamespaceUpdate(o, old.(*corev1.Namespace)), true
	case *corev1.Node:
		return validateNodeUpdate(o, old.(*corev1.Node)), true
	case *corev1.Pod:
		return validatePodUpdate(o, old.(*corev1.Pod)), true
	case *corev1.PersistentVolume:
		return validatePersistentVolumeUpdate(o, old.(*corev1.PersistentVolume)), true
	case *corev1.PersistentVolumeClaim:
		return validatePersistentVolumeClaimUpdate(o, old.(*corev1.PersistentVolumeClaim)), true
	case *corev1.ConfigMap:
		return validateConfigMapUpdate(o, old.(*corev1.ConfigMap)), true
	case *corev1.Secret:
		return validateSecretUpdate(o, old.(*corev1.Secret)), true
	case *corev1.Service:
		return validateServiceUpdate(o, old.(*corev1.Service)), true
	case *corev1.Endpoints:
		e := old.(*corev1.Endpoints)
		return append(validateObjectMetaUpdate(&o.ObjectMeta, &e.ObjectMeta, metaPath), validateEndpoints(o)...), true
	case *corev1.Event:
		return validateCoreEvent(o), true
	case *corev1.ServiceAccount:
		sa := old.(*corev1.ServiceAccount)
		errs := validateObjectMetaUpdate(&o.ObjectMeta, &sa.ObjectMeta, metaPath)
		return append(errs, validateObjectMeta(&o.ObjectMeta, true, apimachineryvalidation.ValidateServiceAccountName, metaPath)...), true
	case *corev1.ReplicationController:
		return validateReplicationControllerUpdate(o, old.(*corev1.ReplicationController)), true
	case *storagev1.StorageClass:
		return validateStorageClassUpdate(o, old.(*storagev1.StorageClass)), true
	case *storagev1.CSIDriver:
		return validateCSIDriverUpdate(o, old.(*storagev1.CSIDriver)), true
	case *storagev1.CSINode:
		return validateCSINodeUpdate(o, old.(*storagev1.CSINode)), true
	case *storagev1.VolumeAttachment:
		return validateVolumeAttachmentUpdate(o, old.(*storagev1.VolumeAttachment)), true
	case *appsv1.StatefulSet:
		return validateStatefulSetUpdate(o, old.(*appsv1.StatefulSet)), true
	case *appsv1.DaemonSet:
		return validateDaemonSetUpdate(o, old.(*appsv1.DaemonSet)), true
	case *appsv1.ReplicaSet:
		return validateReplicaSetUpdate(o, old.(*appsv1.ReplicaSet)), true
	case *appsv1.Deployment:
		return validateDeploymentUpdate(o, old.(*appsv1.Deployment)), true
	case *appsv1.ControllerRevision:
		return validateControllerRevisionUpdate(o, old.(*appsv1.ControllerRevision)), true
	case *coordinationv1.Lease:
		l := old.(*coordinationv1.Lease)
		errs := apimachineryvalidation.ValidateObjectMetaUpdate(&o.ObjectMeta, &l.ObjectMeta, metaPath)
		return append(errs, validateLeaseSpec(&o.Spec, field.NewPath("spec"))...), true
	case *eventsv1.Event:
		return validateEventsV1Event(o, old.(*eventsv1.Event)), true
	case *discoveryv1.EndpointSlice:
		return validateEndpointSliceUpdate(o, old.(*discoveryv1.EndpointSlice)), true
	case *certificatesv1.CertificateSigningRequest:
		was := old.(*certificatesv1.CertificateSigningRequest)
		return validateCSRUpdate(o, was, csrWritesFor(o, was)), true
	}
	return nil, false
}

// validateStatusUpdate dispatches /status writes. Kinds without a status
// subresource upstream report ok=false.
func validateStatusUpdate(obj, old runtime.Object) (errs field.ErrorList, ok bool) {
	if reflect.TypeOf(obj) != reflect.TypeOf(old) {
		return nil, false
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		return validateNamespaceStatusUpdate(o, old.(*corev1.Namespace)), true
	case *corev1.Node:
		return validateNodeUpdate(o, old.(*corev1.Node)), true
	case *corev1.Pod:
		return validatePodStatusUpdate(o, old.(*corev1.Pod)), true
	case *corev1.PersistentVolume:
		return validatePersistentVolumeStatusUpdate(o, old.(*corev1.PersistentVolume)), true
	case *corev1.PersistentVolumeClaim:
		return validatePersistentVolumeClaimStatusUpdate(o, old.(*corev1.PersistentVolumeClaim)), true
	case *corev1.Service:
		return validateServiceStatusUpdate(o, old.(*corev1.Service)), true
	case *corev1.ReplicationController:
		return validateReplicationControllerStatusUpdate(o, old.(*corev1.ReplicationController)), true
	case *storagev1.VolumeAttachment:
		return validateVolumeAttachmentStatusUpdate(o, old.(*storagev1.VolumeAttachment)), true
	case *appsv1.StatefulSet:
		return validateStatefulSetStatusUpdate(o, old.(*appsv1.StatefulSet)), true
	case *appsv1.DaemonSet:
		return validateDaemonSetStatusUpdate(o, old.(*appsv1.DaemonSet)), true
	case *appsv1.ReplicaSet:
		return validateReplicaSetStatusUpdate(o, old.(*appsv1.ReplicaSet)), true
	case *appsv1.Deployment:
		return validateDeploymentStatusUpdate(o, old.(*appsv1.Deployment)), true
	case *certificatesv1.CertificateSigningRequest:
		was := old.(*certificatesv1.CertificateSigningRequest)
		w := csrWritesFor(o, was)
		w.certificate = true
		return validateCSRUpdate(o, was, w), true
	}
	return nil, false
}
