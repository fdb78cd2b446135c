package namespace

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The status conditions of a namespace being deleted, with upstream's types,
// reasons and messages.

// conditionTypes are the condition types the controller maintains, in order.
func conditionTypes() []corev1.NamespaceConditionType {
	return []corev1.NamespaceConditionType{
		corev1.NamespaceDeletionDiscoveryFailure,
		corev1.NamespaceDeletionGVParsingFailure,
		corev1.NamespaceDeletionContentFailure,
		corev1.NamespaceContentRemaining,
		corev1.NamespaceFinalizersRemaining,
	}
}

// okCondition is the condition of a type when nothing is wrong.
func okCondition(t corev1.NamespaceConditionType) corev1.NamespaceCondition {
	reason, message := "", ""
	switch t {
	case corev1.NamespaceDeletionDiscoveryFailure:
		reason, message = "ResourcesDiscovered", "All resources successfully discovered"
	case corev1.NamespaceDeletionGVParsingFailure:
		reason, message = "ParsedGroupVersions", "All legacy kube types successfully parsed"
	case corev1.NamespaceDeletionContentFailure:
		reason, message = "ContentDeleted", "All content successfully deleted, may be waiting on finalization"
	case corev1.NamespaceContentRemaining, corev1.NamespaceFinalizersRemaining:
		reason, message = "ContentRemoved", "All content successfully removed"
	}
	return corev1.NamespaceCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: metav1.Now(), Reason: reason, Message: message}
}

// remaining is what is left in a namespace after a deletion pass.
type remaining struct {
	byResource  map[schema.GroupVersionResource]int
	byFinalizer map[string]int
}

// failureConditions are the conditions that report problems: content that
// could not be deleted (errs), content and finalizers remaining.
func failureConditions(errs []error, left remaining) []corev1.NamespaceCondition {
	var out []corev1.NamespaceCondition
	now := metav1.Now()
	if len(errs) > 0 {
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		sort.Strings(msgs)
		out = append(out, corev1.NamespaceCondition{
			Type: corev1.NamespaceDeletionContentFailure, Status: corev1.ConditionTrue, LastTransitionTime: now,
			Reason:  "ContentDeletionFailed",
			Message: fmt.Sprintf("Failed to delete all resource types, %d remaining: %v", len(errs), strings.Join(msgs, ", ")),
		})
	}
	var resources []string
	for gvr, n := range left.byResource {
		if n > 0 {
			resources = append(resources, fmt.Sprintf("%s.%s has %d resource instances", gvr.Resource, gvr.Group, n))
		}
	}
	if len(resources) > 0 {
		sort.Strings(resources)
		out = append(out, corev1.NamespaceCondition{
			Type: corev1.NamespaceContentRemaining, Status: corev1.ConditionTrue, LastTransitionTime: now,
			Reason:  "SomeResourcesRemain",
			Message: fmt.Sprintf("Some resources are remaining: %s", strings.Join(resources, ", ")),
		})
	}
	var finalizers []string
	for f, n := range left.byFinalizer {
		if n > 0 {
			finalizers = append(finalizers, fmt.Sprintf("%s in %d resource instances", f, n))
		}
	}
	if len(finalizers) > 0 {
		sort.Strings(finalizers)
		out = append(out, corev1.NamespaceCondition{
			Type: corev1.NamespaceFinalizersRemaining, Status: corev1.ConditionTrue, LastTransitionTime: now,
			Reason:  "SomeFinalizerRemain",
			Message: fmt.Sprintf("Some finalizers are remaining: %s", strings.Join(finalizers, ", ")),
		})
	}
	return out
}

// updateConditions sets every maintained condition of status: the failure
// one when given, else the OK one. The transition time changes only with
// the status. It reports whether anything changed.
func updateConditions(status *corev1.NamespaceStatus, failures []corev1.NamespaceCondition) bool {
	changed := false
	for _, t := range conditionTypes() {
		want := okCondition(t)
		if c := findCondition(failures, t); c != nil {
			want = *c
		}
		have := findCondition(status.Conditions, t)
		switch {
		case have == nil:
			status.Conditions = append(status.Conditions, want)
			changed = true
		case have.Status != want.Status || have.Reason != want.Reason || have.Message != want.Message:
			if have.Status != want.Status {
				have.LastTransitionTime = metav1.Now()
			}
			have.Status, have.Reason, have.Message = want.Status, want.Reason, want.Message
			changed = true
		}
	}
	return changed
}

func findCondition(conds []corev1.NamespaceCondition, t corev1.NamespaceConditionType) *corev1.NamespaceCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}
