package validation

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Pod volumes, volume mounts and devices.

var volumeDownwardAPIPaths = sets.New("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid")

// validateVolumes validates pod volumes and returns the valid ones by name.
func validateVolumes(volumes []corev1.Volume, podMeta *metav1.ObjectMeta, fldPath *field.Path) (map[string]corev1.VolumeSource, field.ErrorList) {
	var errs field.ErrorList
	names := sets.New[string]()
	createdPVCs := sets.New[string]()
	if podMeta != nil && podMeta.Name != "" {
		for _, v := range volumes {
			if v.Ephemeral != nil {
				createdPVCs.Insert(podMeta.Name + "-" + v.Name)
			}
		}
	}
	vols := map[string]corev1.VolumeSource{}
	for i, v := range volumes {
		p := fldPath.Index(i)
		el := validateVolumeSource(&v.VolumeSource, p, v.Name, podMeta)
		if v.Name == "" {
			el = append(el, field.Required(p.Child("name"), ""))
		} else {
			el = append(el, validateDNS1123Label(v.Name, p.Child("name"))...)
		}
		if names.Has(v.Name) {
			el = append(el, field.Duplicate(p.Child("name"), v.Name))
		}
		if len(el) == 0 {
			names.Insert(v.Name)
			vols[v.Name] = v.VolumeSource
		} else {
			errs = append(errs, el...)
		}
		if v.PersistentVolumeClaim != nil && createdPVCs.Has(v.PersistentVolumeClaim.ClaimName) {
			errs = append(errs, field.Invalid(p.Child("persistentVolumeClaim").Child("claimName"), v.PersistentVolumeClaim.ClaimName,
				"must not reference a PVC that gets created for an ephemeral volume"))
		}
	}
	return vols, errs
}

