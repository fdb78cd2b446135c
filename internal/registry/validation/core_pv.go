package validation

import (
	"path"
	"reflect"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// PersistentVolume and PersistentVolumeClaim validation. Feature state is
// that of a default v1.33 cluster: VolumeAttributesClass off (beta, default
// off), RecoverVolumeExpansionFailure on.

const mountOptionAnnotation = "volume.beta.kubernetes.io/mount-options"

var (
	accessModes     = []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany, corev1.ReadWriteMany, corev1.ReadWriteOnce, corev1.ReadWriteOncePod}
	reclaimModes    = []corev1.PersistentVolumeReclaimPolicy{corev1.PersistentVolumeReclaimDelete, corev1.PersistentVolumeReclaimRecycle, corev1.PersistentVolumeReclaimRetain}
	volumeModes     = []corev1.PersistentVolumeMode{corev1.PersistentVolumeBlock, corev1.PersistentVolumeFilesystem}
	nameIsSubdomain = apimachineryvalidation.NameIsDNSSubdomain
)

func validateAccessModes(modes []corev1.PersistentVolumeAccessMode, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	rwop, other := false, false
	for _, m := range modes {
		if !containsStr(accessModes, m) {
			errs = append(errs, field.NotSupported(fldPath, m, sortedStrings(accessModes)))
		}
		if m == corev1.ReadWriteOncePod {
			rwop = true
		} else if containsStr(accessModes, m) {
			other = true
		}
	}
	if rwop && other {
		errs = append(errs, field.Forbidden(fldPath, "may not use ReadWriteOncePod with other access modes"))
	}
	return errs
}

func validateBasicResource(q resource.Quantity, fldPath *field.Path) field.ErrorList {
	if q.Value() < 0 {
		return field.ErrorList{field.Invalid(fldPath, q.Value(), "must be a valid resource quantity")}
	}
	return nil
}

func validatePositiveQuantity(q resource.Quantity, fldPath *field.Path) field.ErrorList {
	if q.Cmp(resource.Quantity{}) <= 0 {
		return field.ErrorList{field.Invalid(fldPath, q.String(), "must be greater than zero")}
	}
	return nil
}

func validateNonnegativeQuantity(q resource.Quantity, fldPath *field.Path) field.ErrorList {
	if q.Cmp(resource.Quantity{}) < 0 {
		return field.ErrorList{field.Invalid(fldPath, q.String(), apimachineryvalidation.IsNegativeErrorMsg)}
	}
	return nil
}

