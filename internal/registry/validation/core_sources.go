package validation

import (
	"net"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Volume source checks shared by pod volumes and persistent volumes.

const fileModeErrorMsg = "must be a number between 0 and 0777 (octal), both inclusive"

var (
	pdPartitionErrorMsg = validation.InclusiveRangeError(1, 255)
	iqnRegex            = regexp.MustCompile(`iqn\.\d{4}-\d{2}\.([[:alnum:]-.]+)(:[^,;*&$|\s]+)$`)
	euiRegex            = regexp.MustCompile(`^eui.[[:alnum:]]{16}$`)
	naaRegex            = regexp.MustCompile(`^naa.[[:alnum:]]{32}$`)
)

// sourceCheck is one possible volume source in upstream's checking order:
// forbidden names the path used when it is a second source, check validates
// it, and unchecked sources are counted without the exclusivity check.
type sourceCheck struct {
	set       bool
	forbidden string
	check     func() field.ErrorList
	unchecked bool
}

func sc(set bool, forbidden string, check func() field.ErrorList) sourceCheck {
	return sourceCheck{set: set, forbidden: forbidden, check: check}
}

func unchecked(set bool, check func() field.ErrorList) sourceCheck {
	return sourceCheck{set: set, check: check, unchecked: true}
}

// oneSource validates that exactly one of the given sources is set, with
// upstream's "may not specify more than 1 volume type" errors.
func oneSource(fldPath *field.Path, sources []sourceCheck) field.ErrorList {
	var errs field.ErrorList
	n := 0
	for _, s := range sources {
		if !s.set {
			continue
		}
		if n > 0 && !s.unchecked {
			errs = append(errs, field.Forbidden(fldPath.Child(s.forbidden), "may not specify more than 1 volume type"))
			continue
		}
		n++
		errs = append(errs, s.check()...)
	}
	if n == 0 {
		errs = append(errs, field.Required(fldPath, "must specify a volume type"))
	}
	return errs
}

func required(s string, fldPath *field.Path) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(fldPath, "")}
	}
	return nil
}

func validateDNS1123Label(value string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(value) {
		errs = append(errs, field.Invalid(fldPath, value, msg))
	}
	return errs
}

func validateDNS1123Subdomain(value string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(value) {
		errs = append(errs, field.Invalid(fldPath, value, msg))
	}
	return errs
}

func validateQualifiedName(value string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsQualifiedName(value) {
		errs = append(errs, field.Invalid(fldPath, value, msg))
	}
	return errs
}

// nameErrs turns a name function's messages into Invalid errors.
func nameErrs(fn apimachineryvalidation.ValidateNameFunc, name string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range fn(name, false) {
		errs = append(errs, field.Invalid(fldPath, name, msg))
	}
	return errs
}

func validateMode(mode *int32, fldPath *field.Path) field.ErrorList {
	if mode != nil && (*mode > 0777 || *mode < 0) {
		return field.ErrorList{field.Invalid(fldPath, *mode, fileModeErrorMsg)}
	}
	return nil
}

func validatePathNoBacksteps(target string, fldPath *field.Path) field.ErrorList {
	for _, item := range strings.Split(filepath.ToSlash(target), "/") {
		if item == ".." {
			return field.ErrorList{field.Invalid(fldPath, target, "must not contain '..'")}
		}
	}
	return nil
}

func validateLocalDescendingPath(target string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if path.IsAbs(target) {
		errs = append(errs, field.Invalid(fldPath, target, "must be a relative path"))
	}
	return append(errs, validatePathNoBacksteps(target, fldPath)...)
}

func validateLocalNonReservedPath(target string, fldPath *field.Path) field.ErrorList {
	errs := validateLocalDescendingPath(target, fldPath)
	if strings.HasPrefix(target, "..") && !strings.HasPrefix(target, "../") {
		errs = append(errs, field.Invalid(fldPath, target, "must not start with '..'"))
	}
	return errs
}

var hostPathTypes = []corev1.HostPathType{
	corev1.HostPathUnset, corev1.HostPathBlockDev, corev1.HostPathCharDev, corev1.HostPathDirectory,
	corev1.HostPathDirectoryOrCreate, corev1.HostPathFile, corev1.HostPathFileOrCreate, corev1.HostPathSocket,
}