func validateVolumeSource(s *corev1.VolumeSource, fldPath *field.Path, volName string, podMeta *metav1.ObjectMeta) field.ErrorList {
	var extra field.ErrorList
	errs := oneSource(fldPath, []sourceCheck{
		sc(s.EmptyDir != nil, "emptyDir", func() field.ErrorList {
			if s.EmptyDir.SizeLimit != nil && s.EmptyDir.SizeLimit.Cmp(resource.Quantity{}) < 0 {
				return field.ErrorList{field.Forbidden(fldPath.Child("emptyDir").Child("sizeLimit"), "SizeLimit field must be a valid resource quantity")}
			}
			return nil
		}),
		sc(s.HostPath != nil, "hostPath", func() field.ErrorList { return validateHostPath(s.HostPath, fldPath.Child("hostPath")) }),
		sc(s.GitRepo != nil, "gitRepo", func() field.ErrorList {
			errs := required(s.GitRepo.Repository, fldPath.Child("gitRepo", "repository"))
			return append(errs, validateLocalDescendingPath(s.GitRepo.Directory, fldPath.Child("gitRepo", "directory"))...)
		}),
		sc(s.GCEPersistentDisk != nil, "gcePersistentDisk", func() field.ErrorList {
			return validatePartitioned(s.GCEPersistentDisk.PDName, "pdName", s.GCEPersistentDisk.Partition, fldPath.Child("persistentDisk"))
		}),
		sc(s.AWSElasticBlockStore != nil, "awsElasticBlockStore", func() field.ErrorList {
			return validatePartitioned(s.AWSElasticBlockStore.VolumeID, "volumeID", s.AWSElasticBlockStore.Partition, fldPath.Child("awsElasticBlockStore"))
		}),
		sc(s.Secret != nil, "secret", func() field.ErrorList {
			p := fldPath.Child("secret")
			errs := required(s.Secret.SecretName, p.Child("secretName"))
			errs = append(errs, validateMode(s.Secret.DefaultMode, p.Child("defaultMode"))...)
			return append(errs, validateKeyToPaths(s.Secret.Items, p.Child("items"))...)
		}),
		sc(s.NFS != nil, "nfs", func() field.ErrorList { return validateNFS(s.NFS, fldPath.Child("nfs")) }),
		sc(s.ISCSI != nil, "iscsi", func() field.ErrorList {
			i := s.ISCSI
			errs := validateISCSI(i.TargetPortal, i.IQN, i.Lun, i.DiscoveryCHAPAuth || i.SessionCHAPAuth, i.SecretRef != nil, nil, i.InitiatorName, "", fldPath.Child("iscsi"))
			return errs
		}),
		sc(s.Glusterfs != nil, "glusterfs", func() field.ErrorList {
			return validateGlusterfs(s.Glusterfs.EndpointsName, s.Glusterfs.Path, nil, fldPath.Child("glusterfs"))
		}),
		sc(s.Flocker != nil, "flocker", func() field.ErrorList { return validateFlocker(s.Flocker, fldPath.Child("flocker")) }),
		sc(s.PersistentVolumeClaim != nil, "persistentVolumeClaim", func() field.ErrorList {
			return required(s.PersistentVolumeClaim.ClaimName, fldPath.Child("persistentVolumeClaim", "claimName"))
		}),
		sc(s.RBD != nil, "rbd", func() field.ErrorList { return validateRBD(s.RBD.CephMonitors, s.RBD.RBDImage, fldPath.Child("rbd")) }),
		sc(s.Cinder != nil, "cinder", func() field.ErrorList {
			errs := required(s.Cinder.VolumeID, fldPath.Child("cinder", "volumeID"))
			if s.Cinder.SecretRef != nil {
				errs = append(errs, required(s.Cinder.SecretRef.Name, fldPath.Child("cinder", "secretRef", "name"))...)
			}
			return errs
		}),
		sc(s.CephFS != nil, "cephFS", func() field.ErrorList { return validateMonitors(s.CephFS.Monitors, fldPath.Child("cephfs")) }),
		sc(s.Quobyte != nil, "quobyte", func() field.ErrorList { return validateQuobyte(s.Quobyte, fldPath.Child("quobyte")) }),
		sc(s.DownwardAPI != nil, "downwarAPI", func() field.ErrorList {
			p := fldPath.Child("downwardAPI")
			errs := validateMode(s.DownwardAPI.DefaultMode, p.Child("defaultMode"))
			for _, f := range s.DownwardAPI.Items {
				errs = append(errs, validateDownwardAPIVolumeFile(&f, p)...)
			}
			return errs
		}),
		sc(s.FC != nil, "fc", func() field.ErrorList { return validateFC(s.FC, fldPath.Child("fc")) }),
		sc(s.FlexVolume != nil, "flexVolume", func() field.ErrorList {
			return validateFlexOptions(s.FlexVolume.Driver, s.FlexVolume.Options, fldPath.Child("flexVolume"))
		}),
		sc(s.ConfigMap != nil, "configMap", func() field.ErrorList {
			p := fldPath.Child("configMap")
			errs := required(s.ConfigMap.Name, p.Child("name"))
			errs = append(errs, validateMode(s.ConfigMap.DefaultMode, p.Child("defaultMode"))...)
			return append(errs, validateKeyToPaths(s.ConfigMap.Items, p.Child("items"))...)
		}),
		sc(s.AzureFile != nil, "azureFile", func() field.ErrorList {
			errs := required(s.AzureFile.SecretName, fldPath.Child("azureFile", "secretName"))
			return append(errs, required(s.AzureFile.ShareName, fldPath.Child("azureFile", "shareName"))...)
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
		sc(s.StorageOS != nil, "storageos", func() field.ErrorList {
			var name *string
			if s.StorageOS.SecretRef != nil {
				name = &s.StorageOS.SecretRef.Name
			}
			return validateStorageOS(s.StorageOS.VolumeName, s.StorageOS.VolumeNamespace, name, nil, fldPath.Child("storageos"))
		}),
		sc(s.Projected != nil, "projected", func() field.ErrorList { return validateProjected(s.Projected, fldPath.Child("projected")) }),
		sc(s.ScaleIO != nil, "scaleIO", func() field.ErrorList {
			return validateScaleIO(s.ScaleIO.Gateway, s.ScaleIO.System, s.ScaleIO.VolumeName, fldPath.Child("scaleIO"))
		}),
		sc(s.CSI != nil, "csi", func() field.ErrorList {
			errs := validateCSIDriverName(s.CSI.Driver, fldPath.Child("csi", "driver"))
			if r := s.CSI.NodePublishSecretRef; r != nil {
				if r.Name == "" {
					errs = append(errs, field.Required(fldPath.Child("csi", "nodePublishSecretRef", "name"), ""))
				} else {
					errs = append(errs, nameErrs(nameIsSubdomain, r.Name, fldPath.Child("csi", "name"))...)
				}
			}
			return errs
		}),
		sc(s.Ephemeral != nil, "ephemeral", func() field.ErrorList {
			p := fldPath.Child("ephemeral")
			var errs field.ErrorList
			if t := s.Ephemeral.VolumeClaimTemplate; t == nil {
				errs = append(errs, field.Required(p.Child("volumeClaimTemplate"), ""))
			} else {
				tp := p.Child("volumeClaimTemplate")
				errs = append(errs, validateTemplateObjectMeta(&t.ObjectMeta, tp.Child("metadata"))...)
				errs = append(errs, validatePersistentVolumeClaimSpec(&t.Spec, tp.Child("spec"), false)...)
			}
			if podMeta != nil && podMeta.Name != "" && volName != "" {
				pvcName := podMeta.Name + "-" + volName
				for _, msg := range nameIsSubdomain(pvcName, false) {
					errs = append(errs, field.Invalid(fldPath.Child("name"), volName, fmt.Sprintf("PVC name %q: %v", pvcName, msg)))
				}
			}
			return errs
		}),
		sc(s.Image != nil, "image", func() field.ErrorList {
			p := fldPath.Child("image")
			var errs field.ErrorList
			if podMeta != nil && s.Image.Reference == "" {
				errs = append(errs, field.Required(p.Child("reference"), ""))
			}
			return append(errs, validatePullPolicy(s.Image.PullPolicy, p.Child("pullPolicy"))...)
		}),
	})
	if s.ISCSI != nil && s.ISCSI.InitiatorName != nil && len(volName+":"+s.ISCSI.TargetPortal) > 64 {
		extra = append(extra, field.Invalid(fldPath.Child("name"), volName,
			"Total length of <volume name>:<iscsi.targetPortal> must be under 64 characters if iscsi.initiatorName is specified."))
	}
	return append(errs, extra...)
}

// validateTemplateObjectMeta allows only labels and annotations.
func validateTemplateObjectMeta(m *metav1.ObjectMeta, fldPath *field.Path) field.ErrorList {
	errs := validateAnnotations(m.Annotations, fldPath.Child("annotations"))
	errs = append(errs, metav1validation.ValidateLabels(m.Labels, fldPath.Child("labels"))...)
	rest := m.DeepCopy()
	rest.Labels, rest.Annotations = nil, nil
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"name", rest.Name != ""}, {"generateName", rest.GenerateName != ""}, {"namespace", rest.Namespace != ""},
		{"selfLink", rest.SelfLink != ""}, {"uid", rest.UID != ""}, {"resourceVersion", rest.ResourceVersion != ""},
		{"generation", rest.Generation != 0}, {"creationTimestamp", !rest.CreationTimestamp.IsZero()},
		{"deletionTimestamp", rest.DeletionTimestamp != nil}, {"deletionGracePeriodSeconds", rest.DeletionGracePeriodSeconds != nil},
		{"ownerReferences", len(rest.OwnerReferences) > 0}, {"finalizers", len(rest.Finalizers) > 0}, {"managedFields", len(rest.ManagedFields) > 0},
	} {
		if f.set {
			errs = append(errs, field.Forbidden(fldPath.Child(f.name), "cannot be set"))
		}
	}
	return errs
}

