package validation

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// apps/v1: StatefulSet, DaemonSet, ReplicaSet, Deployment, ControllerRevision.

var nonneg = apimachineryvalidation.ValidateNonnegativeField

// validateSelector checks a workload's label selector; kind names the
// workload in the "empty selector" message.
func validateSelector(sel *metav1.LabelSelector, kind string, fldPath *field.Path) field.ErrorList {
	if sel == nil {
		return field.ErrorList{field.Required(fldPath, "")}
	}
	errs := metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, fldPath)
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		errs = append(errs, field.Invalid(fldPath, sel, "empty selector is invalid for "+kind))
	}
	return errs
}

func validateStatefulSetSpec(spec *appsv1.StatefulSetSpec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch spec.PodManagementPolicy {
	case "":
		errs = append(errs, field.Required(fldPath.Child("podManagementPolicy"), ""))
	case appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement:
	default:
		errs = append(errs, field.Invalid(fldPath.Child("podManagementPolicy"), spec.PodManagementPolicy,
			fmt.Sprintf("must be '%s' or '%s'", appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement)))
	}
	us, usPath := spec.UpdateStrategy, fldPath.Child("updateStrategy")
	switch us.Type {
	case "":
		errs = append(errs, field.Required(usPath, ""))
	case appsv1.OnDeleteStatefulSetStrategyType:
		if us.RollingUpdate != nil {
			errs = append(errs, field.Invalid(usPath.Child("rollingUpdate"), us.RollingUpdate,
				fmt.Sprintf("only allowed for updateStrategy '%s'", appsv1.RollingUpdateStatefulSetStrategyType)))
		}
	case appsv1.RollingUpdateStatefulSetStrategyType:
		if ru := us.RollingUpdate; ru != nil {
			rp := usPath.Child("rollingUpdate")
			errs = append(errs, nonneg(int64(deref(ru.Partition)), rp.Child("partition"))...)
			if ru.MaxUnavailable != nil {
				mp := rp.Child("maxUnavailable")
				errs = append(errs, validatePositiveIntOrPercent(*ru.MaxUnavailable, mp)...)
				if intOrPercentValue(*ru.MaxUnavailable) == 0 {
					errs = append(errs, field.Invalid(mp, *ru.MaxUnavailable, "cannot be 0"))
				}
				errs = append(errs, notMoreThan100Percent(*ru.MaxUnavailable, mp)...)
			}
		}
	default:
		errs = append(errs, field.Invalid(usPath, us, fmt.Sprintf("must be '%s' or '%s'", appsv1.RollingUpdateStatefulSetStrategyType, appsv1.OnDeleteStatefulSetStrategyType)))
	}
	if rp := spec.PersistentVolumeClaimRetentionPolicy; rp != nil {
		pp := fldPath.Child("persistentVolumeClaimRetentionPolicy")
		valid := []string{string(appsv1.RetainPersistentVolumeClaimRetentionPolicyType), string(appsv1.DeletePersistentVolumeClaimRetentionPolicyType)}
		for _, v := range []struct {
			t    appsv1.PersistentVolumeClaimRetentionPolicyType
			name string
		}{{rp.WhenDeleted, "whenDeleted"}, {rp.WhenScaled, "whenScaled"}} {
			if !containsStr(valid, string(v.t)) {
				errs = append(errs, field.NotSupported(pp.Child(v.name), v.t, valid))
			}
		}
	}
	errs = append(errs, nonneg(int64(deref(spec.Replicas)), fldPath.Child("replicas"))...)
	errs = append(errs, nonneg(int64(spec.MinReadySeconds), fldPath.Child("minReadySeconds"))...)
	if spec.RevisionHistoryLimit != nil {
		errs = append(errs, nonneg(int64(*spec.RevisionHistoryLimit), fldPath.Child("revisionHistoryLimit"))...)
	}
	if spec.Ordinals != nil {
		errs = append(errs, nonneg(int64(spec.Ordinals.Start), fldPath.Child("ordinals.start"))...)
	}
	errs = append(errs, validateSelector(spec.Selector, "statefulset", fldPath.Child("selector"))...)
	tp := fldPath.Child("template")
	if selector, err := metav1.LabelSelectorAsSelector(spec.Selector); err != nil {
		errs = append(errs, field.Invalid(fldPath.Child("selector"), spec.Selector, ""))
	} else {
		// The pod spec itself is not validated for StatefulSets upstream.
		t := &spec.Template
		if !selector.Empty() && !selector.Matches(labels.Set(t.Labels)) {
			errs = append(errs, field.Invalid(tp.Child("metadata", "labels"), t.Labels, "`selector` does not match template `labels`"))
		}
		errs = append(errs, metav1validation.ValidateLabels(t.Labels, tp.Child("labels"))...)
		errs = append(errs, validateAnnotations(t.Annotations, tp.Child("annotations"))...)
		errs = append(errs, validatePodSpecificAnnotations(t.Annotations, &t.Spec, tp.Child("annotations"))...)
	}
	if spec.Template.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(tp.Child("spec", "restartPolicy"), spec.Template.Spec.RestartPolicy, []string{string(corev1.RestartPolicyAlways)}))
	}
	if spec.Template.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Forbidden(tp.Child("spec", "activeDeadlineSeconds"), "activeDeadlineSeconds in StatefulSet is not Supported"))
	}
	return errs
}