func validateHostPath(hp *corev1.HostPathVolumeSource, fldPath *field.Path) field.ErrorList {
	if hp.Path == "" {
		return field.ErrorList{field.Required(fldPath.Child("path"), "")}
	}
	errs := validatePathNoBacksteps(hp.Path, fldPath.Child("path"))
	if hp.Type != nil && !containsStr(hostPathTypes, *hp.Type) {
		errs = append(errs, field.NotSupported(fldPath.Child("type"), hp.Type, sortedStrings(hostPathTypes)))
	}
	return errs
}

func validateNFS(nfs *corev1.NFSVolumeSource, fldPath *field.Path) field.ErrorList {
	errs := required(nfs.Server, fldPath.Child("server"))
	errs = append(errs, required(nfs.Path, fldPath.Child("path"))...)
	if !path.IsAbs(nfs.Path) {
		errs = append(errs, field.Invalid(fldPath.Child("path"), nfs.Path, "must be an absolute path"))
	}
	return errs
}

func validateIQN(value string, fldPath *field.Path, prefixMsg string) field.ErrorList {
	switch {
	case !strings.HasPrefix(value, "iqn") && !strings.HasPrefix(value, "eui") && !strings.HasPrefix(value, "naa"):
		return field.ErrorList{field.Invalid(fldPath, value, prefixMsg)}
	case strings.HasPrefix(value, "iqn") && !iqnRegex.MatchString(value),
		strings.HasPrefix(value, "eui") && !euiRegex.MatchString(value),
		strings.HasPrefix(value, "naa") && !naaRegex.MatchString(value):
		return field.ErrorList{field.Invalid(fldPath, value, "must be valid format")}
	}
	return nil
}

// validateISCSI covers both the pod and the PV flavour; pvName is empty for
// pod volumes (whose name length rule is checked by the caller).
func validateISCSI(portal, iqn string, lun int32, chap, hasSecret bool, secretRef *corev1.SecretReference, initiator *string, pvName string, fldPath *field.Path) field.ErrorList {
	errs := required(portal, fldPath.Child("targetPortal"))
	if pvName != "" && initiator != nil && len(pvName+":"+portal) > 64 {
		errs = append(errs, field.Invalid(fldPath.Child("targetportal"), portal,
			"Total length of <volume name>:<iscsi.targetPortal> must be under 64 characters if iscsi.initiatorName is specified."))
	}
	prefixMsg := "must be valid format starting with iqn, eui, or naa"
	if pvName != "" {
		prefixMsg = "must be valid format"
	}
	if iqn == "" {
		errs = append(errs, field.Required(fldPath.Child("iqn"), ""))
	} else {
		errs = append(errs, validateIQN(iqn, fldPath.Child("iqn"), prefixMsg)...)
	}
	if lun < 0 || lun > 255 {
		errs = append(errs, field.Invalid(fldPath.Child("lun"), lun, validation.InclusiveRangeError(0, 255)))
	}
	if chap && !hasSecret {
		errs = append(errs, field.Required(fldPath.Child("secretRef"), ""))
	}
	if secretRef != nil && secretRef.Name == "" {
		errs = append(errs, field.Required(fldPath.Child("secretRef", "name"), ""))
	}
	if initiator != nil {
		init := *initiator
		if !strings.HasPrefix(init, "iqn") && !strings.HasPrefix(init, "eui") && !strings.HasPrefix(init, "naa") {
			errs = append(errs, field.Invalid(fldPath.Child("initiatorname"), init, prefixMsg))
		}
		if (strings.HasPrefix(init, "iqn") && !iqnRegex.MatchString(init)) ||
			(strings.HasPrefix(init, "eui") && !euiRegex.MatchString(init)) ||
			(strings.HasPrefix(init, "naa") && !naaRegex.MatchString(init)) {
			errs = append(errs, field.Invalid(fldPath.Child("initiatorname"), init, "must be valid format"))
		}
	}
	return errs
}

func validateFC(fc *corev1.FCVolumeSource, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(fc.TargetWWNs) < 1 && len(fc.WWIDs) < 1 {
		errs = append(errs, field.Required(fldPath.Child("targetWWNs"), "must specify either targetWWNs or wwids, but not both"))
	}
	if len(fc.TargetWWNs) != 0 && len(fc.WWIDs) != 0 {
		errs = append(errs, field.Invalid(fldPath.Child("targetWWNs"), fc.TargetWWNs, "targetWWNs and wwids can not be specified simultaneously"))
	}
	if len(fc.TargetWWNs) != 0 {
		if fc.Lun == nil {
			errs = append(errs, field.Required(fldPath.Child("lun"), "lun is required if targetWWNs is specified"))
		} else if *fc.Lun < 0 || *fc.Lun > 255 {
			errs = append(errs, field.Invalid(fldPath.Child("lun"), fc.Lun, validation.InclusiveRangeError(0, 255)))
		}
	}
	return errs
}