func validateKeyToPaths(items []corev1.KeyToPath, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, kp := range items {
		p := fldPath.Index(i)
		errs = append(errs, required(kp.Key, p.Child("key"))...)
		errs = append(errs, required(kp.Path, p.Child("path"))...)
		errs = append(errs, validateLocalNonReservedPath(kp.Path, p.Child("path"))...)
		errs = append(errs, validateMode(kp.Mode, p.Child("mode"))...)
	}
	return errs
}

func validateDownwardAPIVolumeFile(f *corev1.DownwardAPIVolumeFile, fldPath *field.Path) field.ErrorList {
	errs := required(f.Path, fldPath.Child("path"))
	errs = append(errs, validateLocalNonReservedPath(f.Path, fldPath.Child("path"))...)
	switch {
	case f.FieldRef != nil:
		errs = append(errs, validateObjectFieldSelector(f.FieldRef, volumeDownwardAPIPaths, fldPath.Child("fieldRef"))...)
		if f.ResourceFieldRef != nil {
			errs = append(errs, field.Invalid(fldPath, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously"))
		}
	case f.ResourceFieldRef != nil:
		errs = append(errs, validateContainerResourceFieldSelector(f.ResourceFieldRef, fldPath.Child("resourceFieldRef"), true)...)
	default:
		errs = append(errs, field.Required(fldPath, "one of fieldRef and resourceFieldRef is required"))
	}
	return append(errs, validateMode(f.Mode, fldPath.Child("mode"))...)
}

func validateProjected(pr *corev1.ProjectedVolumeSource, fldPath *field.Path) field.ErrorList {
	errs := validateMode(pr.DefaultMode, fldPath.Child("defaultMode"))
	paths := sets.New[string]()
	addPath := func(p, bad string) {
		if paths.Has(p) {
			errs = append(errs, field.Invalid(fldPath, bad, "conflicting duplicate paths"))
		}
		paths.Insert(p)
	}
	for i, src := range pr.Sources {
		n := 0
		sp := fldPath.Child("sources").Index(i)
		if s := src.Secret; s != nil {
			n++
			errs = append(errs, required(s.Name, sp.Child("secret", "name"))...)
			errs = append(errs, validateKeyToPaths(s.Items, sp.Child("secret", "items"))...)
			for _, kp := range s.Items {
				if kp.Path != "" {
					addPath(kp.Path, s.Name)
				}
			}
		}
		if c := src.ConfigMap; c != nil {
			n++
			errs = append(errs, required(c.Name, sp.Child("configMap", "name"))...)
			errs = append(errs, validateKeyToPaths(c.Items, sp.Child("configMap", "items"))...)
			for _, kp := range c.Items {
				if kp.Path != "" {
					addPath(kp.Path, c.Name)
				}
			}
		}
		if d := src.DownwardAPI; d != nil {
			n++
			for _, f := range d.Items {
				errs = append(errs, validateDownwardAPIVolumeFile(&f, sp.Child("downwardAPI"))...)
				if f.Path != "" {
					addPath(f.Path, f.Path)
				}
			}
		}
		if t := src.ServiceAccountToken; t != nil {
			n++
			tp := sp.Child("serviceAccountToken")
			exp := deref(t.ExpirationSeconds)
			if exp < 600 {
				errs = append(errs, field.Invalid(tp.Child("expirationSeconds"), exp, "may not specify a duration less than 10 minutes"))
			}
			if exp > 1<<32 {
				errs = append(errs, field.Invalid(tp.Child("expirationSeconds"), exp, "may not specify a duration larger than 2^32 seconds"))
			}
			if t.Path == "" {
				errs = append(errs, field.Required(fldPath.Child("path"), ""))
			} else {
				errs = append(errs, validateLocalNonReservedPath(t.Path, fldPath.Child("path"))...)
			}
		}
		if b := src.ClusterTrustBundle; b != nil {
			n++
			bp := sp.Child("clusterTrustBundle")
			switch {
			case b.Name != nil && b.SignerName != nil:
				errs = append(errs, field.Invalid(bp, b, "only one of name and signerName may be used"))
			case b.Name != nil:
				if *b.Name == "" {
					errs = append(errs, field.Required(bp.Child("name"), "must be a valid object name"))
				}
				if b.LabelSelector != nil {
					errs = append(errs, field.Invalid(bp.Child("labelSelector"), b.LabelSelector, "labelSelector must be unset if name is specified"))
				}
			case b.SignerName != nil:
				if *b.SignerName == "" {
					errs = append(errs, field.Required(bp.Child("signerName"), "must be a valid signer name"))
				}
				errs = append(errs, metav1validation.ValidateLabelSelector(b.LabelSelector, metav1validation.LabelSelectorValidationOptions{}, bp.Child("labelSelector"))...)
			default:
				errs = append(errs, field.Required(bp, "either name or signerName must be specified"))
			}
			errs = append(errs, required(b.Path, bp.Child("path"))...)
			errs = append(errs, validateLocalNonReservedPath(b.Path, bp.Child("path"))...)
			addPath(b.Path, b.Path)
		}
		if n > 1 {
			errs = append(errs, field.Forbidden(sp, "may not specify more than 1 volume type per source"))
		}
	}
	return errs
}

var mountPropagations = []corev1.MountPropagationMode{corev1.MountPropagationBidirectional, corev1.MountPropagationHostToContainer, corev1.MountPropagationNone}

func validateVolumeMounts(mounts []corev1.VolumeMount, devices map[string]string, volumes map[string]corev1.VolumeSource, c *corev1.Container, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	mountPoints := sets.New[string]()
	for i, m := range mounts {
		p := fldPath.Index(i)
		if m.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		}
		if _, ok := volumes[m.Name]; !ok {
			errs = append(errs, field.NotFound(p.Child("name"), m.Name))
		}
		if m.MountPath == "" {
			errs = append(errs, field.Required(p.Child("mountPath"), ""))
		}
		if mountPoints.Has(m.MountPath) {
			errs = append(errs, field.Invalid(p.Child("mountPath"), m.MountPath, "must be unique"))
		}
		mountPoints.Insert(m.MountPath)
		if _, ok := devices[m.Name]; ok {
			errs = append(errs, field.Invalid(p.Child("name"), m.Name, "must not already exist in volumeDevices"))
		}
		for _, dp := range devices {
			if dp == m.MountPath {
				errs = append(errs, field.Invalid(p.Child("mountPath"), m.MountPath, "must not already exist as a path in volumeDevices"))
				break
			}
		}
		if v, ok := volumes[m.Name]; ok && v.Image != nil {
			if m.SubPath != "" {
				errs = append(errs, field.Invalid(p.Child("subPath"), m.SubPath, "not allowed in image volume sources"))
			}
			if m.SubPathExpr != "" {
				errs = append(errs, field.Invalid(p.Child("subPathExpr"), m.SubPathExpr, "not allowed in image volume sources"))
			}
		}
		if m.SubPath != "" {
			errs = append(errs, validateLocalDescendingPath(m.SubPath, fldPath.Child("subPath"))...)
		}
		if m.SubPathExpr != "" {
			if m.SubPath != "" {
				errs = append(errs, field.Invalid(p.Child("subPathExpr"), m.SubPathExpr, "subPathExpr and subPath are mutually exclusive"))
			}
			errs = append(errs, validateLocalDescendingPath(m.SubPathExpr, fldPath.Child("subPathExpr"))...)
		}
		if mp := m.MountPropagation; mp != nil {
			pp := fldPath.Child("mountPropagation")
			if !containsStr(mountPropagations, *mp) {
				errs = append(errs, field.NotSupported(pp, *mp, sortedStrings(mountPropagations)))
			}
			privileged := c != nil && c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
			if c != nil && *mp == corev1.MountPropagationBidirectional && !privileged {
				errs = append(errs, field.Forbidden(pp, "Bidirectional mount propagation is available only to privileged containers"))
			}
		}
		if rro := m.RecursiveReadOnly; rro != nil {
			rp := fldPath.Child("recursiveReadOnly")
			switch *rro {
			case corev1.RecursiveReadOnlyDisabled:
			case corev1.RecursiveReadOnlyEnabled, corev1.RecursiveReadOnlyIfPossible:
				if !m.ReadOnly {
					errs = append(errs, field.Forbidden(rp, "may only be specified when readOnly is true"))
				}
				if m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone {
					errs = append(errs, field.Forbidden(rp, "may only be specified when mountPropagation is None or not specified"))
				}
			default:
				errs = append(errs, field.NotSupported(rp, *rro, []corev1.RecursiveReadOnlyMode{corev1.RecursiveReadOnlyDisabled, corev1.RecursiveReadOnlyEnabled, corev1.RecursiveReadOnlyIfPossible}))
			}
		}
	}
	return errs
}

func validateVolumeDevices(devices []corev1.VolumeDevice, mounts map[string]string, volumes map[string]corev1.VolumeSource, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	paths, names := sets.New[string](), sets.New[string]()
	for i, d := range devices {
		p := fldPath.Index(i)
		src, matched := volumes[d.Name]
		isPVC := matched && (src.PersistentVolumeClaim != nil || src.Ephemeral != nil)
		if d.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		}
		if names.Has(d.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), d.Name, "must be unique"))
		}
		if matched && !isPVC {
			errs = append(errs, field.Invalid(p.Child("name"), d.Name, "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode"))
		}
		if !matched {
			errs = append(errs, field.NotFound(p.Child("name"), d.Name))
		}
		if d.DevicePath == "" {
			errs = append(errs, field.Required(p.Child("devicePath"), ""))
		}
		if paths.Has(d.DevicePath) {
			errs = append(errs, field.Invalid(p.Child("devicePath"), d.DevicePath, "must be unique"))
		}
		if d.DevicePath != "" && len(validatePathNoBacksteps(d.DevicePath, p)) > 0 {
			errs = append(errs, field.Invalid(p.Child("devicePath"), d.DevicePath, "can not contain backsteps ('..')"))
		} else {
			paths.Insert(d.DevicePath)
		}
		if _, ok := mounts[d.Name]; ok {
			errs = append(errs, field.Invalid(p.Child("name"), d.Name, "must not already exist in volumeMounts"))
		}
		for _, mp := range mounts {
			if mp == d.DevicePath {
				errs = append(errs, field.Invalid(p.Child("devicePath"), d.DevicePath, "must not already exist as a path in volumeMounts"))
				break
			}
		}
		if d.Name != "" {
			names.Insert(d.Name)
		}
	}
	return errs
}

// splitSubscript splits "metadata.labels['key']" into path and subscript.
func splitSubscript(fieldPath string) (string, string, bool) {
	if !strings.HasSuffix(fieldPath, "']") {
		return fieldPath, "", false
	}
	s := strings.TrimSuffix(fieldPath, "']")
	parts := strings.SplitN(s, "['", 2)
	if len(parts) < 2 || len(parts[0]) == 0 {
		return fieldPath, "", false
	}
	return parts[0], parts[1], true
}
