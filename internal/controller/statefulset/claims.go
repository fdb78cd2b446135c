package statefulset

import (
	"context"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
)

const (
	retain = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	remove = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
)

// retentionPolicy is the set's policy, Retain/Retain when unset.
func retentionPolicy(set *appsv1.StatefulSet) appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy {
	if p := set.Spec.PersistentVolumeClaimRetentionPolicy; p != nil {
		return *p
	}
	return appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: retain, WhenScaled: retain}
}

// refersTo says whether ref names obj (kind and name; the UID may differ).
func refersTo(ref *metav1.OwnerReference, obj metav1.Object, gvk schema.GroupVersionKind) bool {
	return ref.APIVersion == gvk.GroupVersion().String() && ref.Kind == gvk.Kind && ref.Name == obj.GetName()
}

func hasOwnerRef(target, owner metav1.Object) bool {
	for _, ref := range target.GetOwnerReferences() {
		if ref.UID == owner.GetUID() {
			return true
		}
	}
	return false
}

// hasStaleOwnerRef says whether claim refers to obj's name with another UID
// (a previous incarnation of the set or pod).
func hasStaleOwnerRef(claim *corev1.PersistentVolumeClaim, obj metav1.Object, gvk schema.GroupVersionKind) bool {
	for i := range claim.OwnerReferences {
		if refersTo(&claim.OwnerReferences[i], obj, gvk) {
			return claim.OwnerReferences[i].UID != obj.GetUID()
		}
	}
	return false
}

// hasUnexpectedController says whether, under a deleting policy, the claim
// is controlled by something other than the set or pod, or refers to an
// old incarnation of either.
func hasUnexpectedController(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	if p := retentionPolicy(set); p.WhenScaled == retain && p.WhenDeleted == retain {
		return false
	}
	for i := range claim.OwnerReferences {
		ref := &claim.OwnerReferences[i]
		switch {
		case refersTo(ref, set, setKind):
			if ref.UID != set.UID {
				return true
			}
		case refersTo(ref, pod, podKind):
			if ref.UID != pod.UID {
				return true
			}
		case ref.Controller != nil && *ref.Controller:
			return true
		}
	}
	return false
}

// hasNonControllerOwner says whether the set or pod owns the claim without
// being marked its controller.
func hasNonControllerOwner(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	for _, ref := range claim.OwnerReferences {
		if (ref.UID == set.UID || ref.UID == pod.UID) && (ref.Controller == nil || !*ref.Controller) {
			return true
		}
	}
	return false
}

// claimOwnersUpToDate says whether the claim's ownerRefs follow the policy:
//
//	whenScaled/whenDeleted  refs
//	Retain/Retain           none to the set or pod
//	Retain/Delete           the set
//	Delete/Retain           the pod, once it is out of range (condemned)
//	Delete/Delete           the set while in range, the pod once condemned
//
// A claim referring to old incarnations, or controlled by another owner
// without our refs, is left as it is.
func claimOwnersUpToDate(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	if hasStaleOwnerRef(claim, set, setKind) || hasStaleOwnerRef(claim, pod, podKind) {
		return true
	}
	if hasUnexpectedController(claim, set, pod) {
		return !hasOwnerRef(claim, set) && !hasOwnerRef(claim, pod)
	}
	if hasNonControllerOwner(claim, set, pod) {
		return false
	}
	wantSet, wantPod := wantedOwners(set, pod)
	return hasOwnerRef(claim, set) == wantSet && hasOwnerRef(claim, pod) == wantPod
}

// wantedOwners says which of the set and the pod should own a claim of pod.
func wantedOwners(set *appsv1.StatefulSet, pod *corev1.Pod) (setOwns, podOwns bool) {
	p := retentionPolicy(set)
	condemned := !inOrdinalRange(pod, set)
	switch {
	case p.WhenScaled == retain && p.WhenDeleted == remove:
		return true, false
	case p.WhenScaled == remove && p.WhenDeleted == retain:
		return false, condemned
	case p.WhenScaled == remove && p.WhenDeleted == remove:
		return !condemned, condemned
	default: // Retain/Retain, and unknown values treated as Retain
		return false, false
	}
}

// setClaimOwners rewrites the claim's refs to the set and pod as the policy
// wants; with an unexpected controller, ours are only removed.
func setClaimOwners(claim *corev1.PersistentVolumeClaim, set *appsv1.StatefulSet, pod *corev1.Pod) {
	unexpected := hasUnexpectedController(claim, set, pod)
	refs := []metav1.OwnerReference{}
	for i := range claim.OwnerReferences {
		ref := &claim.OwnerReferences[i]
		if !refersTo(ref, set, setKind) && !refersTo(ref, pod, podKind) {
			refs = append(refs, *ref)
		}
	}
	if !unexpected {
		setOwns, podOwns := wantedOwners(set, pod)
		if podOwns {
			refs = append(refs, *metav1.NewControllerRef(pod, podKind))
		}
		if setOwns {
			refs = append(refs, *metav1.NewControllerRef(set, setKind))
		}
	}
	claim.OwnerReferences = refs
}