func validatePartitioned(id string, idField string, partition int32, fldPath *field.Path) field.ErrorList {
	errs := required(id, fldPath.Child(idField))
	if partition < 0 || partition > 255 {
		errs = append(errs, field.Invalid(fldPath.Child("partition"), partition, pdPartitionErrorMsg))
	}
	return errs
}

func validateQuobyte(q *corev1.QuobyteVolumeSource, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	const msg = "must be a host:port pair or multiple pairs separated by commas"
	switch {
	case q.Registry == "":
		errs = append(errs, field.Required(fldPath.Child("registry"), msg))
	case len(q.Tenant) >= 65:
		errs = append(errs, field.Required(fldPath.Child("tenant"), "must be a UUID and may not exceed a length of 64 characters"))
	default:
		for _, hp := range strings.Split(q.Registry, ",") {
			if _, _, err := net.SplitHostPort(hp); err != nil {
				errs = append(errs, field.Invalid(fldPath.Child("registry"), q.Registry, msg))
			}
		}
	}
	return append(errs, required(q.Volume, fldPath.Child("volume"))...)
}

func validateGlusterfs(endpoints, p string, endpointsNamespace *string, fldPath *field.Path) field.ErrorList {
	errs := required(endpoints, fldPath.Child("endpoints"))
	errs = append(errs, required(p, fldPath.Child("path"))...)
	if endpointsNamespace != nil {
		ns := *endpointsNamespace
		if ns == "" {
			errs = append(errs, field.Invalid(fldPath.Child("endpointsNamespace"), ns, "if the endpointnamespace is set, it must be a valid namespace name"))
		} else {
			errs = append(errs, nameErrs(apimachineryvalidation.ValidateNamespaceName, ns, fldPath.Child("endpointsNamespace"))...)
		}
	}
	return errs
}

func validateFlocker(f *corev1.FlockerVolumeSource, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if f.DatasetName == "" && f.DatasetUUID == "" {
		errs = append(errs, field.Required(fldPath, "one of datasetName and datasetUUID is required"))
	}
	if f.DatasetName != "" && f.DatasetUUID != "" {
		errs = append(errs, field.Invalid(fldPath, "resource", "datasetName and datasetUUID can not be specified simultaneously"))
	}
	if strings.Contains(f.DatasetName, "/") {
		errs = append(errs, field.Invalid(fldPath.Child("datasetName"), f.DatasetName, "must not contain '/'"))
	}
	return errs
}

func validateRBD(monitors []string, image string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(monitors) == 0 {
		errs = append(errs, field.Required(fldPath.Child("monitors"), ""))
	}
	return append(errs, required(image, fldPath.Child("image"))...)
}

func validateMonitors(monitors []string, fldPath *field.Path) field.ErrorList {
	if len(monitors) == 0 {
		return field.ErrorList{field.Required(fldPath.Child("monitors"), "")}
	}
	return nil
}

func validateFlexOptions(driver string, options map[string]string, fldPath *field.Path) field.ErrorList {
	errs := required(driver, fldPath.Child("driver"))
	for k := range options {
		ns := k
		if parts := strings.SplitN(k, "/", 2); len(parts) == 2 {
			ns = parts[0]
		}
		norm := "." + strings.ToLower(ns)
		if strings.HasSuffix(norm, ".kubernetes.io") || strings.HasSuffix(norm, ".k8s.io") {
			errs = append(errs, field.Invalid(fldPath.Child("options").Key(k), k, "kubernetes.io and k8s.io namespaces are reserved"))
		}
	}
	return errs
}

