package validation

import (
	"fmt"
	"math"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// storage.k8s.io/v1: StorageClass, CSIDriver, CSINode, VolumeAttachment.

const (
	maxProvisionerParameterSize   = 256 * (1 << 10)
	maxProvisionerParameterLen    = 512
	maxAttachedVolumeMetadataSize = 256 * (1 << 10)
	maxVolumeErrorMessageSize     = 1024
	csiNodeIDMaxLength            = 256 // CSINode strategy allows long node IDs
)

var (
	scReclaimPolicies = []string{string(corev1.PersistentVolumeReclaimDelete), string(corev1.PersistentVolumeReclaimRetain)}
	bindingModes      = []string{string(storagev1.VolumeBindingImmediate), string(storagev1.VolumeBindingWaitForFirstConsumer)}
	fsGroupPolicies   = []string{string(storagev1.FileFSGroupPolicy), string(storagev1.NoneFSGroupPolicy), string(storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy)}
)

func validateStorageClass(sc *storagev1.StorageClass) field.ErrorList {
	errs := validateObjectMeta(&sc.ObjectMeta, false, nameIsSubdomain, metaPath)
	errs = append(errs, validateProvisioner(sc.Provisioner, field.NewPath("provisioner"))...)
	errs = append(errs, validateParameters(sc.Parameters, field.NewPath("parameters"))...)
	if sc.ReclaimPolicy != nil && *sc.ReclaimPolicy != "" && !containsStr(scReclaimPolicies, string(*sc.ReclaimPolicy)) {
		errs = append(errs, field.NotSupported(field.NewPath("reclaimPolicy"), sc.ReclaimPolicy, scReclaimPolicies))
	}
	if sc.VolumeBindingMode == nil {
		errs = append(errs, field.Required(field.NewPath("volumeBindingMode"), ""))
	} else if !containsStr(bindingModes, string(*sc.VolumeBindingMode)) {
		errs = append(errs, field.NotSupported(field.NewPath("volumeBindingMode"), sc.VolumeBindingMode, bindingModes))
	}
	topoPath := field.NewPath("allowedTopologies")
	var seen []map[string]sets.Set[string]
	for i, term := range sc.AllowedTopologies {
		exprs, termErrs := validateTopologySelectorTerm(term, topoPath.Index(i))
		errs = append(errs, termErrs...)
		for _, t := range seen {
			if apiequality.Semantic.DeepEqual(exprs, t) {
				errs = append(errs, field.Duplicate(topoPath.Index(i).Child("matchLabelExpressions"), ""))
			}
		}
		seen = append(seen, exprs)
	}
	return errs
}

func validateStorageClassUpdate(sc, old *storagev1.StorageClass) field.ErrorList {
	errs := validateStorageClass(sc)
	errs = append(errs, validateObjectMetaUpdate(&sc.ObjectMeta, &old.ObjectMeta, metaPath)...)
	if !reflect.DeepEqual(old.Parameters, sc.Parameters) {
		errs = append(errs, field.Forbidden(field.NewPath("parameters"), "updates to parameters are forbidden."))
	}
	if sc.Provisioner != old.Provisioner {
		errs = append(errs, field.Forbidden(field.NewPath("provisioner"), "updates to provisioner are forbidden."))
	}
	if deref(sc.ReclaimPolicy) != deref(old.ReclaimPolicy) {
		errs = append(errs, field.Forbidden(field.NewPath("reclaimPolicy"), "updates to reclaimPolicy are forbidden."))
	}
	return append(errs, apimachineryvalidation.ValidateImmutableField(sc.VolumeBindingMode, old.VolumeBindingMode, field.NewPath("volumeBindingMode"))...)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func validateProvisioner(provisioner string, fldPath *field.Path) field.ErrorList {
	if provisioner == "" {
		return field.ErrorList{field.Required(fldPath, provisioner)}
	}
	return validateQualifiedName(strings.ToLower(provisioner), fldPath)
}

func validateParameters(params map[string]string, fldPath *field.Path) field.ErrorList {
	if len(params) > maxProvisionerParameterLen {
		return field.ErrorList{field.TooLong(fldPath, "", maxProvisionerParameterLen)}
	}
	var errs field.ErrorList
	total := 0
	for k, v := range params {
		if k == "" {
			errs = append(errs, field.Invalid(fldPath, k, "field can not be empty."))
		}
		total += len(k) + len(v)
	}
	if total > maxProvisionerParameterSize {
		errs = append(errs, field.TooLong(fldPath, "", maxProvisionerParameterSize))
	}
	return errs
}

func validateCSIDriver(d *storagev1.CSIDriver) field.ErrorList {
	errs := validateObjectMeta(&d.ObjectMeta, false, nameIsSubdomain, metaPath)
	return append(errs, validateCSIDriverSpec(&d.Spec, field.NewPath("spec"))...)
}

func validateCSIDriverSpec(spec *storagev1.CSIDriverSpec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, b := range []struct {
		v    *bool
		name string
	}{{spec.AttachRequired, "attachedRequired"}, {spec.PodInfoOnMount, "podInfoOnMount"}, {spec.StorageCapacity, "storageCapacity"}} {
		if b.v == nil {
			errs = append(errs, field.Required(fldPath.Child(b.name), ""))
		}
	}
	if spec.FSGroupPolicy != nil && !containsStr(fsGroupPolicies, string(*spec.FSGroupPolicy)) {
		errs = append(errs, field.NotSupported(fldPath.Child("fsGroupPolicy"), spec.FSGroupPolicy, fsGroupPolicies))
	}
	audiences := map[string]bool{}
	for i, tr := range spec.TokenRequests {
		p := fldPath.Child("tokenRequests").Index(i)
		if audiences[tr.Audience] {
			errs = append(errs, field.Duplicate(p.Child("audience"), tr.Audience))
			continue
		}
		audiences[tr.Audience] = true
		if tr.ExpirationSeconds == nil {
			continue
		}
		if *tr.ExpirationSeconds < 600 {
			errs = append(errs, field.Invalid(p.Child("expirationSeconds"), *tr.ExpirationSeconds, "may not specify a duration less than 10 minutes"))
		}
		if *tr.ExpirationSeconds > 1<<32 {
			errs = append(errs, field.Invalid(p.Child("expirationSeconds"), *tr.ExpirationSeconds, "may not specify a duration larger than 2^32 seconds"))
		}
	}
	for _, m := range spec.VolumeLifecycleModes {
		if m != storagev1.VolumeLifecyclePersistent && m != storagev1.VolumeLifecycleEphemeral {
			errs = append(errs, field.NotSupported(fldPath.Child("volumeLifecycleModes"), m,
				[]string{string(storagev1.VolumeLifecyclePersistent), string(storagev1.VolumeLifecycleEphemeral)}))
		}
	}
	if spec.SELinuxMount == nil {
		errs = append(errs, field.Required(fldPath.Child("seLinuxMount"), ""))
	}
	if p := spec.NodeAllocatableUpdatePeriodSeconds; p != nil && *p < 10 {
		errs = append(errs, field.Invalid(fldPath.Child("nodeAllocatableUpdatePeriodSeconds"), *p, "must be greater than or equal to 10 seconds"))
	}
	return errs
}

func validateCSIDriverUpdate(d, old *storagev1.CSIDriver) field.ErrorList {
	errs := validateObjectMetaUpdate(&d.ObjectMeta, &old.ObjectMeta, metaPath)
	errs = append(errs, validateCSIDriverSpec(&d.Spec, field.NewPath("spec"))...)
	errs = append(errs, apimachineryvalidation.ValidateImmutableField(d.Spec.AttachRequired, old.Spec.AttachRequired, field.NewPath("spec", "attachedRequired"))...)
	return append(errs, apimachineryvalidation.ValidateImmutableField(d.Spec.VolumeLifecycleModes, old.Spec.VolumeLifecycleModes, field.NewPath("spec", "volumeLifecycleModes"))...)
}

func validateCSINode(n *storagev1.CSINode) field.ErrorList {
	errs := validateObjectMeta(&n.ObjectMeta, false, nameIsSubdomain, metaPath)
	driversPath := field.NewPath("spec", "drivers")
	names := sets.New[string]()
	for i, d := range n.Spec.Drivers {
		p := driversPath.Index(i)
		errs = append(errs, validateCSIDriverName(d.Name, p.Child("name"))...)
		if d.NodeID == "" {
			errs = append(errs, field.Required(p.Child("nodeID"), d.NodeID))
		}
		if len(d.NodeID) > csiNodeIDMaxLength {
			errs = append(errs, field.Invalid(p.Child("nodeID"), d.NodeID, fmt.Sprintf("must be %d characters or less", csiNodeIDMaxLength)))
		}
		if d.Allocatable != nil && d.Allocatable.Count != nil {
			errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(*d.Allocatable.Count), p.Child("allocatable", "count"))...)
		}
		if names.Has(d.Name) {
			errs = append(errs, field.Duplicate(p.Child("name"), d.Name))
		}
		names.Insert(d.Name)
		keys := sets.New[string]()
		for _, k := range d.TopologyKeys {
			if k == "" {
				errs = append(errs, field.Required(p, k))
			}
			if keys.Has(k) {
				errs = append(errs, field.Duplicate(p, k))
			}
			keys.Insert(k)
			errs = append(errs, validateQualifiedName(k, p)...)
		}
	}
	return errs
}