func validateStatefulSet(s *appsv1.StatefulSet) field.ErrorList {
	errs := validateObjectMeta(&s.ObjectMeta, true, apimachineryvalidation.NameIsDNSLabel, metaPath)
	return append(errs, validateStatefulSetSpec(&s.Spec, field.NewPath("spec"))...)
}

func validateStatefulSetUpdate(s, old *appsv1.StatefulSet) field.ErrorList {
	errs := validateObjectMetaUpdate(&s.ObjectMeta, &old.ObjectMeta, metaPath)
	errs = append(errs, validateStatefulSetSpec(&s.Spec, field.NewPath("spec"))...)
	c := s.Spec.DeepCopy()
	c.Replicas, c.Template, c.UpdateStrategy = old.Spec.Replicas, old.Spec.Template, old.Spec.UpdateStrategy
	c.MinReadySeconds, c.Ordinals = old.Spec.MinReadySeconds, old.Spec.Ordinals
	c.PersistentVolumeClaimRetentionPolicy = old.Spec.PersistentVolumeClaimRetentionPolicy
	if !apiequality.Semantic.DeepEqual(*c, old.Spec) {
		errs = append(errs, field.Forbidden(field.NewPath("spec"), "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
	}
	return errs
}

func validateStatefulSetStatusUpdate(s, old *appsv1.StatefulSet) field.ErrorList {
	p, st := field.NewPath("status"), s.Status
	var errs field.ErrorList
	for _, f := range []struct {
		v    int32
		name string
	}{{st.Replicas, "replicas"}, {st.ReadyReplicas, "readyReplicas"}, {st.CurrentReplicas, "currentReplicas"}, {st.UpdatedReplicas, "updatedReplicas"}, {st.AvailableReplicas, "availableReplicas"}} {
		errs = append(errs, nonneg(int64(f.v), p.Child(f.name))...)
	}
	errs = append(errs, nonneg(st.ObservedGeneration, p.Child("observedGeneration"))...)
	if st.CollisionCount != nil {
		errs = append(errs, nonneg(int64(*st.CollisionCount), p.Child("collisionCount"))...)
	}
	const msg = "cannot be greater than status.replicas"
	for _, f := range []struct {
		v    int32
		name string
	}{{st.ReadyReplicas, "readyReplicas"}, {st.CurrentReplicas, "currentReplicas"}, {st.UpdatedReplicas, "updatedReplicas"}, {st.AvailableReplicas, "availableReplicas"}} {
		if f.v > st.Replicas {
			errs = append(errs, field.Invalid(p.Child(f.name), f.v, msg))
		}
	}
	if st.AvailableReplicas > st.ReadyReplicas {
		errs = append(errs, field.Invalid(p.Child("availableReplicas"), st.AvailableReplicas, "cannot be greater than status.readyReplicas"))
	}
	errs = append(errs, validateObjectMetaUpdate(&s.ObjectMeta, &old.ObjectMeta, metaPath)...)
	return append(errs, collisionDecrement(st.CollisionCount, old.Status.CollisionCount, p)...)
}

func collisionDecrement(n, o *int32, p *field.Path) field.ErrorList {
	if (n == nil && o != nil) || (n != nil && o != nil && *n < *o) {
		return field.ErrorList{field.Invalid(p.Child("collisionCount"), deref(n), "cannot be decremented")}
	}
	return nil
}

// validateWorkloadTemplate checks a template against its selector and the
// rules shared by DaemonSets, ReplicaSets and Deployments.
func validateWorkloadTemplate(t *corev1.PodTemplateSpec, kind string, fldPath *field.Path) field.ErrorList {
	errs := validatePodTemplateSpec(t, fldPath)
	if t.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(fldPath.Child("spec", "restartPolicy"), t.Spec.RestartPolicy, []string{string(corev1.RestartPolicyAlways)}))
	}
	if t.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Forbidden(fldPath.Child("spec", "activeDeadlineSeconds"), "activeDeadlineSeconds in "+kind+" is not Supported"))
	}
	return errs
}

