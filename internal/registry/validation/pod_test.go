package validation

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func c0(p *corev1.Pod) *corev1.Container { return &p.Spec.Containers[0] }

func TestPodCreate(t *testing.T) {
	type pod = *corev1.Pod
	runCases(t, newPod, create[pod], []tc[pod]{
		{"no containers", func(p pod) { p.Spec.Containers = nil }, "spec.containers", tReq, "spec.containers: Required value"},
		{"no image", func(p pod) { c0(p).Image = "" }, "spec.containers[0].image", tReq, ""},
		{"image whitespace", func(p pod) { c0(p).Image = " nginx" }, "spec.containers[0].image", tInv, ""},
		{"bad container name", func(p pod) { c0(p).Name = "App" }, "spec.containers[0].name", tInv, ""},
		{"duplicate container", func(p pod) { p.Spec.Containers = append(p.Spec.Containers, *c0(p)) }, "spec.containers[1].name", tDup, ""},
		{"init name clash", func(p pod) { p.Spec.InitContainers = []corev1.Container{*c0(p)} }, "spec.initContainers[0].name", tDup, ""},
		{"port zero", func(p pod) { c0(p).Ports = []corev1.ContainerPort{{Protocol: "TCP"}} }, "spec.containers[0].ports[0].containerPort", tReq, ""},
		{"port range", func(p pod) { c0(p).Ports = []corev1.ContainerPort{{ContainerPort: 70000, Protocol: "TCP"}} }, "spec.containers[0].ports[0].containerPort", tInv, ""},
		{"port protocol", func(p pod) { c0(p).Ports = []corev1.ContainerPort{{ContainerPort: 80, Protocol: "HTTP"}} }, "spec.containers[0].ports[0].protocol", tNS, ""},
		{"host port clash", func(p pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "b", Image: "x", ImagePullPolicy: "Always", TerminationMessagePolicy: "File"})
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080, Protocol: "TCP"}}
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 81, HostPort: 8080, Protocol: "TCP"}}
		}, "spec.containers[1].ports[0].hostPort", tDup, ""},
		{"env name", func(p pod) { c0(p).Env = []corev1.EnvVar{{Name: ""}} }, "spec.containers[0].env[0].name", tReq, ""},
		{"env fieldRef", func(p pod) {
			c0(p).Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.bogus"}}}}
		}, "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath", tInv, ""},
		{"env value and source", func(p pod) {
			c0(p).Env = []corev1.EnvVar{{Name: "X", Value: "v", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}}
		}, "spec.containers[0].env[0].valueFrom", tInv, ""},
		{"mount unknown volume", func(p pod) { c0(p).VolumeMounts = []corev1.VolumeMount{{Name: "nope", MountPath: "/d"}} }, "spec.containers[0].volumeMounts[0].name", tNF,
			`spec.containers[0].volumeMounts[0].name: Not found: "nope"`},
		{"mount path required", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			c0(p).VolumeMounts = []corev1.VolumeMount{{Name: "v"}}
		}, "spec.containers[0].volumeMounts[0].mountPath", tReq, ""},
		{"duplicate volume", func(p pod) {
			v := corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
			p.Spec.Volumes = []corev1.Volume{v, v}
		}, "spec.volumes[1].name", tDup, ""},
		{"two volume sources", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}, HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}}}
		}, "spec.volumes[0].hostPath", tForb, ""},
		{"emptyDir sizeLimit", func(p pod) {
			q := rl("x", "-1")["x"]
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &q}}}}
		}, "spec.volumes[0].emptyDir.sizeLimit", tForb, ""},
		{"pvc claimName", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{}}}}
		}, "spec.volumes[0].persistentVolumeClaim.claimName", tReq, ""},
		{"secret mode", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: ptr(int32(01000))}}}}
		}, "spec.volumes[0].secret.defaultMode", tInv, ""},
		{"configMap item path", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "c"}, Items: []corev1.KeyToPath{{Key: "k", Path: "../x"}}}}}}
		}, "spec.volumes[0].configMap.items[0].path", tInv, ""},
		{"projected duplicate paths", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "a"}, Items: []corev1.KeyToPath{{Key: "k", Path: "p"}}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}, Items: []corev1.KeyToPath{{Key: "k", Path: "p"}}}},
			}}}}}
		}, "spec.volumes[0].projected", tInv, ""},
		{"hostPath required", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{}}}}
		}, "spec.volumes[0].hostPath.path", tReq, ""},
		{"restart policy", func(p pod) { p.Spec.RestartPolicy = "Sometimes" }, "spec.restartPolicy", tNS, ""},
		{"dns policy", func(p pod) { p.Spec.DNSPolicy = "Magic" }, "spec.dnsPolicy", tNS, ""},
		{"dns none", func(p pod) { p.Spec.DNSPolicy = corev1.DNSNone }, "spec.dnsConfig", tReq, ""},
		{"grace period", func(p pod) { p.Spec.TerminationGracePeriodSeconds = nil }, "spec.terminationGracePeriodSeconds", tReq, ""},
		{"limits below requests", func(p pod) {
			c0(p).Resources.Limits = rl("cpu", "1")
			c0(p).Resources.Requests = rl("cpu", "2")
		}, "spec.containers[0].resources.requests", tInv, `spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1`},
		{"resource name", func(p pod) { c0(p).Resources.Requests = rl("gpu", "1") }, "spec.containers[0].resources.requests[gpu]", tInv, ""},
		{"negative cpu", func(p pod) { c0(p).Resources.Requests = rl("cpu", "-1") }, "spec.containers[0].resources.requests[cpu]", tInv, ""},
		{"liveness success", func(p pod) {
			c0(p).LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}}, SuccessThreshold: 2}
		}, "spec.containers[0].livenessProbe.successThreshold", tInv, ""},
		{"probe no handler", func(p pod) { c0(p).ReadinessProbe = &corev1.Probe{SuccessThreshold: 1} }, "spec.containers[0].readinessProbe", tReq, ""},
		{"init probe", func(p pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "x", ImagePullPolicy: "Always", TerminationMessagePolicy: "File",
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, SuccessThreshold: 1}}}
		}, "spec.initContainers[0].livenessProbe", tForb, ""},
		{"toleration operator", func(p pod) { p.Spec.Tolerations = []corev1.Toleration{{Operator: "Equal", Value: "x"}} }, "spec.tolerations[0].operator", tInv, ""},
		{"node selector", func(p pod) { p.Spec.NodeSelector = map[string]string{"bad key!": "v"} }, "spec.nodeSelector", tInv, ""},
		{"affinity weight", func(p pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 0}}}}
		}, "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", tInv, ""},
		{"run as user", func(p pod) { p.Spec.SecurityContext.RunAsUser = ptr(int64(-1)) }, "spec.securityContext.runAsUser", tInv, ""},
		{"ephemeral on create", func(p pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg", Image: "x", ImagePullPolicy: "Always", TerminationMessagePolicy: "File"}}}
		}, "spec.ephemeralContainers", tForb, "spec.ephemeralContainers: Forbidden: cannot be set on create"},
		{"sa token without sa", func(p pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "t", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptr(int32(0644)),
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3600))}}}}}}}
		}, "spec.volumes[0].projected.sources[0].serviceAccountToken", tForb, ""},
		{"active deadline", func(p pod) { p.Spec.ActiveDeadlineSeconds = ptr(int64(0)) }, "spec.activeDeadlineSeconds", tInv, ""},
		{"hostNetwork port", func(p pod) {
			p.Spec.HostNetwork = true
			c0(p).Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 81, Protocol: "TCP"}}
		}, "spec.containers[0].ports[0].hostPort", tInv, ""},
	})
}