// validatePersistentVolumeSpec validates a PV spec; inline is true for CSI
// inline specs (VolumeAttachment), which follow stricter rules.
func validatePersistentVolumeSpec(spec *corev1.PersistentVolumeSpec, pvName string, inline, allowInvalidAffinityValues bool, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	inlineForbidden := "may not be specified in the context of inline volumes"
	if inline {
		if spec.ClaimRef != nil {
			errs = append(errs, field.Forbidden(fldPath.Child("claimRef"), inlineForbidden))
		}
		if len(spec.Capacity) != 0 {
			errs = append(errs, field.Forbidden(fldPath.Child("capacity"), inlineForbidden))
		}
		if spec.CSI == nil {
			errs = append(errs, field.Required(fldPath.Child("csi"), "has to be specified in the context of inline volumes"))
		}
	}
	if len(spec.AccessModes) == 0 {
		errs = append(errs, field.Required(fldPath.Child("accessModes"), ""))
	}
	errs = append(errs, validateAccessModes(spec.AccessModes, fldPath.Child("accessModes"))...)
	if !inline {
		capPath := fldPath.Child("capacity")
		if len(spec.Capacity) == 0 {
			errs = append(errs, field.Required(capPath, ""))
		}
		if _, ok := spec.Capacity[corev1.ResourceStorage]; !ok || len(spec.Capacity) > 1 {
			errs = append(errs, field.NotSupported(capPath, spec.Capacity, []corev1.ResourceName{corev1.ResourceStorage}))
		}
		for _, r := range sortedKeys(spec.Capacity) {
			q := spec.Capacity[r]
			errs = append(errs, validateBasicResource(q, capPath.Key(string(r)))...)
			errs = append(errs, validatePositiveQuantity(q, capPath.Key(string(r)))...)
		}
	}
	if p := spec.PersistentVolumeReclaimPolicy; p != "" {
		if inline {
			if p != corev1.PersistentVolumeReclaimRetain {
				errs = append(errs, field.Forbidden(fldPath.Child("persistentVolumeReclaimPolicy"), "may only be Retain in the context of inline volumes"))
			}
		} else if !containsStr(reclaimModes, p) {
			errs = append(errs, field.NotSupported(fldPath.Child("persistentVolumeReclaimPolicy"), p, sortedStrings(reclaimModes)))
		}
	}
	affinitySet := false
	if spec.NodeAffinity != nil {
		if inline {
			errs = append(errs, field.Forbidden(fldPath.Child("nodeAffinity"), inlineForbidden))
		} else {
			affinitySet = true
			if spec.NodeAffinity.Required != nil {
				errs = append(errs, validateNodeSelector(spec.NodeAffinity.Required, allowInvalidAffinityValues, fldPath.Child("nodeAffinity", "required"))...)
			} else {
				errs = append(errs, field.Required(fldPath.Child("nodeAffinity", "required"), "must specify required node constraints"))
			}
		}
	}
	errs = append(errs, validatePVSource(&spec.PersistentVolumeSource, pvName, affinitySet, fldPath)...)
	if spec.HostPath != nil && path.Clean(spec.HostPath.Path) == "/" && spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRecycle {
		errs = append(errs, field.Forbidden(fldPath.Child("persistentVolumeReclaimPolicy"), "may not be 'recycle' for a hostPath mount of '/'"))
	}
	if spec.StorageClassName != "" {
		if inline {
			errs = append(errs, field.Forbidden(fldPath.Child("storageClassName"), inlineForbidden))
		} else {
			errs = append(errs, nameErrs(nameIsSubdomain, spec.StorageClassName, fldPath.Child("storageClassName"))...)
		}
	}
	if spec.VolumeMode != nil {
		if inline {
			if *spec.VolumeMode != corev1.PersistentVolumeFilesystem {
				errs = append(errs, field.Forbidden(fldPath.Child("volumeMode"), "may not specify volumeMode other than Filesystem in the context of inline volumes"))
			}
		} else if !containsStr(volumeModes, *spec.VolumeMode) {
			errs = append(errs, field.NotSupported(fldPath.Child("volumeMode"), *spec.VolumeMode, sortedStrings(volumeModes)))
		}
	}
	return errs
}

