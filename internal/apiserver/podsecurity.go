package apiserver

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Pod Security admission, enforce mode: a namespace labelled
// pod-security.kubernetes.io/enforce=baseline (or restricted) refuses pods
// that break that level of the Pod Security Standards (hostPath volumes,
// privileged containers, host namespaces, ...), with upstream's message.
// The checks are upstream's own (k8s.io/pod-security-admission/policy);
// the warn and audit modes are not served.

var (
	psaOnce      sync.Once
	psaEvaluator policy.Evaluator
	psaErr       error
)

func podSecurityEvaluator() (policy.Evaluator, error) {
	psaOnce.Do(func() { psaEvaluator, psaErr = policy.NewEvaluator(policy.DefaultChecks()) })
	return psaEvaluator, psaErr
}

// admitPodSecurity checks a new pod against its namespace's enforce level.
func (s *Server) admitPodSecurity(ctx context.Context, pod *corev1.Pod) error {
	nsRes := s.resourceByPlural("namespaces")
	obj, _, err := s.objects.get(ctx, nsRes, "", pod.Namespace)
	if err != nil {
		return nil // the namespace check reports a missing namespace
	}
	labels := obj.(*corev1.Namespace).Labels
	levelLabel, ok := labels[psaapi.EnforceLevelLabel]
	if !ok {
		return nil
	}
	level, err := psaapi.ParseLevel(levelLabel)
	if err != nil {
		return apierrors.NewForbidden(s.resourceByPlural("pods").GroupResource(), pod.Name,
			fmt.Errorf("namespace %s has an invalid %s label: %v", pod.Namespace, psaapi.EnforceLevelLabel, err))
	}
	version := psaapi.LatestVersion()
	versionName := "latest"
	if v, ok := labels[psaapi.EnforceVersionLabel]; ok && v != "latest" {
		if version, err = psaapi.ParseVersion(v); err != nil {
			return apierrors.NewForbidden(s.resourceByPlural("pods").GroupResource(), pod.Name,
				fmt.Errorf("namespace %s has an invalid %s label: %v", pod.Namespace, psaapi.EnforceVersionLabel, err))
		}
		versionName = v
	}
	if level == psaapi.LevelPrivileged {
		return nil
	}
	eval, err := podSecurityEvaluator()
	if err != nil {
		return err
	}
	results := eval.EvaluatePod(psaapi.LevelVersion{Level: level, Version: version}, &pod.ObjectMeta, &pod.Spec)
	var reasons []string
	for _, r := range results {
		if r.Allowed {
			continue
		}
		reason := r.ForbiddenReason
		if r.ForbiddenDetail != "" {
			reason += " (" + r.ForbiddenDetail + ")"
		}
		reasons = append(reasons, reason)
	}
	if len(reasons) == 0 {
		return nil
	}
	return apierrors.NewForbidden(s.resourceByPlural("pods").GroupResource(), pod.Name,
		fmt.Errorf("violates PodSecurity %q: %s", string(level)+":"+versionName, strings.Join(reasons, ", ")))
}
