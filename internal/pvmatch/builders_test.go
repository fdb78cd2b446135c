package pvmatch

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	RWO  = corev1.ReadWriteOnce
	ROX  = corev1.ReadOnlyMany
	RWX  = corev1.ReadWriteMany
	RWOP = corev1.ReadWriteOncePod
)

// pvB builds a PersistentVolume: by default Available, RWO, 1Gi, class "",
// volumeMode unset.
type pvB struct{ pv *corev1.PersistentVolume }

func newPV(name string) *pvB {
	return &pvB{pv: &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{RWO},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable},
	}}
}

func (b *pvB) class(c string) *pvB { b.pv.Spec.StorageClassName = c; return b }
func (b *pvB) betaClass(c string) *pvB {
	metav1.SetMetaDataAnnotation(&b.pv.ObjectMeta, corev1.BetaStorageClassAnnotation, c)
	return b
}
func (b *pvB) cap(q string) *pvB {
	b.pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse(q)
	return b
}
func (b *pvB) modes(m ...corev1.PersistentVolumeAccessMode) *pvB { b.pv.Spec.AccessModes = m; return b }
func (b *pvB) mode(m corev1.PersistentVolumeMode) *pvB           { b.pv.Spec.VolumeMode = &m; return b }
func (b *pvB) phase(p corev1.PersistentVolumePhase) *pvB         { b.pv.Status.Phase = p; return b }
func (b *pvB) labels(kv ...string) *pvB {
	if b.pv.Labels == nil {
		b.pv.Labels = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.pv.Labels[kv[i]] = kv[i+1]
	}
	return b
}
func (b *pvB) claimRef(ns, name string, uid types.UID) *pvB {
	b.pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: name, UID: uid}
	return b
}
func (b *pvB) deleting() *pvB {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	b.pv.DeletionTimestamp = &now
	return b
}
func (b *pvB) vac(name string) *pvB { b.pv.Spec.VolumeAttributesClassName = &name; return b }

// affinity adds a required node selector term of one expression.
func (b *pvB) affinity(key string, op corev1.NodeSelectorOperator, values ...string) *pvB {
	if b.pv.Spec.NodeAffinity == nil {
		b.pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{}}
	}
	r := b.pv.Spec.NodeAffinity.Required
	r.NodeSelectorTerms = append(r.NodeSelectorTerms, corev1.NodeSelectorTerm{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}},
	})
	return b
}

// pvcB builds a claim ns/name with uid "uid-<name>": by default RWO, 1Gi,
// storageClassName unset.
type pvcB struct{ c *corev1.PersistentVolumeClaim }

func newPVC(name string) *pvcB {
	return &pvcB{c: &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{RWO},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi"),
			}},
		},
	}}
}

func (b *pvcB) class(c string) *pvcB { b.c.Spec.StorageClassName = &c; return b }
func (b *pvcB) betaClass(c string) *pvcB {
	metav1.SetMetaDataAnnotation(&b.c.ObjectMeta, corev1.BetaStorageClassAnnotation, c)
	return b
}
func (b *pvcB) req(q string) *pvcB {
	b.c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse(q)
	return b
}
func (b *pvcB) modes(m ...corev1.PersistentVolumeAccessMode) *pvcB {
	b.c.Spec.AccessModes = m
	return b
}
func (b *pvcB) mode(m corev1.PersistentVolumeMode) *pvcB { b.c.Spec.VolumeMode = &m; return b }
func (b *pvcB) volumeName(n string) *pvcB                { b.c.Spec.VolumeName = n; return b }
func (b *pvcB) vac(n string) *pvcB                       { b.c.Spec.VolumeAttributesClassName = &n; return b }
func (b *pvcB) matchLabels(kv ...string) *pvcB {
	sel := b.selector()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		sel.MatchLabels[kv[i]] = kv[i+1]
	}
	return b
}
func (b *pvcB) expr(key string, op metav1.LabelSelectorOperator, values ...string) *pvcB {
	sel := b.selector()
	sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values})
	return b
}
func (b *pvcB) selector() *metav1.LabelSelector {
	if b.c.Spec.Selector == nil {
		b.c.Spec.Selector = &metav1.LabelSelector{}
	}
	return b.c.Spec.Selector
}

func node(name string, kv ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for i := 0; i+1 < len(kv); i += 2 {
		n.Labels[kv[i]] = kv[i+1]
	}
	return n
}

func pvs(bs ...*pvB) []*corev1.PersistentVolume {
	out := make([]*corev1.PersistentVolume, len(bs))
	for i, b := range bs {
		out[i] = b.pv
	}
	return out
}
