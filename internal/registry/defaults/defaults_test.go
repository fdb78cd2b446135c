package defaults

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	RegisterDefaults(s)
	return s
}

func check(t *testing.T, got, want interface{}) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults differ (-want +got):\n%s", d)
	}
}

func TestPodDefaults(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{
		Containers: []corev1.Container{
			{Name: "a", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				Resources:     corev1.ResourceRequirements{Limits: corev1.ResourceList{"cpu": resource.MustParse("1")}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(8080)}}},
				Env:           []corev1.EnvVar{{Name: "N", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
			{Name: "b", Image: "nginx:1.27"},
			{Name: "c", Image: "nginx:latest"},
			{Name: "d", Image: "nginx@sha256:" + "0123456789012345678901234567890123456789012345678901234567890123"},
		},
		Volumes: []corev1.Volume{
			{Name: "e"},
			{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}},
			{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}},
		},
	}}
	newScheme().Default(p)

	check(t, p.Spec.RestartPolicy, corev1.RestartPolicyAlways)
	check(t, p.Spec.DNSPolicy, corev1.DNSClusterFirst)
	check(t, *p.Spec.TerminationGracePeriodSeconds, int64(30))
	check(t, p.Spec.SchedulerName, "default-scheduler")
	check(t, p.Spec.SecurityContext, &corev1.PodSecurityContext{})
	check(t, *p.Spec.EnableServiceLinks, true)
	pulls := []corev1.PullPolicy{}
	for _, c := range p.Spec.Containers {
		pulls = append(pulls, c.ImagePullPolicy)
		check(t, c.TerminationMessagePath, "/dev/termination-log")
		check(t, c.TerminationMessagePolicy, corev1.TerminationMessageReadFile)
	}
	check(t, pulls, []corev1.PullPolicy{"Always", "IfNotPresent", "Always", "IfNotPresent"})
	c := p.Spec.Containers[0]
	check(t, c.Ports[0].Protocol, corev1.ProtocolTCP)
	check(t, c.Resources.Requests.Cpu().String(), "1")
	check(t, c.Env[0].ValueFrom.FieldRef.APIVersion, "v1")
	check(t, c.LivenessProbe, &corev1.Probe{
		ProbeHandler:   corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080), Scheme: "HTTP"}},
		TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3,
	})
	check(t, p.Spec.Volumes[0].EmptyDir, &corev1.EmptyDirVolumeSource{})
	check(t, *p.Spec.Volumes[1].Secret.DefaultMode, int32(0644))
	check(t, *p.Spec.Volumes[2].HostPath.Type, corev1.HostPathUnset)
}

func TestStatefulSetDefaults(t *testing.T) {
	s := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
		Template:             corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "x"}}}},
		VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}}},
	}}
	newScheme().Default(s)
	check(t, *s.Spec.Replicas, int32(1))
	check(t, *s.Spec.RevisionHistoryLimit, int32(10))
	check(t, s.Spec.PodManagementPolicy, appsv1.OrderedReadyPodManagement)
	check(t, s.Spec.UpdateStrategy, appsv1.StatefulSetUpdateStrategy{
		Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptrTo(int32(0))}})
	check(t, s.Spec.PersistentVolumeClaimRetentionPolicy, &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: "Retain", WhenScaled: "Retain"})
	check(t, s.Spec.Template.Spec.RestartPolicy, corev1.RestartPolicyAlways)
	check(t, s.Spec.Template.Spec.EnableServiceLinks, (*bool)(nil)) // Pod-only default
	check(t, s.Spec.VolumeClaimTemplates[0].Status.Phase, corev1.ClaimPending)
	check(t, *s.Spec.VolumeClaimTemplates[0].Spec.VolumeMode, corev1.PersistentVolumeFilesystem)
}