func validateCSINodeUpdate(n, old *storagev1.CSINode) field.ErrorList {
	errs := validateCSINode(n)
	for _, od := range old.Spec.Drivers {
		for _, nd := range n.Spec.Drivers {
			if od.Name == nd.Name {
				errs = append(errs, apimachineryvalidation.ValidateImmutableField(nd, od, field.NewPath("spec").Child("drivers"))...)
			}
		}
	}
	return errs
}

func validateVolumeAttachment(va *storagev1.VolumeAttachment) field.ErrorList {
	errs := validateObjectMeta(&va.ObjectMeta, false, nameIsSubdomain, metaPath)
	specPath := field.NewPath("spec")
	if va.Spec.Attacher == "" {
		errs = append(errs, field.Required(specPath.Child("attacher"), ""))
	}
	src, srcPath := va.Spec.Source, specPath.Child("source")
	const exactlyOne = "must specify exactly one of inlineVolumeSpec and persistentVolumeName"
	switch {
	case src.InlineVolumeSpec == nil && src.PersistentVolumeName == nil:
		errs = append(errs, field.Required(srcPath, exactlyOne))
	case src.InlineVolumeSpec != nil && src.PersistentVolumeName != nil:
		errs = append(errs, field.Forbidden(srcPath, exactlyOne))
	case src.PersistentVolumeName != nil:
		if *src.PersistentVolumeName == "" {
			errs = append(errs, field.Required(srcPath.Child("persistentVolumeName"), "must specify non empty persistentVolumeName"))
		}
	default:
		errs = append(errs, validatePersistentVolumeSpec(src.InlineVolumeSpec, "", true, false, srcPath.Child("inlineVolumeSpec"))...)
	}
	errs = append(errs, nameErrs(nameIsSubdomain, va.Spec.NodeName, specPath.Child("nodeName"))...)
	errs = append(errs, validateVolumeAttachmentStatus(&va.Status, field.NewPath("status"))...)
	// v1-only checks.
	errs = append(errs, validateCSIDriverName(va.Spec.Attacher, field.NewPath("spec.attacher"))...)
	if src.PersistentVolumeName != nil {
		errs = append(errs, nameErrs(nameIsSubdomain, *src.PersistentVolumeName, field.NewPath("spec.source.persistentVolumeName"))...)
	}
	return errs
}