func validatePVSource(s *corev1.PersistentVolumeSource, pvName string, affinitySet bool, fldPath *field.Path) field.ErrorList {
	return oneSource(fldPath, []sourceCheck{
		sc(s.HostPath != nil, "hostPath", func() field.ErrorList { return validateHostPath(s.HostPath, fldPath.Child("hostPath")) }),
		sc(s.GCEPersistentDisk != nil, "gcePersistentDisk", func() field.ErrorList {
			return validatePartitioned(s.GCEPersistentDisk.PDName, "pdName", s.GCEPersistentDisk.Partition, fldPath.Child("persistentDisk"))
		}),
		sc(s.AWSElasticBlockStore != nil, "awsElasticBlockStore", func() field.ErrorList {
			return validatePartitioned(s.AWSElasticBlockStore.VolumeID, "volumeID", s.AWSElasticBlockStore.Partition, fldPath.Child("awsElasticBlockStore"))
		}),
		sc(s.Glusterfs != nil, "glusterfs", func() field.ErrorList {
			return validateGlusterfs(s.Glusterfs.EndpointsName, s.Glusterfs.Path, s.Glusterfs.EndpointsNamespace, fldPath.Child("glusterfs"))
		}),
		sc(s.Flocker != nil, "flocker", func() field.ErrorList { return validateFlocker(s.Flocker, fldPath.Child("flocker")) }),
		sc(s.NFS != nil, "nfs", func() field.ErrorList { return validateNFS(s.NFS, fldPath.Child("nfs")) }),
		sc(s.RBD != nil, "rbd", func() field.ErrorList { return validateRBD(s.RBD.CephMonitors, s.RBD.RBDImage, fldPath.Child("rbd")) }),
		sc(s.Quobyte != nil, "quobyte", func() field.ErrorList { return validateQuobyte(s.Quobyte, fldPath.Child("quobyte")) }),
		sc(s.CephFS != nil, "cephFS", func() field.ErrorList { return validateMonitors(s.CephFS.Monitors, fldPath.Child("cephfs")) }),
		sc(s.ISCSI != nil, "iscsi", func() field.ErrorList {
			i := s.ISCSI
			return validateISCSI(i.TargetPortal, i.IQN, i.Lun, i.DiscoveryCHAPAuth || i.SessionCHAPAuth, i.SecretRef != nil, i.SecretRef, i.InitiatorName, pvName, fldPath.Child("iscsi"))
		}),
		sc(s.Cinder != nil, "cinder", func() field.ErrorList {
			errs := required(s.Cinder.VolumeID, fldPath.Child("cinder", "volumeID"))
			if r := s.Cinder.SecretRef; r != nil {
				errs = append(errs, required(r.Name, fldPath.Child("cinder", "secretRef", "name"))...)
				errs = append(errs, required(r.Namespace, fldPath.Child("cinder", "secretRef", "namespace"))...)
			}
			return errs
		}),
		sc(s.FC != nil, "fc", func() field.ErrorList { return validateFC(s.FC, fldPath.Child("fc")) }),
		// Upstream counts a flexVolume without the "more than 1 volume type" check.
		unchecked(s.FlexVolume != nil, func() field.ErrorList {
			return validateFlexOptions(s.FlexVolume.Driver, s.FlexVolume.Options, fldPath.Child("flexVolume"))
		}),
		sc(s.AzureFile != nil, "azureFile", func() field.ErrorList {
			p := fldPath.Child("azureFile")
			errs := required(s.AzureFile.SecretName, p.Child("secretName"))
			errs = append(errs, required(s.AzureFile.ShareName, p.Child("shareName"))...)
			if s.AzureFile.SecretNamespace != nil {
				errs = append(errs, required(*s.AzureFile.SecretNamespace, p.Child("secretNamespace"))...)
			}
			return errs
		}),
		sc(s.VsphereVolume != nil, "vsphereVolume", func() field.ErrorList {
			return required(s.VsphereVolume.VolumePath, fldPath.Child("vsphereVolume", "volumePath"))
		}),
		sc(s.PhotonPersistentDisk != nil, "photonPersistentDisk", func() field.ErrorList {
			return required(s.PhotonPersistentDisk.PdID, fldPath.Child("photonPersistentDisk", "pdID"))
		}),
		sc(s.PortworxVolume != nil, "portworxVolume", func() field.ErrorList {
			return required(s.PortworxVolume.VolumeID, fldPath.Child("portworxVolume", "volumeID"))
		}),
		sc(s.AzureDisk != nil, "azureDisk", func() field.ErrorList { return validateAzureDisk(s.AzureDisk, fldPath.Child("azureDisk")) }),
		sc(s.ScaleIO != nil, "scaleIO", func() field.ErrorList {
			return validateScaleIO(s.ScaleIO.Gateway, s.ScaleIO.System, s.ScaleIO.VolumeName, fldPath.Child("scaleIO"))
		}),
		sc(s.Local != nil, "local", func() field.ErrorList {
			var errs field.ErrorList
			if s.Local.Path == "" {
				errs = append(errs, field.Required(fldPath.Child("local", "path"), ""))
			} else {
				errs = append(errs, validatePathNoBacksteps(s.Local.Path, fldPath.Child("local", "path"))...)
			}
			if !affinitySet {
				errs = append(errs, field.Required(fldPath.Child("nodeAffinity"), "Local volume requires node affinity"))
			}
			return errs
		}),
		sc(s.StorageOS != nil, "storageos", func() field.ErrorList {
			var name, ns *string
			if r := s.StorageOS.SecretRef; r != nil {
				name, ns = &r.Name, &r.Namespace
			}
			return validateStorageOS(s.StorageOS.VolumeName, s.StorageOS.VolumeNamespace, name, ns, fldPath.Child("storageos"))
		}),
		sc(s.CSI != nil, "csi", func() field.ErrorList { return validateCSIPersistentVolumeSource(s.CSI, fldPath.Child("csi")) }),
	})
}

