package validation

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func create[T runtime.Object](o T) field.ErrorList { return ValidateCreate(o) }

const (
	tReq  = field.ErrorTypeRequired
	tInv  = field.ErrorTypeInvalid
	tForb = field.ErrorTypeForbidden
	tNS   = field.ErrorTypeNotSupported
	tDup  = field.ErrorTypeDuplicate
	tNF   = field.ErrorTypeNotFound
	tLong = field.ErrorTypeTooLong
)

func TestPersistentVolumeCreate(t *testing.T) {
	type pv = *corev1.PersistentVolume
	runCases(t, newPV, create[pv], []tc[pv]{
		{"bad name", func(p pv) { p.Name = "Bad_Name" }, "metadata.name", tInv, ""},
		{"namespace set", func(p pv) { p.Namespace = "x" }, "metadata.namespace", tForb, ""},
		{"no source", func(p pv) { p.Spec.HostPath = nil }, "spec", tReq, "spec: Required value: must specify a volume type"},
		{"two sources", func(p pv) { p.Spec.NFS = &corev1.NFSVolumeSource{Server: "s", Path: "/x"} }, "spec.nfs", tForb,
			"spec.nfs: Forbidden: may not specify more than 1 volume type"},
		{"no capacity", func(p pv) { p.Spec.Capacity = nil }, "spec.capacity", tReq, "spec.capacity: Required value"},
		{"zero capacity", func(p pv) { p.Spec.Capacity = rl("storage", "0") }, "spec.capacity[storage]", tInv,
			`spec.capacity[storage]: Invalid value: "0": must be greater than zero`},
		{"other capacity", func(p pv) { p.Spec.Capacity = rl("cpu", "1") }, "spec.capacity", tNS, ""},
		{"no access modes", func(p pv) { p.Spec.AccessModes = nil }, "spec.accessModes", tReq, "spec.accessModes: Required value"},
		{"bad access mode", func(p pv) { p.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{"Sometimes"} }, "spec.accessModes", tNS,
			`spec.accessModes: Unsupported value: "Sometimes": supported values: "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"`},
		{"rwop mixed", func(p pv) {
			p.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod, corev1.ReadWriteOnce}
		}, "spec.accessModes", tForb, "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"},
		{"reclaim policy", func(p pv) { p.Spec.PersistentVolumeReclaimPolicy = "Keep" }, "spec.persistentVolumeReclaimPolicy", tNS, ""},
		{"recycle root", func(p pv) {
			p.Spec.HostPath.Path = "/"
			p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRecycle
		}, "spec.persistentVolumeReclaimPolicy", tForb, "spec.persistentVolumeReclaimPolicy: Forbidden: may not be 'recycle' for a hostPath mount of '/'"},
		{"volume mode", func(p pv) { m := corev1.PersistentVolumeMode("Raw"); p.Spec.VolumeMode = &m }, "spec.volumeMode", tNS, ""},
		{"class name", func(p pv) { p.Spec.StorageClassName = "Not Valid" }, "spec.storageClassName", tInv, ""},
		{"hostPath backsteps", func(p pv) { p.Spec.HostPath.Path = "/a/../b" }, "spec.hostPath.path", tInv,
			`spec.hostPath.path: Invalid value: "/a/../b": must not contain '..'`},
		{"hostPath type", func(p pv) { t := corev1.HostPathType("Weird"); p.Spec.HostPath.Type = &t }, "spec.hostPath.type", tNS, ""},
		{"local without affinity", func(p pv) {
			p.Spec.HostPath = nil
			p.Spec.Local = &corev1.LocalVolumeSource{Path: "/mnt/disk"}
		}, "spec.nodeAffinity", tReq, "spec.nodeAffinity: Required value: Local volume requires node affinity"},
		{"affinity without required", func(p pv) { p.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{} }, "spec.nodeAffinity.required", tReq,
			"spec.nodeAffinity.required: Required value: must specify required node constraints"},
		{"affinity empty terms", func(p pv) {
			p.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{}}
		}, "spec.nodeAffinity.required.nodeSelectorTerms", tReq, ""},
		{"affinity bad operator", func(p pv) { p.Spec.NodeAffinity = affinity("kubernetes.io/hostname", "Near", "n1") },
			"spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].operator", tInv, ""},
		{"nfs relative", func(p pv) {
			p.Spec.HostPath = nil
			p.Spec.NFS = &corev1.NFSVolumeSource{Server: "nfs", Path: "rel"}
		}, "spec.nfs.path", tInv, `spec.nfs.path: Invalid value: "rel": must be an absolute path`},
		{"csi handle", func(p pv) {
			p.Spec.HostPath = nil
			p.Spec.CSI = &corev1.CSIPersistentVolumeSource{Driver: "csi.moorage.io"}
		}, "spec.csi.volumeHandle", tReq, ""},
		{"mount option annotation", func(p pv) { p.Annotations = map[string]string{mountOptionAnnotation: "ro"} },
			"metadata.annotations.volume.beta.kubernetes.io/mount-options", tForb, ""},
	})
}