func validateVolumeAttachmentStatus(s *storagev1.VolumeAttachmentStatus, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	size := 0
	for k, v := range s.AttachmentMetadata {
		size += len(k) + len(v)
	}
	if size > maxAttachedVolumeMetadataSize {
		errs = append(errs, field.TooLong(fldPath.Child("attachmentMetadata"), "", maxAttachedVolumeMetadataSize))
	}
	for _, e := range []struct {
		v    *storagev1.VolumeError
		name string
	}{{s.AttachError, "attachError"}, {s.DetachError, "detachError"}} {
		if e.v == nil {
			continue
		}
		if len(e.v.Message) > maxVolumeErrorMessageSize {
			errs = append(errs, field.TooLong(fldPath.Child(e.name, "message"), "", maxAttachedVolumeMetadataSize))
		}
		if e.v.ErrorCode != nil && *e.v.ErrorCode < 0 {
			errs = append(errs, field.Invalid(fldPath.Child(e.name, "errorCode"), *e.v.ErrorCode, validation.InclusiveRangeError(0, math.MaxInt32)))
		}
	}
	return errs
}

func validateVolumeAttachmentUpdate(va, old *storagev1.VolumeAttachment) field.ErrorList {
	errs := validateVolumeAttachment(va)
	if !apiequality.Semantic.DeepEqual(old.Spec, va.Spec) {
		errs = append(errs, field.Invalid(field.NewPath("spec"), va.Spec, "field is immutable"))
	}
	return errs
}

// validateVolumeAttachmentStatusUpdate: the status strategy keeps the old
// spec, so only the object itself is validated again.
func validateVolumeAttachmentStatusUpdate(va, old *storagev1.VolumeAttachment) field.ErrorList {
	va = va.DeepCopy()
	va.Spec = old.Spec
	return validateVolumeAttachmentUpdate(va, old)
}