// checkMountOption is the plugin-specific rule on the legacy mount options
// annotation.
func checkMountOption(pv *corev1.PersistentVolume) field.ErrorList {
	s := pv.Spec.PersistentVolumeSource
	if s.GCEPersistentDisk != nil || s.AWSElasticBlockStore != nil || s.Glusterfs != nil || s.NFS != nil ||
		s.RBD != nil || s.Quobyte != nil || s.ISCSI != nil || s.Cinder != nil || s.CephFS != nil ||
		s.AzureFile != nil || s.VsphereVolume != nil || s.AzureDisk != nil || s.PhotonPersistentDisk != nil ||
		s.Flocker != nil || s.ScaleIO != nil || s.FC != nil || s.PortworxVolume != nil {
		return nil
	}
	if _, ok := pv.Annotations[mountOptionAnnotation]; ok {
		return field.ErrorList{field.Forbidden(metaPath.Child("annotations", mountOptionAnnotation), "may not specify mount options for this volume type")}
	}
	return nil
}

func validatePersistentVolume(pv *corev1.PersistentVolume) field.ErrorList {
	return validatePersistentVolumeWith(pv, false)
}

func validatePersistentVolumeWith(pv *corev1.PersistentVolume, allowInvalidAffinityValues bool) field.ErrorList {
	errs := validateObjectMeta(&pv.ObjectMeta, false, nameIsSubdomain, metaPath)
	errs = append(errs, validatePersistentVolumeSpec(&pv.Spec, pv.Name, false, allowInvalidAffinityValues, field.NewPath("spec"))...)
	return append(errs, checkMountOption(pv)...)
}

func validatePersistentVolumeUpdate(newPv, oldPv *corev1.PersistentVolume) field.ErrorList {
	allowInvalid := oldPv.Spec.NodeAffinity != nil && oldPv.Spec.NodeAffinity.Required != nil &&
		hasInvalidLabelValueInTerms(oldPv.Spec.NodeAffinity.Required.NodeSelectorTerms)
	errs := validatePersistentVolumeWith(newPv, allowInvalid)
	newSrc := newPv.Spec.PersistentVolumeSource
	// A controllerExpandSecretRef may be added to an existing CSI volume.
	if oldPv.Spec.CSI != nil && oldPv.Spec.CSI.ControllerExpandSecretRef == nil && newSrc.CSI != nil && newSrc.CSI.ControllerExpandSecretRef != nil {
		csi := *newSrc.CSI
		csi.ControllerExpandSecretRef = nil
		newSrc.CSI = &csi
	}
	if !apiequality.Semantic.DeepEqual(newSrc, oldPv.Spec.PersistentVolumeSource) {
		diff := cmp.Diff(oldPv.Spec.PersistentVolumeSource, newSrc)
		errs = append(errs, field.Forbidden(field.NewPath("spec", "persistentvolumesource"), "spec.persistentvolumesource is immutable after creation\n"+diff))
	}
	errs = append(errs, apimachineryvalidation.ValidateImmutableField(newPv.Spec.VolumeMode, oldPv.Spec.VolumeMode, field.NewPath("volumeMode"))...)
	if oldPv.Spec.NodeAffinity != nil && !nodeAffinityEqualModuloGA(newPv.Spec.NodeAffinity, oldPv.Spec.NodeAffinity) {
		errs = append(errs, field.Invalid(field.NewPath("nodeAffinity"), newPv.Spec.NodeAffinity, apimachineryvalidation.FieldImmutableErrorMsg+", except for updating from beta label to GA"))
	}
	if !reflect.DeepEqual(oldPv.Spec.VolumeAttributesClassName, newPv.Spec.VolumeAttributesClassName) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "volumeAttributesClassName"), "update is forbidden when the VolumeAttributesClass feature gate is disabled"))
	}
	return errs
}

func validatePersistentVolumeStatusUpdate(newPv, oldPv *corev1.PersistentVolume) field.ErrorList {
	errs := validateObjectMetaUpdate(&newPv.ObjectMeta, &oldPv.ObjectMeta, metaPath)
	if newPv.ResourceVersion == "" {
		errs = append(errs, field.Required(field.NewPath("resourceVersion"), ""))
	}
	return errs
}

