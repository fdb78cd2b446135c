package apiserver

import (
	"context"
	"fmt"
	"sort"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/moorage/moorage/internal/store"
)

// Pod Security admission, as upstream's PodSecurity plugin with its default
// configuration (every level privileged unless a namespace label says
// otherwise, no exemptions):
//
//   - enforce: a pod that breaks its namespace's
//     pod-security.kubernetes.io/enforce level is refused ("violates
//     PodSecurity ...");
//   - warn: a pod, or a workload's pod template, that breaks the warn level
//     (which defaults to a stricter enforce level) gets a Warning ("would
//     violate PodSecurity ...");
//   - namespaces: invalid level or version labels are refused on create and
//     when changed; tightening the enforce level warns about the existing
//     pods that break it.
//
// The checks are upstream's own (k8s.io/pod-security-admission/policy). The
// audit mode is not served: moorage keeps no audit log to annotate.

var (
	psaOnce      sync.Once
	psaEvaluator policy.Evaluator
	psaErr       error
)

func podSecurityEvaluator() (policy.Evaluator, error) {
	psaOnce.Do(func() { psaEvaluator, psaErr = policy.NewEvaluator(policy.DefaultChecks()) })
	return psaEvaluator, psaErr
}

// psaDefaults is upstream's default configuration: privileged, latest.
var psaDefaults = psaapi.Policy{
	Enforce: psaapi.LevelVersion{Level: psaapi.LevelPrivileged, Version: psaapi.LatestVersion()},
	Audit:   psaapi.LevelVersion{Level: psaapi.LevelPrivileged, Version: psaapi.LatestVersion()},
	Warn:    psaapi.LevelVersion{Level: psaapi.LevelPrivileged, Version: psaapi.LatestVersion()},
}

// namespacePolicy is the policy of a pod's namespace. Labels that do not
// parse count as restricted (upstream fails closed for enforce, open for
// warn).
func (s *Server) namespacePolicy(ctx context.Context, ns string) (psaapi.Policy, bool) {
	obj, _, err := s.objects.get(ctx, s.resourceByPlural("namespaces"), "", ns)
	if err != nil {
		return psaDefaults, false // the namespace check reports a missing namespace
	}
	p, _ := psaapi.PolicyToEvaluate(obj.(*corev1.Namespace).Labels, psaDefaults)
	return p, true
}

// admitPodSecurity checks a pod (create, or an update that changes its
// containers) against its namespace's enforce and warn levels.
func (s *Server) admitPodSecurity(ctx context.Context, pod, old *corev1.Pod) ([]string, error) {
	if old != nil && !podSecurityRelevantUpdate(pod, old) {
		return nil, nil
	}
	p, ok := s.namespacePolicy(ctx, pod.Namespace)
	if !ok || p.FullyPrivileged() {
		return nil, nil
	}
	eval, err := podSecurityEvaluator()
	if err != nil {
		return nil, err
	}
	enforce := policy.AggregateCheckResults(eval.EvaluatePod(p.Enforce, &pod.ObjectMeta, &pod.Spec))
	if !enforce.Allowed {
		return nil, apierrors.NewForbidden(s.resourceByPlural("pods").GroupResource(), pod.Name,
			fmt.Errorf("violates PodSecurity %q: %s", p.Enforce.String(), enforce.ForbiddenDetail()))
	}
	return podSecurityWarning(eval, p.Warn, &pod.ObjectMeta, &pod.Spec), nil
}

// podSecurityWarning is the warn mode's Warning for a pod or pod template.
func podSecurityWarning(eval policy.Evaluator, warn psaapi.LevelVersion, meta *metav1.ObjectMeta, spec *corev1.PodSpec) []string {
	if warn.Level == psaapi.LevelPrivileged {
		return nil
	}
	r := policy.AggregateCheckResults(eval.EvaluatePod(warn, meta, spec))
	if r.Allowed {
		return nil
	}
	return []string{fmt.Sprintf("would violate PodSecurity %q: %s", warn.String(), r.ForbiddenDetail())}
}

// podSecurityRelevantUpdate says whether a pod update can change what the
// checks see: as upstream, only changes to the containers (their number or
// images, the fields a pod's spec lets change) are evaluated again.
func podSecurityRelevantUpdate(pod, old *corev1.Pod) bool {
	changed := func(a, b []corev1.Container) bool {
		if len(a) != len(b) {
			return true
		}
		for i := range a {
			if a[i].Image != b[i].Image {
				return true
			}
		}
		return false
	}
	return changed(pod.Spec.Containers, old.Spec.Containers) ||
		changed(pod.Spec.InitContainers, old.Spec.InitContainers) ||
		len(pod.Spec.EphemeralContainers) != len(old.Spec.EphemeralContainers)
}

