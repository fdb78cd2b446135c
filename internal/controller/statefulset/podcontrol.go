package statefulset

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// createPod creates the pod's claims, then the pod, then sets the claims'
// ownerRefs for the retention policy, as upstream's CreateStatefulPod.
func (s *syncPass) createPod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	if err := s.createClaims(ctx, set, pod); err != nil {
		s.c.podEvent("create", set, pod, err)
		return err
	}
	_, err := s.c.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := s.updateClaimsForPolicy(ctx, set, pod); err != nil {
		s.c.podEvent("update", set, pod, err)
		return err
	}
	s.c.podEvent("create", set, pod, err)
	return err
}

// createMissingClaims creates the claims of a Pending pod (one may have
// been deleted meanwhile) and sets their ownerRefs.
func (s *syncPass) createMissingClaims(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	if err := s.createClaims(ctx, set, pod); err != nil {
		return err
	}
	if err := s.updateClaimsForPolicy(ctx, set, pod); err != nil {
		s.c.podEvent("update", set, pod, err)
		return err
	}
	return nil
}

// updatePod restores the pod's identity and storage and its claims'
// ownerRefs, retrying on conflicts with a fresh copy.
func (s *syncPass) updatePod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	attempted := false
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		consistent := true
		if !identityMatches(set, pod) {
			updateIdentity(set, pod)
			consistent = false
		}
		if !storageMatches(set, pod) {
			updateStorage(set, pod)
			consistent = false
			if err := s.createClaims(ctx, set, pod); err != nil {
				s.c.podEvent("update", set, pod, err)
				return err
			}
		}
		match, err := s.claimsMatchPolicy(set, pod)
		if err != nil {
			s.c.podEvent("update", set, pod, err)
			return err
		}
		if !match {
			if err := s.updateClaimsForPolicy(ctx, set, pod); err != nil {
				s.c.podEvent("update", set, pod, err)
				return err
			}
			consistent = false
		}
		if consistent {
			return nil
		}
		attempted = true
		_, err = s.c.client.CoreV1().Pods(pod.Namespace).Update(ctx, pod, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if fresh, gerr := s.c.pods.Pods(set.Namespace).Get(pod.Name); gerr == nil {
			pod = fresh.DeepCopy()
		}
		return err
	})
	if attempted {
		s.c.podEvent("update", set, pod, err)
	}
	return err
}

// deletePod deletes the pod and records the outcome.
func (s *syncPass) deletePod(ctx context.Context, set *appsv1.StatefulSet, pod *corev1.Pod) error {
	err := s.c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{})
	s.c.podEvent("delete", set, pod, err)
	return err
}

// podEvent records, on the set, upstream's event for verb on a pod:
// SuccessfulCreate "create Pod web-0 in StatefulSet web successful", or
// FailedCreate "create Pod web-0 in StatefulSet web failed error: ...".
func (c *Controller) podEvent(verb string, set *appsv1.StatefulSet, pod *corev1.Pod, err error) {
	if err == nil {
		c.recorder.Event(set, corev1.EventTypeNormal, "Successful"+title(verb),
			fmt.Sprintf("%s Pod %s in StatefulSet %s successful", verb, pod.Name, set.Name))
		return
	}
	c.recorder.Event(set, corev1.EventTypeWarning, "Failed"+title(verb),
		fmt.Sprintf("%s Pod %s in StatefulSet %s failed error: %s", verb, pod.Name, set.Name, err))
}

// claimEvent records upstream's event for verb on a pod's claim:
// "create Claim www-web-0 Pod web-0 in StatefulSet web success".
func (c *Controller) claimEvent(verb string, set *appsv1.StatefulSet, pod *corev1.Pod, claim *corev1.PersistentVolumeClaim, err error) {
	if err == nil {
		c.recorder.Event(set, corev1.EventTypeNormal, "Successful"+title(verb),
			fmt.Sprintf("%s Claim %s Pod %s in StatefulSet %s success", verb, claim.Name, pod.Name, set.Name))
		return
	}
	c.recorder.Event(set, corev1.EventTypeWarning, "Failed"+title(verb),
		fmt.Sprintf("%s Claim %s for Pod %s in StatefulSet %s failed error: %s", verb, claim.Name, pod.Name, set.Name, err))
}

func title(verb string) string { return strings.ToUpper(verb[:1]) + verb[1:] }