// betaToGA maps deprecated topology labels to their GA names; a PV's node
// affinity may be rewritten from the former to the latter.
var betaToGA = map[string]string{
	corev1.LabelFailureDomainBetaZone:   corev1.LabelTopologyZone,
	corev1.LabelFailureDomainBetaRegion: corev1.LabelTopologyRegion,
	"beta.kubernetes.io/os":             corev1.LabelOSStable,
	"beta.kubernetes.io/arch":           corev1.LabelArchStable,
	corev1.LabelInstanceType:            corev1.LabelInstanceTypeStable,
}

func nodeAffinityEqualModuloGA(newA, oldA *corev1.VolumeNodeAffinity) bool {
	if newA == nil || oldA == nil || (newA.Required == nil) != (oldA.Required == nil) {
		return apiequality.Semantic.DeepEqual(newA, oldA)
	}
	if newA.Required == nil {
		return true
	}
	if len(newA.Required.NodeSelectorTerms) != len(oldA.Required.NodeSelectorTerms) {
		return false
	}
	for i, nt := range newA.Required.NodeSelectorTerms {
		ot := oldA.Required.NodeSelectorTerms[i]
		if !apiequality.Semantic.DeepEqual(nt.MatchFields, ot.MatchFields) || len(nt.MatchExpressions) != len(ot.MatchExpressions) {
			return false
		}
		for j, nr := range nt.MatchExpressions {
			or := ot.MatchExpressions[j]
			if or.Key != nr.Key && betaToGA[or.Key] == nr.Key {
				or.Key = nr.Key
			}
			if !apiequality.Semantic.DeepEqual(nr, or) {
				return false
			}
		}
	}
	return true
}

func validatePersistentVolumeClaimSpec(spec *corev1.PersistentVolumeClaimSpec, fldPath *field.Path, allowInvalidSelectorValues bool) field.ErrorList {
	var errs field.ErrorList
	if len(spec.AccessModes) == 0 {
		errs = append(errs, field.Required(fldPath.Child("accessModes"), "at least 1 access mode is required"))
	}
	if spec.Selector != nil {
		opts := metav1validation.LabelSelectorValidationOptions{AllowInvalidLabelValueInSelector: allowInvalidSelectorValues}
		errs = append(errs, metav1validation.ValidateLabelSelector(spec.Selector, opts, fldPath.Child("selector"))...)
	}
	errs = append(errs, validateAccessModes(spec.AccessModes, fldPath.Child("accessModes"))...)
	storagePath := fldPath.Child("resources").Key(string(corev1.ResourceStorage))
	if q, ok := spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		errs = append(errs, field.Required(storagePath, ""))
	} else if e := validatePositiveQuantity(q, storagePath); len(e) > 0 {
		errs = append(errs, e...)
	} else {
		errs = append(errs, validateResourceQuantityValue(corev1.ResourceStorage, q, storagePath)...)
	}
	if spec.StorageClassName != nil && *spec.StorageClassName != "" {
		errs = append(errs, nameErrs(nameIsSubdomain, *spec.StorageClassName, fldPath.Child("storageClassName"))...)
	}
	if spec.VolumeMode != nil && !containsStr(volumeModes, *spec.VolumeMode) {
		errs = append(errs, field.NotSupported(fldPath.Child("volumeMode"), *spec.VolumeMode, sortedStrings(volumeModes)))
	}
	if ds := spec.DataSource; ds != nil {
		errs = append(errs, validateDataSource(ds.Name, ds.Kind, ds.APIGroup, fldPath.Child("dataSource"))...)
	}
	if ref := spec.DataSourceRef; ref != nil {
		p := fldPath.Child("dataSourceRef")
		errs = append(errs, validateDataSource(ref.Name, ref.Kind, ref.APIGroup, p)...)
		if ref.Namespace != nil && *ref.Namespace != "" {
			errs = append(errs, nameErrs(apimachineryvalidation.ValidateNamespaceName, *ref.Namespace, p.Child("namespace"))...)
		}
	}
	if spec.DataSourceRef != nil && spec.DataSourceRef.Namespace != nil && *spec.DataSourceRef.Namespace != "" {
		if spec.DataSource != nil {
			errs = append(errs, field.Invalid(fldPath, fldPath.Child("dataSource"), "may not be specified when dataSourceRef.namespace is specified"))
		}
	} else if ds, ref := spec.DataSource, spec.DataSourceRef; ds != nil && ref != nil {
		if !reflect.DeepEqual(ds.APIGroup, ref.APIGroup) || ds.Kind != ref.Kind || ds.Name != ref.Name {
			errs = append(errs, field.Invalid(fldPath, fldPath.Child("dataSource"), "must match dataSourceRef"))
		}
	}
	return errs
}