func affinity(key string, op corev1.NodeSelectorOperator, values ...string) *corev1.VolumeNodeAffinity {
	return &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}},
	}}}}
}

func TestPersistentVolumeLocalValid(t *testing.T) {
	p := newPV()
	p.Spec.HostPath = nil
	p.Spec.Local = &corev1.LocalVolumeSource{Path: "/mnt/disk"}
	p.Spec.NodeAffinity = affinity("kubernetes.io/hostname", corev1.NodeSelectorOpIn, "node-1")
	expectNone(t, ValidateCreate(p))
}

func TestPersistentVolumeUpdate(t *testing.T) {
	old := newPV()
	old.Spec.NodeAffinity = affinity("failure-domain.beta.kubernetes.io/zone", corev1.NodeSelectorOpIn, "z1")

	p := old.DeepCopy()
	p.Spec.HostPath.Path = "/other"
	errs := ValidateUpdate(p, old)
	expectErr(t, errs, "spec.persistentvolumesource", tForb, "")
	if !strings.Contains(errs[len(errs)-1].Detail+errs.ToAggregate().Error(), "spec.persistentvolumesource is immutable after creation") {
		t.Errorf("missing immutable message: %v", errs)
	}

	p = old.DeepCopy()
	p.Spec.NodeAffinity = affinity("topology.kubernetes.io/zone", corev1.NodeSelectorOpIn, "z1")
	expectNone(t, ValidateUpdate(p, old)) // beta -> GA label is allowed

	p = old.DeepCopy()
	p.Spec.NodeAffinity = affinity("topology.kubernetes.io/zone", corev1.NodeSelectorOpIn, "z2")
	expectErr(t, ValidateUpdate(p, old), "nodeAffinity", tInv, "")

	p = old.DeepCopy()
	m := corev1.PersistentVolumeBlock
	p.Spec.VolumeMode = &m
	expectErr(t, ValidateUpdate(p, old), "volumeMode", tInv, "")

	p = old.DeepCopy() // reclaim policy and capacity may change
	p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimDelete
	p.Spec.Capacity = rl("storage", "2Gi")
	expectNone(t, ValidateUpdate(p, old))

	p = old.DeepCopy()
	p.Status.Phase = corev1.VolumeBound
	expectNone(t, ValidateStatusUpdate(p, old))
	p.ResourceVersion = ""
	expectErr(t, ValidateStatusUpdate(p, old), "resourceVersion", tReq, "")
}

func TestPersistentVolumeClaimCreate(t *testing.T) {
	type pvc = *corev1.PersistentVolumeClaim
	runCases(t, newPVC, create[pvc], []tc[pvc]{
		{"no namespace", func(c pvc) { c.Namespace = "" }, "metadata.namespace", tReq, ""},
		{"no access modes", func(c pvc) { c.Spec.AccessModes = nil }, "spec.accessModes", tReq,
			"spec.accessModes: Required value: at least 1 access mode is required"},
		{"rwop mixed", func(c pvc) {
			c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod, corev1.ReadOnlyMany}
		}, "spec.accessModes", tForb, ""},
		{"no storage", func(c pvc) { c.Spec.Resources.Requests = nil }, "spec.resources[storage]", tReq, "spec.resources[storage]: Required value"},
		{"zero storage", func(c pvc) { c.Spec.Resources.Requests = rl("storage", "0") }, "spec.resources[storage]", tInv,
			`spec.resources[storage]: Invalid value: "0": must be greater than zero`},
		{"bad selector", func(c pvc) {
			c.Spec.Selector = selector("app", "bad value!")
		}, "spec.selector.matchLabels", tInv, ""},
		{"volume mode", func(c pvc) { m := corev1.PersistentVolumeMode("Raw"); c.Spec.VolumeMode = &m }, "spec.volumeMode", tNS, ""},
		{"class name", func(c pvc) { c.Spec.StorageClassName = ptr("UPPER") }, "spec.storageClassName", tInv, ""},
		{"data source kind", func(c pvc) {
			c.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "Snapshot", Name: "s"}
		}, "spec.dataSource", tInv, `spec.dataSource: Invalid value: "Snapshot": must be 'PersistentVolumeClaim' when referencing the default apiGroup`},
		{"data source name", func(c pvc) {
			c.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim"}
		}, "spec.dataSource.name", tReq, ""},
		{"data source mismatch", func(c pvc) {
			c.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "a"}
			c.Spec.DataSourceRef = &corev1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "b"}
		}, "spec", tInv, ""},
	})
}

