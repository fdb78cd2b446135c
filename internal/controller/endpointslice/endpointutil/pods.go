// Package endpointutil holds what the Endpoints and EndpointSlice
// controllers share, as upstream's k8s.io/endpointslice/util does: which
// Services a pod belongs to, which pods are published and how (ports,
// hostname, readiness), and the last-change trigger time.
package endpointutil

import (
	"fmt"
	"reflect"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// IsPodReady reports whether the pod's Ready condition is True.
func IsPodReady(pod *corev1.Pod) bool {
	c := readyCondition(&pod.Status)
	return c != nil && c.Status == corev1.ConditionTrue
}

func readyCondition(status *corev1.PodStatus) *corev1.PodCondition {
	for i := range status.Conditions {
		if status.Conditions[i].Type == corev1.PodReady {
			return &status.Conditions[i]
		}
	}
	return nil
}

// ShouldPodBeInEndpoints reports whether a pod is published at all: it has
// an IP, it has not terminated (Succeeded or Failed), and, unless
// includeTerminating, it is not being deleted.
func ShouldPodBeInEndpoints(pod *corev1.Pod, includeTerminating bool) bool {
	if p := pod.Status.Phase; p == corev1.PodSucceeded || p == corev1.PodFailed {
		return false
	}
	if pod.Status.PodIP == "" && len(pod.Status.PodIPs) == 0 {
		return false
	}
	return includeTerminating || pod.DeletionTimestamp == nil
}

// ShouldSetHostname reports whether the pod's address carries its hostname
// for svc: the pod names a hostname and svc as its subdomain, in svc's
// namespace (a StatefulSet pod and its governing Service).
func ShouldSetHostname(pod *corev1.Pod, svc *corev1.Service) bool {
	return pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name && pod.Namespace == svc.Namespace
}

// IsServiceIPSet reports whether the Service has a cluster IP (is neither
// headless nor ExternalName).
func IsServiceIPSet(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != corev1.ClusterIPNone && svc.Spec.ClusterIP != ""
}

// FindPort resolves a Service port's targetPort on a pod: a number is used
// as is; a name is looked up, with the same protocol, among the ports of the
// pod's containers and then of its sidecars (init containers that restart
// always).
func FindPort(pod *corev1.Pod, sp *corev1.ServicePort) (int32, error) {
	if sp.TargetPort.Type == intstr.Int {
		return sp.TargetPort.IntVal, nil
	}
	name := sp.TargetPort.StrVal
	match := func(containers []corev1.Container, sidecarsOnly bool) (int32, bool) {
		for _, c := range containers {
			if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for _, p := range c.Ports {
				if p.Name == name && p.Protocol == sp.Protocol {
					return p.ContainerPort, true
				}
			}
		}
		return 0, false
	}
	if n, ok := match(pod.Spec.Containers, false); ok {
		return n, nil
	}
	if n, ok := match(pod.Spec.InitContainers, true); ok {
		return n, nil
	}
	return 0, fmt.Errorf("pod %s/%s has no %s port named %q", pod.Namespace, pod.Name, sp.Protocol, name)
}

// ServicesForPod returns the keys (namespace/name) of the Services whose
// selector matches the pod. A Service without a selector matches nothing.
func ServicesForPod(services corelisters.ServiceLister, pod *corev1.Pod) ([]string, error) {
	list, err := services.Services(pod.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, svc := range list {
		if svc.Spec.Selector == nil {
			continue
		}
		if labels.ValidatedSetSelector(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			keys = append(keys, svc.Namespace+"/"+svc.Name)
		}
	}
	return keys, nil
}

// ServicesToSync returns the keys of the Services a pod update may change:
// none if nothing published changed; if the pod's labels, hostname or
// subdomain changed, those of the Services it joined or left (and, if its
// endpoint changed too, those of all its old and new Services); otherwise
// those of its Services.
func ServicesToSync(services corelisters.ServiceLister, old, cur *corev1.Pod) []string {
	if old.ResourceVersion == cur.ResourceVersion { // a resync
		return nil
	}
	endpointChanged, membershipChanged := podChanges(old, cur)
	if !endpointChanged && !membershipChanged {
		return nil
	}
	now, err := ServicesForPod(services, cur)
	if err != nil || !membershipChanged {
		return now
	}
	before, err := ServicesForPod(services, old)
	if err != nil {
		return now
	}
	if endpointChanged {
		return union(now, before)
	}
	var changed []string
	for _, k := range now {
		if !slices.Contains(before, k) {
			changed = append(changed, k)
		}
	}
	for _, k := range before {
		if !slices.Contains(now, k) {
			changed = append(changed, k)
		}
	}
	return changed
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, k := range b {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// podChanges says whether the pod's endpoint may have changed (deletion
// started, readiness, IPs) and whether its Service membership may have
// (labels, hostname, subdomain). Name, UID and node never change once the
// pod has an IP.
func podChanges(old, cur *corev1.Pod) (endpoint, membership bool) {
	membership = !reflect.DeepEqual(old.Labels, cur.Labels) ||
		old.Spec.Hostname != cur.Spec.Hostname || old.Spec.Subdomain != cur.Spec.Subdomain
	switch {
	case !old.DeletionTimestamp.Equal(cur.DeletionTimestamp), IsPodReady(old) != IsPodReady(cur):
		endpoint = true
	case len(old.Status.PodIPs) != len(cur.Status.PodIPs):
		endpoint = true
	default:
		for i := range old.Status.PodIPs {
			if old.Status.PodIPs[i].IP != cur.Status.PodIPs[i].IP {
				endpoint = true
			}
		}
	}
	return endpoint, membership
}

// PodFromDeletion returns the pod of a delete notification, which may be
// a tombstone; nil if there is none.
func PodFromDeletion(obj any) *corev1.Pod {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, _ := obj.(*corev1.Pod)
	return pod
}
