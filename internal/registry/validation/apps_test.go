package validation

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestStatefulSet(t *testing.T) {
	type sts = *appsv1.StatefulSet
	runCases(t, newSTS, create[sts], []tc[sts]{
		{"name is a label", func(s sts) { s.Name = "db.v1" }, "metadata.name", tInv, ""},
		{"negative replicas", func(s sts) { s.Spec.Replicas = ptr(int32(-1)) }, "spec.replicas", tInv,
			"spec.replicas: Invalid value: -1: must be greater than or equal to 0"},
		{"no selector", func(s sts) { s.Spec.Selector = nil }, "spec.selector", tReq, ""},
		{"empty selector", func(s sts) { s.Spec.Selector = &metav1.LabelSelector{} }, "spec.selector", tInv, ""},
		{"selector mismatch", func(s sts) { s.Spec.Selector = selector("app", "other") }, "spec.template.metadata.labels", tInv, ""},
		{"management policy", func(s sts) { s.Spec.PodManagementPolicy = "Random" }, "spec.podManagementPolicy", tInv,
			`spec.podManagementPolicy: Invalid value: "Random": must be 'OrderedReady' or 'Parallel'`},
		{"partition", func(s sts) { s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(int32(-1)) }, "spec.updateStrategy.rollingUpdate.partition", tInv, ""},
		{"maxUnavailable zero", func(s sts) { s.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(0)) }, "spec.updateStrategy.rollingUpdate.maxUnavailable", tInv, ""},
		{"ondelete with rolling", func(s sts) { s.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType }, "spec.updateStrategy.rollingUpdate", tInv, ""},
		{"restart policy", func(s sts) { s.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever }, "spec.template.spec.restartPolicy", tNS, ""},
		{"ordinals", func(s sts) { s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: -1} }, "spec.ordinals.start", tInv, ""},
		{"retention", func(s sts) { s.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted = "Keep" }, "spec.persistentVolumeClaimRetentionPolicy.whenDeleted", tNS, ""},
		{"history", func(s sts) { s.Spec.RevisionHistoryLimit = ptr(int32(-1)) }, "spec.revisionHistoryLimit", tInv, ""},
	})

	old := newSTS()
	ok := old.DeepCopy()
	ok.Spec.Replicas = ptr(int32(5))
	ok.Spec.Template.Spec.Containers[0].Image = "postgres:17"
	ok.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	expectNone(t, ValidateUpdate(ok, old))

	bad := old.DeepCopy()
	bad.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests = rl("storage", "5Gi")
	expectErr(t, ValidateUpdate(bad, old), "spec", tForb,
		"spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")

	st := old.DeepCopy()
	st.Status.Replicas, st.Status.ReadyReplicas = 1, 2
	expectErr(t, ValidateStatusUpdate(st, old), "status.readyReplicas", tInv, "")
}

func newDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return defaulted(&appsv1.Deployment{ObjectMeta: om("web", "default"), Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: newPodSpec()},
	}})
}

func newDaemonSet() *appsv1.DaemonSet {
	labels := map[string]string{"app": "agent"}
	return defaulted(&appsv1.DaemonSet{ObjectMeta: om("agent", "kube-system"), Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: newPodSpec()},
	}})
}

func newReplicaSet() *appsv1.ReplicaSet {
	labels := map[string]string{"app": "web"}
	return defaulted(&appsv1.ReplicaSet{ObjectMeta: om("web-1", "default"), Spec: appsv1.ReplicaSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: newPodSpec()},
	}})
}

func TestWorkloads(t *testing.T) {
	type dep = *appsv1.Deployment
	runCases(t, newDeployment, create[dep], []tc[dep]{
		{"empty selector", func(d dep) { d.Spec.Selector = &metav1.LabelSelector{} }, "spec.selector", tInv, ""},
		{"template image", func(d dep) { d.Spec.Template.Spec.Containers[0].Image = "" }, "spec.template.spec.containers[0].image", tReq, ""},
		{"both zero", func(d dep) {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr(intstr.FromInt32(0))
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(0))
		}, "spec.strategy.rollingUpdate.maxUnavailable", tInv, ""},
		{"deadline", func(d dep) { d.Spec.MinReadySeconds = 700 }, "spec.progressDeadlineSeconds", tInv, ""},
		{"recreate with rolling", func(d dep) { d.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType }, "spec.strategy.rollingUpdate", tForb, ""},
	})
	old := newDeployment()
	moved := old.DeepCopy()
	moved.Spec.Selector = selector("app", "web2")
	moved.Spec.Template.Labels = map[string]string{"app": "web2"}
	expectErr(t, ValidateUpdate(moved, old), "spec.selector", tInv, "")

	type ds = *appsv1.DaemonSet
	runCases(t, newDaemonSet, create[ds], []tc[ds]{
		{"both non-zero", func(d ds) { d.Spec.UpdateStrategy.RollingUpdate.MaxSurge = ptr(intstr.FromInt32(1)) }, "spec.updateStrategy.rollingUpdate.maxSurge", tInv, ""},
		{"both zero", func(d ds) { d.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(0)) }, "spec.updateStrategy.rollingUpdate.maxUnavailable", tReq, ""},
		{"percent", func(d ds) { d.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromString("150%")) }, "spec.updateStrategy.rollingUpdate.maxUnavailable", tInv, ""},
		{"strategy", func(d ds) { d.Spec.UpdateStrategy.Type = "Surprise" }, "spec.updateStrategy", tNS, ""},
		{"selector mismatch", func(d ds) { d.Spec.Template.Labels = map[string]string{"app": "x"} }, "spec.template.metadata.labels", tInv, ""},
	})

	type rs = *appsv1.ReplicaSet
	runCases(t, newReplicaSet, create[rs], []tc[rs]{
		{"no selector", func(r rs) { r.Spec.Selector = nil }, "spec.selector", tReq, ""},
		{"replicas", func(r rs) { r.Spec.Replicas = ptr(int32(-2)) }, "spec.replicas", tInv, ""},
	})

	rc := defaulted(&corev1.ReplicationController{ObjectMeta: om("rc", "default"), Spec: corev1.ReplicationControllerSpec{
		Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}, Spec: newPodSpec()}}})
	expectNone(t, ValidateCreate(rc))
	rc.Spec.Selector = map[string]string{"a": "c"}
	expectErr(t, ValidateCreate(rc), "spec.template.metadata.labels", tInv, "")

	cr := &appsv1.ControllerRevision{ObjectMeta: om("web-1", "default"), Revision: 1, Data: runtime.RawExtension{Raw: []byte(`{}`)}}
	expectNone(t, ValidateCreate(cr))
	noData := cr.DeepCopy()
	noData.Data = runtime.RawExtension{}
	expectErr(t, ValidateCreate(noData), "data", tReq, "data: Required value: data is mandatory")
	changed := cr.DeepCopy()
	changed.Data = runtime.RawExtension{Raw: []byte(`{"a":1}`)}
	expectErr(t, ValidateUpdate(changed, cr), "data", tInv, "")
}
