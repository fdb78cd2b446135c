package scheduler_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/scheduler"
)

// Builders keep the tables short: each starts from a valid object and each
// method changes one thing.

type nodeB struct{ *corev1.Node }

// newNode: 4 cpu, 8Gi, 110 pods, Ready, labelled with its hostname.
func newNode(name string) nodeB {
	return nodeB{&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("4"),
				corev1.ResourceMemory:           resource.MustParse("8Gi"),
				corev1.ResourcePods:             resource.MustParse("110"),
				corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}}
}
func (b nodeB) label(k, v string) nodeB { b.Labels[k] = v; return b }
func (b nodeB) alloc(r corev1.ResourceName, q string) nodeB {
	b.Status.Allocatable[r] = resource.MustParse(q)
	return b
}
func (b nodeB) cordon() nodeB { b.Spec.Unschedulable = true; return b }
func (b nodeB) taint(k, v string, e corev1.TaintEffect) nodeB {
	b.Spec.Taints = append(b.Spec.Taints, corev1.Taint{Key: k, Value: v, Effect: e})
	return b
}
func (b nodeB) ready(s corev1.ConditionStatus) nodeB {
	b.Status.Conditions[0].Status = s
	return b
}

type podB struct{ *corev1.Pod }

func newPod(name string) podB {
	return podB{&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("pod-" + name)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}}
}
func (b podB) req(cpu, mem string) podB {
	r := corev1.ResourceList{}
	if cpu != "" {
		r[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		r[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	b.Spec.Containers[0].Resources.Requests = r
	return b
}
func (b podB) initReq(cpu string) podB {
	b.Spec.InitContainers = append(b.Spec.InitContainers, corev1.Container{Name: "init", Image: "busybox",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}})
	return b
}
func (b podB) overhead(cpu string) podB {
	b.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
	return b
}
func (b podB) on(node string) podB          { b.Spec.NodeName = node; return b }
func (b podB) ns(ns string) podB            { b.Namespace = ns; return b }
func (b podB) phase(p corev1.PodPhase) podB { b.Status.Phase = p; return b }
func (b podB) label(k, v string) podB {
	if b.Labels == nil {
		b.Labels = map[string]string{}
	}
	b.Labels[k] = v
	return b
}
func (b podB) nodeSelector(k, v string) podB {
	if b.Spec.NodeSelector == nil {
		b.Spec.NodeSelector = map[string]string{}
	}
	b.Spec.NodeSelector[k] = v
	return b
}
func (b podB) affinity() *corev1.Affinity {
	if b.Spec.Affinity == nil {
		b.Spec.Affinity = &corev1.Affinity{}
	}
	return b.Spec.Affinity
}
func (b podB) nodeAffinity(terms ...corev1.NodeSelectorTerm) podB {
	b.affinity().NodeAffinity = &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}
	return b
}
func podTerm(app, topologyKey string) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, TopologyKey: topologyKey}
}
func (b podB) podAffinity(terms ...corev1.PodAffinityTerm) podB {
	b.affinity().PodAffinity = &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: terms}
	return b
}
func (b podB) podAntiAffinity(terms ...corev1.PodAffinityTerm) podB {
	b.affinity().PodAntiAffinity = &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: terms}
	return b
}
func (b podB) tolerate(key string, e corev1.TaintEffect) podB {
	b.Spec.Tolerations = append(b.Spec.Tolerations, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: e})
	return b
}
func (b podB) hostPort(port int32) podB {
	b.Spec.Containers[0].Ports = append(b.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: port, HostPort: port})
	return b
}
func (b podB) claim(name string) podB {
	b.Spec.Volumes = append(b.Spec.Volumes, corev1.Volume{Name: "v-" + name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}})
	return b
}
func (b podB) ephemeral(volume string) podB {
	b.Spec.Volumes = append(b.Spec.Volumes, corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{
		Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{}}}})
	return b
}
func (b podB) priority(p int32) podB { b.Spec.Priority = &p; return b }
func (b podB) never() podB {
	never := corev1.PreemptNever
	b.Spec.PreemptionPolicy = &never
	return b
}

type pvcB struct{ *corev1.PersistentVolumeClaim }

