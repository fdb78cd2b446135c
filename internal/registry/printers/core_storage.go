package printers

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// corev1.BetaStorageClassAnnotation, when present, names a volume's or claim's class
// and takes precedence over spec.storageClassName.

func persistentVolumePrinter() Printer {
	spec := corev1.PersistentVolumeSpec{}.SwaggerDoc()
	status := corev1.PersistentVolumeStatus{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Capacity", "string", spec["capacity"]),
			col("Access Modes", "string", spec["accessModes"]),
			col("Reclaim Policy", "string", spec["persistentVolumeReclaimPolicy"]),
			col("Status", "string", status["phase"]),
			col("Claim", "string", spec["claimRef"]),
			col("StorageClass", "string", "StorageClass of the pv"),
			col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
			col("Reason", "string", status["reason"]),
			ageColumn(),
			wideCol("VolumeMode", "string", spec["volumeMode"]),
		},
		Row: rowOf(persistentVolumeRow),
	}
}

func persistentVolumeRow(pv *corev1.PersistentVolume, now time.Time) ([]interface{}, error) {
	claim := ""
	if ref := pv.Spec.ClaimRef; ref != nil {
		claim = ref.Namespace + "/" + ref.Name
	}
	policy := pv.Spec.PersistentVolumeReclaimPolicy
	if policy == "" {
		policy = corev1.PersistentVolumeReclaimRetain // the API default
	}
	phase := string(pv.Status.Phase)
	if phase == "" {
		phase = string(corev1.VolumePending) // the API default
	}
	if pv.DeletionTimestamp != nil {
		phase = "Terminating"
	}
	class := pv.Spec.StorageClassName
	if beta, ok := pv.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		class = beta
	}
	capacity := pv.Spec.Capacity[corev1.ResourceStorage]
	return []interface{}{
		pv.Name, capacity.String(), accessModes(pv.Spec.AccessModes), string(policy),
		phase, claim, class, volumeAttributesClass(pv.Spec.VolumeAttributesClassName),
		pv.Status.Reason, since(pv.CreationTimestamp, now), volumeMode(pv.Spec.VolumeMode),
	}, nil
}

func persistentVolumeClaimPrinter() Printer {
	spec := corev1.PersistentVolumeClaimSpec{}.SwaggerDoc()
	status := corev1.PersistentVolumeClaimStatus{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			col("Status", "string", status["phase"]),
			col("Volume", "string", spec["volumeName"]),
			col("Capacity", "string", status["capacity"]),
			col("Access Modes", "string", status["accessModes"]),
			col("StorageClass", "string", "StorageClass of the pvc"),
			col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
			ageColumn(),
			wideCol("VolumeMode", "string", spec["volumeMode"]),
		},
		Row: rowOf(persistentVolumeClaimRow),
	}
}

func persistentVolumeClaimRow(pvc *corev1.PersistentVolumeClaim, now time.Time) ([]interface{}, error) {
	phase := string(pvc.Status.Phase)
	if phase == "" {
		phase = string(corev1.ClaimPending) // the API default
	}
	if pvc.DeletionTimestamp != nil {
		phase = "Terminating"
	}
	// Capacity and access modes are those of the bound volume, shown only
	// once the claim names one.
	capacity, modes := "", ""
	if pvc.Spec.VolumeName != "" {
		q := pvc.Status.Capacity[corev1.ResourceStorage]
		capacity = q.String()
		modes = accessModes(pvc.Status.AccessModes)
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	if beta, ok := pvc.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		class = beta
	}
	return []interface{}{
		pvc.Name, phase, pvc.Spec.VolumeName, capacity, modes, class,
		volumeAttributesClass(pvc.Spec.VolumeAttributesClassName),
		since(pvc.CreationTimestamp, now), volumeMode(pvc.Spec.VolumeMode),
	}, nil
}

// accessModes abbreviates access modes in upstream's fixed order, each once.
func accessModes(modes []corev1.PersistentVolumeAccessMode) string {
	has := map[corev1.PersistentVolumeAccessMode]bool{}
	for _, m := range modes {
		has[m] = true
	}
	var out []string
	for _, m := range []struct {
		mode  corev1.PersistentVolumeAccessMode
		short string
	}{
		{corev1.ReadWriteOnce, "RWO"},
		{corev1.ReadOnlyMany, "ROX"},
		{corev1.ReadWriteMany, "RWX"},
		{corev1.ReadWriteOncePod, "RWOP"},
	} {
		if has[m.mode] {
			out = append(out, m.short)
		}
	}
	return strings.Join(out, ",")
}

func volumeAttributesClass(name *string) string {
	if name == nil {
		return "<unset>"
	}
	return *name
}

// volumeMode prints the volume mode; the API defaults an unset mode to
// Filesystem for both volumes and claims.
func volumeMode(m *corev1.PersistentVolumeMode) string {
	if m == nil {
		return string(corev1.PersistentVolumeFilesystem)
	}
	return string(*m)
}