func TestPersistentVolumeClaimKubectlMessage(t *testing.T) {
	c := newPVC()
	c.Name = "x"
	c.Spec.AccessModes = nil
	err := apierrors.NewInvalid(schema.GroupKind{Kind: "PersistentVolumeClaim"}, "x", ValidateCreate(c))
	want := `PersistentVolumeClaim "x" is invalid: spec.accessModes: Required value: at least 1 access mode is required`
	if err.Error() != want {
		t.Errorf("got %q, want %q", err.Error(), want)
	}
}

func TestPersistentVolumeClaimUpdate(t *testing.T) {
	old := newPVC()
	old.Spec.VolumeName = "pv1"
	old.Status.Phase = corev1.ClaimBound
	old.Status.Capacity = rl("storage", "1Gi")

	grow := old.DeepCopy()
	grow.Spec.Resources.Requests = rl("storage", "2Gi")
	expectNone(t, ValidateUpdate(grow, old))

	shrink := grow.DeepCopy()
	shrink.Spec.Resources.Requests = rl("storage", "1Gi")
	expectErr(t, ValidateUpdate(shrink, grow), "spec.resources.requests.storage", tForb,
		"spec.resources.requests.storage: Forbidden: field can not be less than status.capacity")

	modes := old.DeepCopy()
	modes.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	errs := ValidateUpdate(modes, old)
	expectErr(t, errs, "spec", tForb, "")
	if !strings.Contains(errs.ToAggregate().Error(), "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims") {
		t.Errorf("unexpected message: %v", errs)
	}

	pending := newPVC()
	resize := pending.DeepCopy()
	resize.Spec.Resources.Requests = rl("storage", "5Gi")
	expectErr(t, ValidateUpdate(resize, pending), "spec", tForb, "") // only bound claims may be resized

	bind := pending.DeepCopy()
	bind.Spec.VolumeName = "pv9"
	expectNone(t, ValidateUpdate(bind, pending)) // volumeName may be set once
	rebind := old.DeepCopy()
	rebind.Spec.VolumeName = "pv9"
	expectErr(t, ValidateUpdate(rebind, old), "spec", tForb, "")

	setClass := pending.DeepCopy()
	setClass.Spec.StorageClassName = ptr("fast")
	expectNone(t, ValidateUpdate(setClass, pending)) // class may be set once when nil

	vac := old.DeepCopy()
	vac.Spec.VolumeAttributesClassName = ptr("gold")
	expectErr(t, ValidateUpdate(vac, old), "spec.volumeAttributesClassName", tForb, "")

	status := old.DeepCopy()
	status.Status.Capacity = rl("storage", "2Gi")
	expectNone(t, ValidateStatusUpdate(status, old))
	status.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{"storage": "Bogus"}
	expectErr(t, ValidateStatusUpdate(status, old), "status.allocatedResourceStatus", tNS, "")
}

func TestStorageClass(t *testing.T) {
	type sc = *storagev1.StorageClass
	runCases(t, newSC, create[sc], []tc[sc]{
		{"no provisioner", func(s sc) { s.Provisioner = "" }, "provisioner", tReq, "provisioner: Required value"},
		{"bad provisioner", func(s sc) { s.Provisioner = "not a name" }, "provisioner", tInv, ""},
		{"recycle", func(s sc) { s.ReclaimPolicy = ptr(corev1.PersistentVolumeReclaimRecycle) }, "reclaimPolicy", tNS,
			`reclaimPolicy: Unsupported value: "Recycle": supported values: "Delete", "Retain"`},
		{"binding mode", func(s sc) { s.VolumeBindingMode = ptr(storagev1.VolumeBindingMode("Later")) }, "volumeBindingMode", tNS, ""},
		{"empty param key", func(s sc) { s.Parameters[""] = "x" }, "parameters", tInv, ""},
		{"topology values", func(s sc) {
			s.AllowedTopologies = []corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{{Key: "zone"}}}}
		}, "allowedTopologies[0].matchLabelExpressions[0].values", tReq, ""},
		{"namespaced", func(s sc) { s.Namespace = "default" }, "metadata.namespace", tForb, ""},
	})

	old := newSC()
	for _, c := range []struct {
		mutate func(*storagev1.StorageClass)
		msg    string
	}{
		{func(s *storagev1.StorageClass) { s.Parameters = map[string]string{"type": "hdd"} }, "parameters: Forbidden: updates to parameters are forbidden."},
		{func(s *storagev1.StorageClass) { s.Provisioner = "other.io/x" }, "provisioner: Forbidden: updates to provisioner are forbidden."},
		{func(s *storagev1.StorageClass) { s.ReclaimPolicy = ptr(corev1.PersistentVolumeReclaimRetain) }, "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden."},
		{func(s *storagev1.StorageClass) {
			s.VolumeBindingMode = ptr(storagev1.VolumeBindingWaitForFirstConsumer)
		}, "volumeBindingMode: Invalid value"},
	} {
		n := old.DeepCopy()
		c.mutate(n)
		if got := ValidateUpdate(n, old).ToAggregate(); got == nil || !strings.Contains(got.Error(), c.msg) {
			t.Errorf("update: got %v, want %q", got, c.msg)
		}
	}
	allowExpansion := old.DeepCopy()
	allowExpansion.AllowVolumeExpansion = ptr(true)
	expectNone(t, ValidateUpdate(allowExpansion, old))
}