func newClaim(name, size string) pvcB {
	return pvcB{&corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("claim-" + name)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}}
}
func (b pvcB) class(c string) pvcB { b.Spec.StorageClassName = &c; return b }
func (b pvcB) modes(m ...corev1.PersistentVolumeAccessMode) pvcB {
	b.Spec.AccessModes = m
	return b
}
func (b pvcB) bound(pv string) pvcB {
	b.Spec.VolumeName = pv
	b.annotate("pv.kubernetes.io/bind-completed", "yes")
	b.Status.Phase = corev1.ClaimBound
	return b
}
func (b pvcB) annotate(k, v string) pvcB {
	if b.Annotations == nil {
		b.Annotations = map[string]string{}
	}
	b.Annotations[k] = v
	return b
}
func (b pvcB) selected(node string) pvcB { return b.annotate(scheduler.AnnSelectedNode, node) }
func (b pvcB) deleting() pvcB {
	now := metav1.Now()
	b.DeletionTimestamp = &now
	return b
}
func (b pvcB) lost(pv string) pvcB {
	b.Spec.VolumeName = pv
	b.Status.Phase = corev1.ClaimLost
	return b
}
func (b pvcB) ownedBy(p podB) pvcB {
	yes := true
	b.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID, Controller: &yes}}
	return b
}

type pvB struct{ *corev1.PersistentVolume }

// newPV: an Available local volume with no node affinity yet.
func newPV(name, size string) pvB {
	return pvB{&corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/" + name}},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable},
	}}
}
func (b pvB) class(c string) pvB { b.Spec.StorageClassName = c; return b }
func (b pvB) affinity(key string, values ...string) pvB {
	b.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}}}}}}
	return b
}
func (b pvB) onHost(host string) pvB { return b.affinity(corev1.LabelHostname, host) }
func (b pvB) boundTo(claim pvcB) pvB {
	b.Spec.ClaimRef = &corev1.ObjectReference{Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID}
	b.Status.Phase = corev1.VolumeBound
	return b
}

type scB struct{ *storagev1.StorageClass }

func newClass(name string) scB {
	immediate := storagev1.VolumeBindingImmediate
	return scB{&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &immediate}}
}
func (b scB) wffc() scB {
	m := storagev1.VolumeBindingWaitForFirstConsumer
	b.VolumeBindingMode = &m
	return b
}
func (b scB) provisioner(p string) scB { b.Provisioner = p; return b }
func (b scB) topology(key string, values ...string) scB {
	b.AllowedTopologies = append(b.AllowedTopologies, corev1.TopologySelectorTerm{
		MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{{Key: key, Values: values}}})
	return b
}

// csiNode is a node's CSINode listing the drivers registered there.
func csiNode(node string, drivers ...string) *storagev1.CSINode {
	cn := &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: node}}
	for _, d := range drivers {
		cn.Spec.Drivers = append(cn.Spec.Drivers, storagev1.CSINodeDriver{Name: d, NodeID: node})
	}
	return cn
}

func csiDriver(name string) *storagev1.CSIDriver {
	return &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// snap gathers objects (builders or API objects) into a Snapshot.
func snap(objs ...any) *scheduler.Snapshot {
	s := &scheduler.Snapshot{}
	for _, o := range objs {
		switch o := o.(type) {
		case nodeB:
			s.Nodes = append(s.Nodes, o.Node)
		case podB:
			s.Pods = append(s.Pods, o.Pod)
		case pvcB:
			s.Claims = append(s.Claims, o.PersistentVolumeClaim)
		case pvB:
			s.Volumes = append(s.Volumes, o.PersistentVolume)
		case scB:
			s.Classes = append(s.Classes, o.StorageClass)
		case *corev1.Namespace:
			s.Namespaces = append(s.Namespaces, o)
		case *storagev1.CSINode:
			s.CSINodes = append(s.CSINodes, o)
		case *storagev1.CSIDriver:
			s.CSIDrivers = append(s.CSIDrivers, o)
		default:
			panic(fmt.Sprintf("snap: unexpected %T", o))
		}
	}
	return s
}

func resourceQty(s string) resource.Quantity { return resource.MustParse(s) }