func TestPodUpdate(t *testing.T) {
	old := newPod()
	old.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: ptr(int64(10))}}

	ok := old.DeepCopy()
	ok.Spec.Containers[0].Image = "nginx:1.28"
	ok.Spec.ActiveDeadlineSeconds = ptr(int64(100))
	ok.Spec.Tolerations = append(ok.Spec.Tolerations, corev1.Toleration{Key: "other", Operator: "Exists"})
	ok.Spec.Tolerations[0].TolerationSeconds = ptr(int64(20))
	ok.Labels = map[string]string{"new": "label"}
	expectNone(t, ValidateUpdate(ok, old))

	bad := old.DeepCopy()
	bad.Spec.RestartPolicy = corev1.RestartPolicyNever
	errs := ValidateUpdate(bad, old)
	expectErr(t, errs, "spec", tForb, "")
	if msg := errs.ToAggregate().Error(); !strings.Contains(msg, "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)") {
		t.Errorf("unexpected message: %s", msg)
	}

	added := old.DeepCopy()
	added.Spec.Containers = append(added.Spec.Containers, corev1.Container{Name: "b", Image: "x"})
	expectErr(t, ValidateUpdate(added, old), "spec.containers", tForb, "spec.containers: Forbidden: pod updates may not add or remove containers")

	removedTol := old.DeepCopy()
	removedTol.Spec.Tolerations = nil
	expectErr(t, ValidateUpdate(removedTol, old), "spec.tolerations", tForb, "")

	deadline := old.DeepCopy()
	deadline.Spec.ActiveDeadlineSeconds = ptr(int64(50))
	longer := deadline.DeepCopy()
	longer.Spec.ActiveDeadlineSeconds = ptr(int64(60))
	expectErr(t, ValidateUpdate(longer, deadline), "spec.activeDeadlineSeconds", tInv, "")

	renamed := old.DeepCopy()
	renamed.Name = "other"
	expectErr(t, ValidateUpdate(renamed, old), "metadata.name", tInv, "")
}

func TestPodStatusUpdate(t *testing.T) {
	old := newPod()
	old.Spec.RestartPolicy = corev1.RestartPolicyNever
	old.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}}

	running := old.DeepCopy()
	running.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	expectErr(t, ValidateStatusUpdate(running, old), "status.containerStatuses[0].state", tForb, "")

	moved := old.DeepCopy()
	moved.Spec.NodeName = "node-1"
	expectErr(t, ValidateStatusUpdate(moved, old), "status.nodeName", tForb, "")

	ips := old.DeepCopy()
	ips.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}}
	expectErr(t, ValidateStatusUpdate(ips, old), "status.podIPs", tInv, "")

	fine := old.DeepCopy()
	fine.Status.Phase = corev1.PodSucceeded
	fine.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}
	expectNone(t, ValidateStatusUpdate(fine, old))
}
