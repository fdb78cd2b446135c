package apiserver

import (
	"context"
	"errors"
	"github.com/moorage/moorage/internal/pvmatch"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/moorage/moorage/internal/store"
)

// Admission that needs other objects than the one written, as upstream's
// admission plugins do it.

// Annotations that mark a StorageClass as the default one.
const (
	isDefaultClassAnnotation     = "storageclass.kubernetes.io/is-default-class"
	betaIsDefaultClassAnnotation = "storageclass.beta.kubernetes.io/is-default-class"
)

// Finalizers of upstream's StorageObjectInUseProtection, removed by the
// protection controllers (internal/controller/protection).
const (
	pvcProtectionFinalizer = "kubernetes.io/pvc-protection"
	pvProtectionFinalizer  = "kubernetes.io/pv-protection"
)

// admitCreate runs the admission plugins for a new object, after defaults
// and before validation. It returns the plugins' warnings.
func (s *Server) admitCreate(ctx context.Context, obj runtime.Object) ([]string, error) {
	switch o := obj.(type) {
	case *corev1.PersistentVolumeClaim:
		if err := s.defaultStorageClass(ctx, o); err != nil {
			return nil, err
		}
		o.Finalizers = withFinalizer(o.Finalizers, pvcProtectionFinalizer)
	case *corev1.PersistentVolume:
		o.Finalizers = withFinalizer(o.Finalizers, pvProtectionFinalizer)
	case *corev1.Pod:
		addDefaultTolerations(o)
		if err := s.admitServiceAccount(ctx, o); err != nil {
			return nil, err
		}
		return s.admitPodSecurity(ctx, o, nil)
	case *corev1.Namespace:
		return s.admitNamespaceSecurity(ctx, o, nil)
	default:
		return s.podTemplateSecurityWarnings(ctx, obj), nil
	}
	return nil, nil
}

// admitUpdate runs the admission plugins for an update of a main resource
// (no subresource) after validation, as upstream runs validating admission
// after the strategy's checks: old is the stored object.
func (s *Server) admitUpdate(ctx context.Context, obj, old runtime.Object) ([]string, error) {
	switch o := obj.(type) {
	case *corev1.PersistentVolumeClaim:
		return nil, s.admitClaimResize(ctx, o, old.(*corev1.PersistentVolumeClaim))
	case *corev1.Pod:
		return s.admitPodSecurity(ctx, o, old.(*corev1.Pod))
	case *corev1.Namespace:
		return s.admitNamespaceSecurity(ctx, o, old.(*corev1.Namespace))
	default:
		return s.podTemplateSecurityWarnings(ctx, obj), nil
	}
}

// defaultTolerationSeconds is how long a pod stays on a node that is not
// ready or unreachable before it is evicted (upstream's DefaultTolerationSeconds).
const defaultTolerationSeconds = 300

// addDefaultTolerations is upstream's DefaultTolerationSeconds admission on
// pod create: a pod that does not already tolerate the not-ready and
// unreachable NoExecute taints gets tolerations for 300 s each.
func addDefaultTolerations(pod *corev1.Pod) {
	tolerates := func(key string) bool {
		for _, t := range pod.Spec.Tolerations {
			if (t.Key == key || t.Key == "") && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				return true
			}
		}
		return false
	}
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		if !tolerates(key) {
			seconds := int64(defaultTolerationSeconds)
			pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{
				Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &seconds,
			})
		}
	}
}

// withFinalizer is upstream's StorageObjectInUseProtection on create: the
// finalizer is appended unless present. Upstream does not add it on update;
// the protection controllers add it back to objects that lack it.
func withFinalizer(finalizers []string, f string) []string {
	if slices.Contains(finalizers, f) {
		return finalizers
	}
	return append(finalizers, f)
}

// admitClaimResize is upstream's PersistentVolumeClaimResize: a claim's
// storage request may grow only if the claim is bound and its class, the
// same before and after, exists and allows volume expansion. Shrinking is
// validation's business.
func (s *Server) admitClaimResize(ctx context.Context, pvc, old *corev1.PersistentVolumeClaim) error {
	oldSize := old.Spec.Resources.Requests[corev1.ResourceStorage]
	newSize := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if newSize.Cmp(oldSize) <= 0 {
		return nil
	}
	forbidden := func(msg string) error {
		return apierrors.NewForbidden(corev1.Resource("persistentvolumeclaims"), pvc.Name, errors.New(msg))
	}
	if old.Status.Phase != corev1.ClaimBound {
		return forbidden("Only bound persistent volume claims can be expanded")
	}
	allowed, err := s.classAllowsExpansion(ctx, pvmatch.ClaimClass(pvc), pvmatch.ClaimClass(old))
	if err != nil {
		return err
	}
	if !allowed {
		return forbidden("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize")
	}
	return nil
}

// classAllowsExpansion tells whether class, named the same before and after
// the update, exists with allowVolumeExpansion true.
func (s *Server) classAllowsExpansion(ctx context.Context, class, oldClass string) (bool, error) {
	if class == "" || oldClass == "" || class != oldClass {
		return false, nil
	}
	obj, _, err := s.objects.get(ctx, s.resourceByPlural("storageclasses"), "", class)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	allow := obj.(*storagev1.StorageClass).AllowVolumeExpansion
	return allow != nil && *allow, nil
}

// defaultStorageClass is upstream's DefaultStorageClass plugin: a claim that
// names no class (storageClassName unset, not "", and no beta annotation)
// gets the default class; with several defaults, the newest (then the first
// by name) wins.
func (s *Server) defaultStorageClass(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Spec.StorageClassName != nil {
		return nil
	}
	if _, ok := pvc.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		return nil
	}
	res := s.resourceByPlural("storageclasses")
	lr, err := s.objects.store.List(ctx, res.KeyPrefix(""), store.ListOptions{})
	if err != nil {
		return err
	}
	var defaults []*storagev1.StorageClass
	for _, kv := range lr.KVs {
		obj, err := s.objects.decode(res, kv)
		if err != nil {
			return err
		}
		sc := obj.(*storagev1.StorageClass)
		if sc.Annotations[isDefaultClassAnnotation] == "true" || sc.Annotations[betaIsDefaultClassAnnotation] == "true" {
			defaults = append(defaults, sc)
		}
	}
	if len(defaults) == 0 {
		return nil
	}
	sort.Slice(defaults, func(i, j int) bool {
		ti, tj := defaults[i].CreationTimestamp, defaults[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return defaults[i].Name < defaults[j].Name
	})
	name := defaults[0].Name
	pvc.Spec.StorageClassName = &name
	return nil
}