func templateMatches(sel *metav1.LabelSelector, t *corev1.PodTemplateSpec, fldPath *field.Path, invalidMsg string) field.ErrorList {
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return field.ErrorList{field.Invalid(fldPath.Child("selector"), sel, invalidMsg)}
	}
	if !selector.Empty() && !selector.Matches(labels.Set(t.Labels)) {
		return field.ErrorList{field.Invalid(fldPath.Child("template", "metadata", "labels"), t.Labels, "`selector` does not match template `labels`")}
	}
	return nil
}

func validateDaemonSetSpec(spec *appsv1.DaemonSetSpec, fldPath *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabelSelector(spec.Selector, metav1validation.LabelSelectorValidationOptions{}, fldPath.Child("selector"))
	if selector, err := metav1.LabelSelectorAsSelector(spec.Selector); err == nil && !selector.Matches(labels.Set(spec.Template.Labels)) {
		errs = append(errs, field.Invalid(fldPath.Child("template", "metadata", "labels"), spec.Template.Labels, "`selector` does not match template `labels`"))
	}
	if spec.Selector != nil && len(spec.Selector.MatchLabels)+len(spec.Selector.MatchExpressions) == 0 {
		errs = append(errs, field.Invalid(fldPath.Child("selector"), spec.Selector, "empty selector is invalid for daemonset"))
	}
	errs = append(errs, validateWorkloadTemplate(&spec.Template, "DaemonSet", fldPath.Child("template"))...)
	errs = append(errs, nonneg(int64(spec.MinReadySeconds), fldPath.Child("minReadySeconds"))...)
	us, usPath := spec.UpdateStrategy, fldPath.Child("updateStrategy")
	switch us.Type {
	case appsv1.OnDeleteDaemonSetStrategyType:
	case appsv1.RollingUpdateDaemonSetStrategyType:
		rp := usPath.Child("rollingUpdate")
		if us.RollingUpdate == nil {
			errs = append(errs, field.Required(rp, ""))
			break
		}
		mu, ms := deref(us.RollingUpdate.MaxUnavailable), deref(us.RollingUpdate.MaxSurge)
		errs = append(errs, validatePositiveIntOrPercent(mu, rp.Child("maxUnavailable"))...)
		errs = append(errs, validatePositiveIntOrPercent(ms, rp.Child("maxSurge"))...)
		errs = append(errs, notMoreThan100Percent(mu, rp.Child("maxUnavailable"))...)
		errs = append(errs, notMoreThan100Percent(ms, rp.Child("maxSurge"))...)
		hasU, hasS := intOrPercentValue(mu) != 0, intOrPercentValue(ms) != 0
		if hasU && hasS {
			errs = append(errs, field.Invalid(rp.Child("maxSurge"), us.RollingUpdate.MaxSurge, "may not be set when maxUnavailable is non-zero"))
		} else if !hasU && !hasS {
			errs = append(errs, field.Required(rp.Child("maxUnavailable"), "cannot be 0 when maxSurge is 0"))
		}
	default:
		errs = append(errs, field.NotSupported(usPath, us, []string{string(appsv1.RollingUpdateDaemonSetStrategyType), string(appsv1.OnDeleteDaemonSetStrategyType)}))
	}
	if spec.RevisionHistoryLimit != nil {
		errs = append(errs, nonneg(int64(*spec.RevisionHistoryLimit), fldPath.Child("revisionHistoryLimit"))...)
	}
	return errs
}