func TestCSIObjects(t *testing.T) {
	type drv = *storagev1.CSIDriver
	runCases(t, newCSIDriver, create[drv], []tc[drv]{
		{"attachRequired", func(d drv) { d.Spec.AttachRequired = nil }, "spec.attachedRequired", tReq, ""},
		{"fsGroupPolicy", func(d drv) { d.Spec.FSGroupPolicy = ptr(storagev1.FSGroupPolicy("Any")) }, "spec.fsGroupPolicy", tNS, ""},
		{"lifecycle", func(d drv) { d.Spec.VolumeLifecycleModes = []storagev1.VolumeLifecycleMode{"Forever"} }, "spec.volumeLifecycleModes", tNS, ""},
		{"token dup", func(d drv) { d.Spec.TokenRequests = []storagev1.TokenRequest{{Audience: "a"}, {Audience: "a"}} }, "spec.tokenRequests[1].audience", tDup, ""},
		{"token short", func(d drv) { d.Spec.TokenRequests = []storagev1.TokenRequest{{ExpirationSeconds: ptr(int64(60))}} }, "spec.tokenRequests[0].expirationSeconds", tInv, ""},
	})
	old := newCSIDriver()
	n := old.DeepCopy()
	n.Spec.AttachRequired = ptr(false)
	expectErr(t, ValidateUpdate(n, old), "spec.attachedRequired", tInv, "spec.attachedRequired: Invalid value: false: field is immutable")
	n = old.DeepCopy()
	n.Spec.PodInfoOnMount = ptr(true)
	expectNone(t, ValidateUpdate(n, old))

	node := defaulted(&storagev1.CSINode{ObjectMeta: om("node-1", ""), Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: "csi.moorage.io", NodeID: "n1"}}}})
	expectNone(t, ValidateCreate(node))
	bad := node.DeepCopy()
	bad.Spec.Drivers = append(bad.Spec.Drivers, storagev1.CSINodeDriver{Name: "csi.moorage.io"})
	errs := ValidateCreate(bad)
	expectErr(t, errs, "spec.drivers[1].name", tDup, "")
	expectErr(t, errs, "spec.drivers[1].nodeID", tReq, "")
	changed := node.DeepCopy()
	changed.Spec.Drivers[0].NodeID = "n2"
	expectErr(t, ValidateUpdate(changed, node), "spec.drivers", tInv, "")

	va := defaulted(&storagev1.VolumeAttachment{ObjectMeta: om("va1", ""), Spec: storagev1.VolumeAttachmentSpec{
		Attacher: "csi.moorage.io", NodeName: "node-1", Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr("pv1")}}})
	expectNone(t, ValidateCreate(va))
	noSrc := va.DeepCopy()
	noSrc.Spec.Source.PersistentVolumeName = nil
	expectErr(t, ValidateCreate(noSrc), "spec.source", tReq, "spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName")
	noAttacher := va.DeepCopy()
	noAttacher.Spec.Attacher = ""
	expectErr(t, ValidateCreate(noAttacher), "spec.attacher", tReq, "")
	moved := va.DeepCopy()
	moved.Spec.NodeName = "node-2"
	expectErr(t, ValidateUpdate(moved, va), "spec", tInv, "")
	attached := va.DeepCopy()
	attached.Status.Attached = true
	expectNone(t, ValidateStatusUpdate(attached, va))
}