func validateDataSource(name, kind string, apiGroup *string, fldPath *field.Path) field.ErrorList {
	errs := required(name, fldPath.Child("name"))
	errs = append(errs, required(kind, fldPath.Child("kind"))...)
	group := ""
	if apiGroup != nil {
		group = *apiGroup
	}
	if group == "" && kind != "PersistentVolumeClaim" {
		errs = append(errs, field.Invalid(fldPath, kind, "must be 'PersistentVolumeClaim' when referencing the default apiGroup"))
	}
	if group != "" {
		for _, msg := range validation.IsDNS1123Subdomain(group) {
			errs = append(errs, field.Invalid(fldPath.Child("apiGroup"), group, msg))
		}
	}
	return errs
}

func validatePersistentVolumeClaim(pvc *corev1.PersistentVolumeClaim) field.ErrorList {
	return validatePersistentVolumeClaimWith(pvc, false)
}

func validatePersistentVolumeClaimWith(pvc *corev1.PersistentVolumeClaim, allowInvalidSelector bool) field.ErrorList {
	errs := validateObjectMeta(&pvc.ObjectMeta, true, nameIsSubdomain, metaPath)
	return append(errs, validatePersistentVolumeClaimSpec(&pvc.Spec, field.NewPath("spec"), allowInvalidSelector)...)
}

func validatePersistentVolumeClaimUpdate(newPvc, oldPvc *corev1.PersistentVolumeClaim) field.ErrorList {
	allowInvalidSelector := len(metav1validation.ValidateLabelSelector(oldPvc.Spec.Selector, metav1validation.LabelSelectorValidationOptions{}, nil)) > 0
	errs := validateObjectMetaUpdate(&newPvc.ObjectMeta, &oldPvc.ObjectMeta, metaPath)
	errs = append(errs, validatePersistentVolumeClaimWith(newPvc, allowInvalidSelector)...)
	newSpec := newPvc.Spec.DeepCopy()
	oldSpec := oldPvc.Spec.DeepCopy()
	// The volume name may be set once, by the binder.
	if oldPvc.Spec.VolumeName == "" {
		oldSpec.VolumeName = newSpec.VolumeName
	}
	oldAnn, oldHasAnn := oldPvc.Annotations[corev1.BetaStorageClassAnnotation]
	newAnn, newHasAnn := newPvc.Annotations[corev1.BetaStorageClassAnnotation]
	fromAnnotation := oldHasAnn && oldPvc.Spec.StorageClassName == nil &&
		newPvc.Spec.StorageClassName != nil && *newPvc.Spec.StorageClassName == oldAnn &&
		(!newHasAnn || newAnn == oldAnn)
	if fromAnnotation {
		newSpec.StorageClassName = nil
	} else {
		if newAnn != oldAnn {
			errs = append(errs, field.Invalid(metaPath.Child("annotations", corev1.BetaStorageClassAnnotation), newAnn, apimachineryvalidation.FieldImmutableErrorMsg))
		}
		// The class may be set once when it was nil (and matches a legacy annotation, if any).
		if newPvc.Spec.StorageClassName != nil && oldPvc.Spec.StorageClassName == nil &&
			(!oldHasAnn || *newPvc.Spec.StorageClassName == oldAnn) {
			newSpec.StorageClassName = oldSpec.StorageClassName
		}
	}
	bound := newPvc.Status.Phase == corev1.ClaimBound
	if bound && newSpec.Resources.Requests != nil {
		newSpec.Resources.Requests[corev1.ResourceStorage] = oldPvc.Spec.Resources.Requests[corev1.ResourceStorage]
	}
	if bound && newSpec.VolumeAttributesClassName != nil {
		newSpec.VolumeAttributesClassName = oldSpec.VolumeAttributesClassName
	}
	if !apiequality.Semantic.DeepEqual(*newSpec, *oldSpec) {
		diff := cmp.Diff(*oldSpec, *newSpec)
		errs = append(errs, field.Forbidden(field.NewPath("spec"), "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n"+diff))
	}
	oldSize := oldPvc.Spec.Resources.Requests[corev1.ResourceStorage]
	newSize := newPvc.Spec.Resources.Requests[corev1.ResourceStorage]
	statusSize := oldPvc.Status.Capacity[corev1.ResourceStorage]
	// RecoverVolumeExpansionFailure (on in 1.33): shrinking is allowed down
	// to, but not including, the recorded capacity.
	if newSize.Cmp(oldSize) < 0 && newSize.Cmp(statusSize) <= 0 {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "resources", "requests", "storage"), "field can not be less than status.capacity"))
	}
	errs = append(errs, apimachineryvalidation.ValidateImmutableField(newPvc.Spec.VolumeMode, oldPvc.Spec.VolumeMode, field.NewPath("volumeMode"))...)
	if !reflect.DeepEqual(oldPvc.Spec.VolumeAttributesClassName, newPvc.Spec.VolumeAttributesClassName) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "volumeAttributesClassName"), "update is forbidden when the VolumeAttributesClass feature gate is disabled"))
	}
	return errs
}