// createClaims creates the pod's missing claims, recording an event for
// each creation; a claim being deleted is an error (it blocks the pod).
func (s *syncPass) createClaims(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	var errs []error
	for _, claim := range sortedClaims(podClaims(set, ordinalOf(pod))) {
		existing, err := s.c.claims.PersistentVolumeClaims(claim.Namespace).Get(claim.Name)
		switch {
		case apierrors.IsNotFound(err):
			_, err := s.c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).Create(ctx, claim, metav1.CreateOptions{})
			if err != nil {
				errs = append(errs, fmt.Errorf("failed to create PVC %s: %s", claim.Name, err))
			}
			if err == nil || !apierrors.IsAlreadyExists(err) {
				s.c.claimEvent("create", set, pod, claim, err)
			}
		case err != nil:
			errs = append(errs, fmt.Errorf("failed to retrieve PVC %s: %s", claim.Name, err))
			s.c.claimEvent("create", set, pod, claim, err)
		case existing.DeletionTimestamp != nil:
			errs = append(errs, fmt.Errorf("pvc %s is being deleted", claim.Name))
		}
	}
	return utilerrors.NewAggregate(errs)
}

func sortedClaims(byTemplate map[string]*corev1.PersistentVolumeClaim) []*corev1.PersistentVolumeClaim {
	var out []*corev1.PersistentVolumeClaim
	for _, c := range byTemplate {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// claimsMatchPolicy says whether the ownerRefs of the pod's existing claims
// follow the retention policy.
func (s *syncPass) claimsMatchPolicy(set *appsv1.StatefulSet, pod *corev1.Pod) (bool, error) {
	ordinal := ordinalOf(pod)
	for i := range set.Spec.VolumeClaimTemplates {
		name := claimName(set, &set.Spec.VolumeClaimTemplates[i], ordinal)
		claim, err := s.c.claims.PersistentVolumeClaims(set.Namespace).Get(name)
		switch {
		case apierrors.IsNotFound(err):
			// created later
		case err != nil:
			return false, fmt.Errorf("Could not retrieve claim %s for %s when checking PVC deletion policy", name, pod.Name) // upstream's text
		case !claimOwnersUpToDate(claim, set, pod):
			return false, nil
		}
	}
	return true, nil
}

// updateClaimsForPolicy rewrites the ownerRefs of the pod's existing claims
// to follow the retention policy; the garbage collector then deletes a
// claim after its owner.
func (s *syncPass) updateClaimsForPolicy(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	ordinal := ordinalOf(pod)
	for i := range set.Spec.VolumeClaimTemplates {
		name := claimName(set, &set.Spec.VolumeClaimTemplates[i], ordinal)
		claim, err := s.c.claims.PersistentVolumeClaims(set.Namespace).Get(name)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return fmt.Errorf("could not retrieve claim %s for %s when checking PVC deletion policy: %w", name, pod.Name, err)
		}
		if hasUnexpectedController(claim, set, pod) {
			s.c.recorder.Event(set, corev1.EventTypeWarning, "ConflictingController",
				fmt.Sprintf("PersistentVolumeClaim %s has a conflicting OwnerReference that acts as a manging controller, the retention policy is ignored for this claim", name))
		}
		if claimOwnersUpToDate(claim, set, pod) {
			continue
		}
		claim = claim.DeepCopy()
		setClaimOwners(claim, set, pod)
		if _, err := s.c.client.CoreV1().PersistentVolumeClaims(claim.Namespace).Update(ctx, claim, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("could not update claim %s for delete policy ownerRefs: %w", name, err)
		}
	}
	return nil
}

// claimIsStale says whether, under whenScaled=Delete, one of the pod's
// claims still belongs to an earlier pod of the same name: the pod must
// wait for the garbage collector to delete it.
func (s *syncPass) claimIsStale(set *appsv1.StatefulSet, pod *corev1.Pod) (bool, error) {
	if retentionPolicy(set).WhenScaled == retain {
		return false, nil
	}
	for _, claim := range podClaims(set, ordinalOf(pod)) {
		existing, err := s.c.claims.PersistentVolumeClaims(claim.Namespace).Get(claim.Name)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return false, err
		case hasStaleOwnerRef(existing, pod, podKind):
			return true, nil
		}
	}
	return false, nil
}