func validateAzureDisk(a *corev1.AzureDiskVolumeSource, fldPath *field.Path) field.ErrorList {
	errs := required(a.DiskName, fldPath.Child("diskName"))
	errs = append(errs, required(a.DataDiskURI, fldPath.Child("diskURI"))...)
	caching := []corev1.AzureDataDiskCachingMode{corev1.AzureDataDiskCachingNone, corev1.AzureDataDiskCachingReadOnly, corev1.AzureDataDiskCachingReadWrite}
	kinds := []corev1.AzureDataDiskKind{corev1.AzureDedicatedBlobDisk, corev1.AzureManagedDisk, corev1.AzureSharedBlobDisk}
	if a.CachingMode != nil && !containsStr(caching, *a.CachingMode) {
		errs = append(errs, field.NotSupported(fldPath.Child("cachingMode"), *a.CachingMode, sortedStrings(caching)))
	}
	if a.Kind != nil && !containsStr(kinds, *a.Kind) {
		errs = append(errs, field.NotSupported(fldPath.Child("kind"), *a.Kind, sortedStrings(kinds)))
	}
	if a.Kind != nil && *a.Kind == corev1.AzureManagedDisk && !strings.HasPrefix(a.DataDiskURI, "/subscriptions/") {
		errs = append(errs, field.NotSupported(fldPath.Child("diskURI"), a.DataDiskURI,
			[]string{"/subscriptions/{sub-id}/resourcegroups/{group-name}/providers/microsoft.compute/disks/{disk-id}"}))
	}
	if a.Kind != nil && *a.Kind != corev1.AzureManagedDisk && !strings.HasPrefix(a.DataDiskURI, "https://") {
		errs = append(errs, field.NotSupported(fldPath.Child("diskURI"), a.DataDiskURI,
			[]string{"https://{account-name}.blob.core.windows.net/{container-name}/{disk-name}.vhd"}))
	}
	return errs
}

func validateScaleIO(gateway, system, volumeName string, fldPath *field.Path) field.ErrorList {
	errs := required(gateway, fldPath.Child("gateway"))
	errs = append(errs, required(system, fldPath.Child("system"))...)
	return append(errs, required(volumeName, fldPath.Child("volumeName"))...)
}

func validateStorageOS(volumeName, volumeNamespace string, secretName *string, secretNamespace *string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if volumeName == "" {
		errs = append(errs, field.Required(fldPath.Child("volumeName"), ""))
	} else {
		errs = append(errs, validateDNS1123Label(volumeName, fldPath.Child("volumeName"))...)
	}
	if volumeNamespace != "" {
		errs = append(errs, validateDNS1123Label(volumeNamespace, fldPath.Child("volumeNamespace"))...)
	}
	if secretName != nil && *secretName == "" {
		errs = append(errs, field.Required(fldPath.Child("secretRef", "name"), ""))
	}
	if secretNamespace != nil && *secretNamespace == "" {
		errs = append(errs, field.Required(fldPath.Child("secretRef", "namespace"), ""))
	}
	return errs
}

// validateCSIDriverName is core's check of a CSI driver name.
func validateCSIDriverName(name string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if name == "" {
		errs = append(errs, field.Required(fldPath, ""))
	}
	if len(name) > 63 {
		errs = append(errs, field.TooLong(fldPath, "", 63))
	}
	for _, msg := range validation.IsDNS1123Subdomain(strings.ToLower(name)) {
		errs = append(errs, field.Invalid(fldPath, name, msg))
	}
	return errs
}

func validatePVSecretReference(ref *corev1.SecretReference, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if ref.Name == "" {
		errs = append(errs, field.Required(fldPath.Child("name"), ""))
	} else {
		errs = append(errs, validateDNS1123Subdomain(ref.Name, fldPath.Child("name"))...)
	}
	if ref.Namespace == "" {
		errs = append(errs, field.Required(fldPath.Child("namespace"), ""))
	} else {
		errs = append(errs, validateDNS1123Label(ref.Namespace, fldPath.Child("namespace"))...)
	}
	return errs
}

func validateCSIPersistentVolumeSource(csi *corev1.CSIPersistentVolumeSource, fldPath *field.Path) field.ErrorList {
	errs := validateCSIDriverName(csi.Driver, fldPath.Child("driver"))
	errs = append(errs, required(csi.VolumeHandle, fldPath.Child("volumeHandle"))...)
	refs := []struct {
		ref  *corev1.SecretReference
		name string
	}{
		{csi.ControllerPublishSecretRef, "controllerPublishSecretRef"},
		{csi.ControllerExpandSecretRef, "controllerExpandSecretRef"},
		{csi.NodePublishSecretRef, "nodePublishSecretRef"},
		{csi.NodeExpandSecretRef, "nodeExpandSecretRef"},
	}
	for _, r := range refs {
		if r.ref != nil {
			errs = append(errs, validatePVSecretReference(r.ref, fldPath.Child(r.name))...)
		}
	}
	return errs
}

func containsStr[T ~string](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// sortedStrings returns list as sorted strings, as upstream's sets.List does.
func sortedStrings[T ~string](list []T) []string {
	out := make([]string, len(list))
	for i, v := range list {
		out[i] = string(v)
	}
	sort.Strings(out)
	return out
}