var resizeStatuses = []corev1.ClaimResourceStatus{
	corev1.PersistentVolumeClaimControllerResizeInProgress, corev1.PersistentVolumeClaimControllerResizeInfeasible,
	corev1.PersistentVolumeClaimNodeResizeInProgress, corev1.PersistentVolumeClaimNodeResizeInfeasible,
	corev1.PersistentVolumeClaimNodeResizePending,
}

func validatePVCResourceKey(value string, fldPath *field.Path) field.ErrorList {
	errs := validateQualifiedName(value, fldPath)
	if len(errs) != 0 {
		return errs
	}
	if isNativeResource(corev1.ResourceName(value)) && value != string(corev1.ResourceStorage) {
		return field.ErrorList{field.NotSupported(fldPath, value, []corev1.ResourceName{corev1.ResourceStorage})}
	}
	return nil
}

func validatePersistentVolumeClaimStatusUpdate(newPvc, oldPvc *corev1.PersistentVolumeClaim) field.ErrorList {
	errs := validateObjectMetaUpdate(&newPvc.ObjectMeta, &oldPvc.ObjectMeta, metaPath)
	if newPvc.ResourceVersion == "" {
		errs = append(errs, field.Required(field.NewPath("resourceVersion"), ""))
	}
	if len(newPvc.Spec.AccessModes) == 0 {
		errs = append(errs, field.Required(field.NewPath("Spec", "accessModes"), ""))
	}
	capPath := field.NewPath("status", "capacity")
	for _, r := range sortedKeys(newPvc.Status.Capacity) {
		errs = append(errs, validateBasicResource(newPvc.Status.Capacity[r], capPath.Key(string(r)))...)
	}
	statusPath := field.NewPath("status", "allocatedResourceStatus")
	for k, v := range newPvc.Status.AllocatedResourceStatuses {
		errs = append(errs, validatePVCResourceKey(string(k), statusPath)...)
		if !containsStr(resizeStatuses, v) {
			errs = append(errs, field.NotSupported(statusPath, k, sortedStrings(resizeStatuses)))
		}
	}
	allocPath := field.NewPath("status", "allocatedResources")
	for _, r := range sortedKeys(newPvc.Status.AllocatedResources) {
		if e := validatePVCResourceKey(string(r), allocPath); len(e) > 0 {
			errs = append(errs, e...)
			continue
		}
		q := newPvc.Status.AllocatedResources[r]
		if e := validateBasicResource(q, allocPath.Key(string(r))); len(e) > 0 {
			errs = append(errs, e...)
		} else {
			errs = append(errs, validateResourceQuantityValue(corev1.ResourceStorage, q, allocPath.Key(string(r)))...)
		}
	}
	return errs
}

func hasInvalidLabelValueInTerms(terms []corev1.NodeSelectorTerm) bool {
	for _, t := range terms {
		for _, e := range t.MatchExpressions {
			for _, v := range e.Values {
				if len(validation.IsValidLabelValue(v)) > 0 {
					return true
				}
			}
		}
	}
	return false
}