// podTemplateSecurityWarnings is the warn mode for workloads: their pod
// template is checked, never refused (as upstream).
func (s *Server) podTemplateSecurityWarnings(ctx context.Context, obj runtime.Object) []string {
	var tmpl *corev1.PodTemplateSpec
	switch o := obj.(type) {
	case *appsv1.Deployment:
		tmpl = &o.Spec.Template
	case *appsv1.ReplicaSet:
		tmpl = &o.Spec.Template
	case *appsv1.StatefulSet:
		tmpl = &o.Spec.Template
	case *appsv1.DaemonSet:
		tmpl = &o.Spec.Template
	case *corev1.ReplicationController:
		tmpl = o.Spec.Template
	default:
		return nil
	}
	if tmpl == nil {
		return nil
	}
	p, ok := s.namespacePolicy(ctx, m(obj).GetNamespace())
	if !ok {
		return nil
	}
	eval, err := podSecurityEvaluator()
	if err != nil {
		return nil
	}
	return podSecurityWarning(eval, p.Warn, &tmpl.ObjectMeta, &tmpl.Spec)
}

// admitNamespaceSecurity checks a namespace's Pod Security labels: invalid
// ones are refused when new or changed; a stricter enforce level warns about
// the namespace's pods that break it.
func (s *Server) admitNamespaceSecurity(ctx context.Context, ns, old *corev1.Namespace) ([]string, error) {
	p, errs := psaapi.PolicyToEvaluate(ns.Labels, psaDefaults)
	if old == nil {
		if len(errs) > 0 {
			return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Namespace").GroupKind(), ns.Name, errs)
		}
		return nil, nil
	}
	oldP, oldErrs := psaapi.PolicyToEvaluate(old.Labels, psaDefaults)
	if len(errs) > 0 && (len(oldErrs) == 0 || errs.ToAggregate().Error() != oldErrs.ToAggregate().Error()) {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Namespace").GroupKind(), ns.Name, errs)
	}
	switch {
	case p.Enforce == oldP.Enforce, p.Enforce.Level == psaapi.LevelPrivileged:
		return nil, nil
	case p.Enforce.Version == oldP.Enforce.Version && psaapi.CompareLevels(p.Enforce.Level, oldP.Enforce.Level) < 1:
		return nil, nil // relaxed
	}
	return s.existingPodViolations(ctx, ns.Name, p.Enforce)
}

// existingPodViolations lists, as upstream words it, the pods of a namespace
// that a new enforce level would refuse, grouped by reason.
func (s *Server) existingPodViolations(ctx context.Context, ns string, enforce psaapi.LevelVersion) ([]string, error) {
	eval, err := podSecurityEvaluator()
	if err != nil {
		return nil, err
	}
	res := s.resourceByPlural("pods")
	lr, err := s.objects.store.List(ctx, res.KeyPrefix(ns), store.ListOptions{})
	if err != nil {
		return nil, err
	}
	type group struct {
		first string
		count int
	}
	groups := map[string]*group{}
	for _, kv := range lr.KVs {
		obj, err := s.objects.decode(res, kv)
		if err != nil {
			return nil, err
		}
		pod := obj.(*corev1.Pod)
		r := policy.AggregateCheckResults(eval.EvaluatePod(enforce, &pod.ObjectMeta, &pod.Spec))
		if r.Allowed {
			continue
		}
		g := groups[r.ForbiddenReason()]
		if g == nil {
			g = &group{first: pod.Name}
			groups[r.ForbiddenReason()] = g
		}
		g.first, g.count = min(g.first, pod.Name), g.count+1
	}
	if len(groups) == 0 {
		return nil, nil
	}
	var lines []string
	for reason, g := range groups {
		switch g.count {
		case 1:
			lines = append(lines, fmt.Sprintf("%s: %s", g.first, reason))
		case 2:
			lines = append(lines, fmt.Sprintf("%s (and 1 other pod): %s", g.first, reason))
		default:
			lines = append(lines, fmt.Sprintf("%s (and %d other pods): %s", g.first, g.count-1, reason))
		}
	}
	sort.Strings(lines)
	head := fmt.Sprintf("existing pods in namespace %q violate the new PodSecurity enforce level %q", ns, enforce.String())
	return append([]string{head}, lines...), nil
}