func validateDaemonSet(d *appsv1.DaemonSet) field.ErrorList {
	errs := validateObjectMeta(&d.ObjectMeta, true, nameIsSubdomain, metaPath)
	return append(errs, validateDaemonSetSpec(&d.Spec, field.NewPath("spec"))...)
}

func validateDaemonSetUpdate(d, old *appsv1.DaemonSet) field.ErrorList {
	errs := validateObjectMetaUpdate(&d.ObjectMeta, &old.ObjectMeta, metaPath)
	errs = append(errs, validateDaemonSetSpec(&d.Spec, field.NewPath("spec"))...)
	// The selector is immutable in apps/v1.
	return append(errs, apimachineryvalidation.ValidateImmutableField(d.Spec.Selector, old.Spec.Selector, field.NewPath("spec").Child("selector"))...)
}

func validateDaemonSetStatusUpdate(d, old *appsv1.DaemonSet) field.ErrorList {
	errs := validateObjectMetaUpdate(&d.ObjectMeta, &old.ObjectMeta, metaPath)
	p, s := field.NewPath("status"), d.Status
	for _, f := range []struct {
		v    int64
		name string
	}{{int64(s.CurrentNumberScheduled), "currentNumberScheduled"}, {int64(s.NumberMisscheduled), "numberMisscheduled"},
		{int64(s.DesiredNumberScheduled), "desiredNumberScheduled"}, {int64(s.NumberReady), "numberReady"},
		{s.ObservedGeneration, "observedGeneration"}, {int64(s.UpdatedNumberScheduled), "updatedNumberScheduled"},
		{int64(s.NumberAvailable), "numberAvailable"}, {int64(s.NumberUnavailable), "numberUnavailable"}} {
		errs = append(errs, nonneg(f.v, p.Child(f.name))...)
	}
	if s.CollisionCount != nil {
		errs = append(errs, nonneg(int64(*s.CollisionCount), p.Child("collisionCount"))...)
	}
	return append(errs, collisionDecrement(s.CollisionCount, old.Status.CollisionCount, p)...)
}

func validateReplicaSetSpec(spec *appsv1.ReplicaSetSpec, fldPath *field.Path) field.ErrorList {
	errs := nonneg(int64(deref(spec.Replicas)), fldPath.Child("replicas"))
	errs = append(errs, nonneg(int64(spec.MinReadySeconds), fldPath.Child("minReadySeconds"))...)
	errs = append(errs, validateSelector(spec.Selector, "deployment", fldPath.Child("selector"))...)
	errs = append(errs, templateMatches(spec.Selector, &spec.Template, fldPath, "invalid label selector")...)
	if _, err := metav1.LabelSelectorAsSelector(spec.Selector); err == nil {
		errs = append(errs, validateWorkloadTemplate(&spec.Template, "ReplicaSet", fldPath.Child("template"))...)
	}
	return errs
}

func validateReplicaSet(r *appsv1.ReplicaSet) field.ErrorList {
	errs := validateObjectMeta(&r.ObjectMeta, true, nameIsSubdomain, metaPath)
	return append(errs, validateReplicaSetSpec(&r.Spec, field.NewPath("spec"))...)
}