func TestStorageDefaults(t *testing.T) {
	sch := newScheme()
	pvc := &corev1.PersistentVolumeClaim{}
	sch.Default(pvc)
	check(t, pvc.Status.Phase, corev1.ClaimPending)
	check(t, *pvc.Spec.VolumeMode, corev1.PersistentVolumeFilesystem)

	pv := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/d"}}}}
	sch.Default(pv)
	check(t, pv.Status.Phase, corev1.VolumePending)
	check(t, pv.Spec.PersistentVolumeReclaimPolicy, corev1.PersistentVolumeReclaimRetain)
	check(t, *pv.Spec.VolumeMode, corev1.PersistentVolumeFilesystem)
	check(t, *pv.Spec.HostPath.Type, corev1.HostPathUnset)

	sc := &storagev1.StorageClass{}
	sch.Default(sc)
	check(t, *sc.ReclaimPolicy, corev1.PersistentVolumeReclaimDelete)
	check(t, *sc.VolumeBindingMode, storagev1.VolumeBindingImmediate)

	d := &storagev1.CSIDriver{}
	sch.Default(d)
	f := false
	check(t, d.Spec, storagev1.CSIDriverSpec{
		AttachRequired: ptrTo(true), PodInfoOnMount: &f, StorageCapacity: &f, RequiresRepublish: &f, SELinuxMount: &f,
		FSGroupPolicy:        ptrTo(storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy),
		VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
	})

	list := &storagev1.StorageClassList{Items: []storagev1.StorageClass{{}, {}}}
	sch.Default(list)
	check(t, *list.Items[1].ReclaimPolicy, corev1.PersistentVolumeReclaimDelete)
}

func TestServiceDefaults(t *testing.T) {
	s := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}, {Port: 53, Protocol: "UDP", TargetPort: intstr.FromString("dns")}}}}
	newScheme().Default(s)
	check(t, s.Spec.Type, corev1.ServiceTypeClusterIP)
	check(t, s.Spec.SessionAffinity, corev1.ServiceAffinityNone)
	check(t, *s.Spec.InternalTrafficPolicy, corev1.ServiceInternalTrafficPolicyCluster)
	check(t, s.Spec.Ports, []corev1.ServicePort{
		{Port: 80, Protocol: "TCP", TargetPort: intstr.FromInt32(80)},
		{Port: 53, Protocol: "UDP", TargetPort: intstr.FromString("dns")},
	})
	check(t, s.Spec.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicy(""))

	lb := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	newScheme().Default(lb)
	check(t, lb.Spec.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicyCluster)
	check(t, *lb.Spec.AllocateLoadBalancerNodePorts, true)
}

func TestWorkloadDefaults(t *testing.T) {
	sch := newScheme()
	d := &appsv1.Deployment{}
	sch.Default(d)
	check(t, *d.Spec.Replicas, int32(1))
	check(t, d.Spec.Strategy.RollingUpdate, &appsv1.RollingUpdateDeployment{MaxUnavailable: ptrTo(intstr.FromString("25%")), MaxSurge: ptrTo(intstr.FromString("25%"))})
	check(t, *d.Spec.ProgressDeadlineSeconds, int32(600))

	ds := &appsv1.DaemonSet{}
	sch.Default(ds)
	check(t, ds.Spec.UpdateStrategy.RollingUpdate, &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptrTo(intstr.FromInt32(1)), MaxSurge: ptrTo(intstr.FromInt32(0))})

	rc := &corev1.ReplicationController{Spec: corev1.ReplicationControllerSpec{Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}}}
	sch.Default(rc)
	check(t, *rc.Spec.Replicas, int32(1))
	check(t, rc.Spec.Selector, map[string]string{"a": "b"})
	check(t, rc.Labels, map[string]string{"a": "b"})

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	sch.Default(ns)
	check(t, ns.Labels, map[string]string{"kubernetes.io/metadata.name": "x"})
	check(t, ns.Status.Phase, corev1.NamespaceActive)

	sec := &corev1.Secret{}
	sch.Default(sec)
	check(t, sec.Type, corev1.SecretTypeOpaque)
}
