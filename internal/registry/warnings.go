package registry

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Upstream's API warnings (the `Warning:` lines kubectl prints) for the
// storage kinds: deprecated annotations, reclaim policies and node labels.

// deprecatedNodeLabels are the node labels upstream warns about in volume
// node affinity: the version they were deprecated in and their replacement.
var deprecatedNodeLabels = map[string][2]string{
	"beta.kubernetes.io/arch":                  {"v1.14", "kubernetes.io/arch"},
	"beta.kubernetes.io/os":                    {"v1.14", "kubernetes.io/os"},
	"failure-domain.beta.kubernetes.io/region": {"v1.17", "topology.kubernetes.io/region"},
	"failure-domain.beta.kubernetes.io/zone":   {"v1.17", "topology.kubernetes.io/zone"},
	"beta.kubernetes.io/instance-type":         {"v1.17", "node.kubernetes.io/instance-type"},
}

func persistentVolumeWarnings(obj, _ runtime.Object) []string {
	pv := obj.(*corev1.PersistentVolume)
	var out []string
	if _, ok := pv.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		out = append(out, storageClassAnnotationWarning(field.NewPath("metadata", "annotations")))
	}
	if pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRecycle {
		out = append(out, "spec.persistentVolumeReclaimPolicy: The Recycle reclaim policy is deprecated. Instead, the recommended approach is to use dynamic provisioning.")
	}
	if na := pv.Spec.NodeAffinity; na != nil && na.Required != nil {
		terms := field.NewPath("spec", "nodeAffinity", "required", "nodeSelectorTerms")
		for i, term := range na.Required.NodeSelectorTerms {
			for j, expr := range term.MatchExpressions {
				if d, ok := deprecatedNodeLabels[expr.Key]; ok {
					out = append(out, fmt.Sprintf("%s: %s is deprecated since %s; use %q instead",
						terms.Index(i).Child("matchExpressions").Index(j).Child("key"), expr.Key, d[0], d[1]))
				}
			}
		}
	}
	return out
}

func claimWarnings(claim *corev1.PersistentVolumeClaim, path *field.Path) []string {
	var out []string
	if _, ok := claim.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		out = append(out, storageClassAnnotationWarning(path.Child("metadata", "annotations")))
	}
	for name, list := range map[string]corev1.ResourceList{"requests": claim.Spec.Resources.Requests, "limits": claim.Spec.Resources.Limits} {
		if q, ok := list[corev1.ResourceStorage]; ok && q.MilliValue()%1000 != 0 {
			out = append(out, fmt.Sprintf("%s: fractional byte value %q is invalid, must be an integer",
				path.Child("spec", "resources", name).Key(string(corev1.ResourceStorage)), q.String()))
		}
	}
	return out
}

func persistentVolumeClaimWarnings(obj, _ runtime.Object) []string {
	return claimWarnings(obj.(*corev1.PersistentVolumeClaim), nil)
}

func statefulSetWarnings(obj, _ runtime.Object) []string {
	var out []string
	for i := range obj.(*appsv1.StatefulSet).Spec.VolumeClaimTemplates {
		t := &obj.(*appsv1.StatefulSet).Spec.VolumeClaimTemplates[i]
		out = append(out, claimWarnings(t, field.NewPath("spec", "volumeClaimTemplates").Index(i))...)
	}
	return out
}

func storageClassAnnotationWarning(annotations *field.Path) string {
	return fmt.Sprintf("%s: deprecated since v1.8; use %q attribute instead", annotations.Key(corev1.BetaStorageClassAnnotation), "storageClassName")
}