func validateReplicaSetUpdate(r, old *appsv1.ReplicaSet) field.ErrorList {
	errs := validateObjectMetaUpdate(&r.ObjectMeta, &old.ObjectMeta, metaPath)
	errs = append(errs, validateReplicaSetSpec(&r.Spec, field.NewPath("spec"))...)
	return append(errs, apimachineryvalidation.ValidateImmutableField(r.Spec.Selector, old.Spec.Selector, field.NewPath("spec").Child("selector"))...)
}

func validateReplicaSetStatusUpdate(r, old *appsv1.ReplicaSet) field.ErrorList {
	errs := validateObjectMetaUpdate(&r.ObjectMeta, &old.ObjectMeta, metaPath)
	s := r.Status
	return append(errs, validateReplicaCounts(field.NewPath("status"), s.Replicas, s.FullyLabeledReplicas, s.ReadyReplicas, s.AvailableReplicas, s.ObservedGeneration)...)
}

func validateDeploymentSpec(spec *appsv1.DeploymentSpec, fldPath *field.Path) field.ErrorList {
	errs := nonneg(int64(deref(spec.Replicas)), fldPath.Child("replicas"))
	errs = append(errs, validateSelector(spec.Selector, "deployment", fldPath.Child("selector"))...)
	errs = append(errs, templateMatches(spec.Selector, &spec.Template, fldPath, "invalid label selector")...)
	if _, err := metav1.LabelSelectorAsSelector(spec.Selector); err == nil {
		errs = append(errs, validateWorkloadTemplate(&spec.Template, "ReplicaSet", fldPath.Child("template"))...)
	}
	st, sp := spec.Strategy, fldPath.Child("strategy")
	switch st.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if st.RollingUpdate != nil {
			errs = append(errs, field.Forbidden(sp.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'"))
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		rp := sp.Child("rollingUpdate")
		if st.RollingUpdate == nil {
			errs = append(errs, field.Required(rp, "this should be defaulted and never be nil"))
			break
		}
		mu, ms := deref(st.RollingUpdate.MaxUnavailable), deref(st.RollingUpdate.MaxSurge)
		errs = append(errs, validatePositiveIntOrPercent(mu, rp.Child("maxUnavailable"))...)
		errs = append(errs, validatePositiveIntOrPercent(ms, rp.Child("maxSurge"))...)
		if intOrPercentValue(mu) == 0 && intOrPercentValue(ms) == 0 {
			errs = append(errs, field.Invalid(rp.Child("maxUnavailable"), mu, "may not be 0 when `maxSurge` is 0"))
		}
		errs = append(errs, notMoreThan100Percent(mu, rp.Child("maxUnavailable"))...)
	default:
		errs = append(errs, field.NotSupported(sp, st, []string{string(appsv1.RecreateDeploymentStrategyType), string(appsv1.RollingUpdateDeploymentStrategyType)}))
	}
	errs = append(errs, nonneg(int64(spec.MinReadySeconds), fldPath.Child("minReadySeconds"))...)
	if spec.RevisionHistoryLimit != nil {
		errs = append(errs, nonneg(int64(*spec.RevisionHistoryLimit), fldPath.Child("revisionHistoryLimit"))...)
	}
	if p := spec.ProgressDeadlineSeconds; p != nil {
		errs = append(errs, nonneg(int64(*p), fldPath.Child("progressDeadlineSeconds"))...)
		if *p <= spec.MinReadySeconds {
			errs = append(errs, field.Invalid(fldPath.Child("progressDeadlineSeconds"), spec.ProgressDeadlineSeconds, "must be greater than minReadySeconds"))
		}
	}
	return errs
}

func validateDeployment(d *appsv1.Deployment) field.ErrorList {
	errs := validateObjectMeta(&d.ObjectMeta, true, nameIsSubdomain, metaPath)
	return append(errs, validateDeploymentSpec(&d.Spec, field.NewPath("spec"))...)
}

func validateDeploymentUpdate(d, old *appsv1.Deployment) field.ErrorList {
	errs := validateObjectMetaUpdate(&d.ObjectMeta, &old.ObjectMeta, metaPath)
	errs = append(errs, validateDeploymentSpec(&d.Spec, field.NewPath("spec"))...)
	return append(errs, apimachineryvalidation.ValidateImmutableField(d.Spec.Selector, old.Spec.Selector, field.NewPath("spec").Child("selector"))...)
}

func validateDeploymentStatusUpdate(d, old *appsv1.Deployment) field.ErrorList {
	errs := validateObjectMetaUpdate(&d.ObjectMeta, &old.ObjectMeta, metaPath)
	p, s := field.NewPath("status"), d.Status
	errs = append(errs, nonneg(s.ObservedGeneration, p.Child("observedGeneration"))...)
	for _, f := range []struct {
		v    int32
		name string
	}{{s.Replicas, "replicas"}, {s.UpdatedReplicas, "updatedReplicas"}, {s.ReadyReplicas, "readyReplicas"}, {s.AvailableReplicas, "availableReplicas"}, {s.UnavailableReplicas, "unavailableReplicas"}} {
		errs = append(errs, nonneg(int64(f.v), p.Child(f.name))...)
	}
	if s.CollisionCount != nil {
		errs = append(errs, nonneg(int64(*s.CollisionCount), p.Child("collisionCount"))...)
	}
	const msg = "cannot be greater than status.replicas"
	for _, f := range []struct {
		v    int32
		name string
	}{{s.UpdatedReplicas, "updatedReplicas"}, {s.ReadyReplicas, "readyReplicas"}, {s.AvailableReplicas, "availableReplicas"}} {
		if f.v > s.Replicas {
			errs = append(errs, field.Invalid(p.Child(f.name), f.v, msg))
		}
	}
	if s.AvailableReplicas > s.ReadyReplicas {
		errs = append(errs, field.Invalid(p.Child("availableReplicas"), s.AvailableReplicas, "cannot be greater than readyReplicas"))
	}
	return append(errs, collisionDecrement(s.CollisionCount, old.Status.CollisionCount, p)...)
}

func validateControllerRevision(r *appsv1.ControllerRevision) field.ErrorList {
	errs := validateObjectMeta(&r.ObjectMeta, true, nameIsSubdomain, metaPath)
	if r.Data.Raw == nil && r.Data.Object == nil {
		errs = append(errs, field.Required(field.NewPath("data"), "data is mandatory"))
	}
	return append(errs, nonneg(r.Revision, field.NewPath("revision"))...)
}

func validateControllerRevisionUpdate(r, old *appsv1.ControllerRevision) field.ErrorList {
	errs := validateObjectMetaUpdate(&r.ObjectMeta, &old.ObjectMeta, metaPath)
	errs = append(errs, validateControllerRevision(r)...)
	return append(errs, apimachineryvalidation.ValidateImmutableField(r.Data, old.Data, field.NewPath("data"))...)
}

func validatePositiveIntOrPercent(v intstr.IntOrString, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch v.Type {
	case intstr.String:
		for _, msg := range validation.IsValidPercent(v.StrVal) {
			errs = append(errs, field.Invalid(fldPath, v, msg))
		}
	case intstr.Int:
		errs = append(errs, nonneg(int64(v.IntValue()), fldPath)...)
	default:
		errs = append(errs, field.Invalid(fldPath, v, "must be an integer or percentage (e.g '5%%')"))
	}
	return errs
}

func percentValue(v intstr.IntOrString) (int, bool) {
	if v.Type != intstr.String || len(validation.IsValidPercent(v.StrVal)) != 0 {
		return 0, false
	}
	n, _ := strconv.Atoi(v.StrVal[:len(v.StrVal)-1])
	return n, true
}

func intOrPercentValue(v intstr.IntOrString) int {
	if n, ok := percentValue(v); ok {
		return n
	}
	return v.IntValue()
}

func notMoreThan100Percent(v intstr.IntOrString, fldPath *field.Path) field.ErrorList {
	if n, ok := percentValue(v); ok && n > 100 {
		return field.ErrorList{field.Invalid(fldPath, v, "must not be greater than 100%")}
	}
	return nil
}
