package statefulset

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubectl/pkg/util/podutils"
	"k8s.io/utils/ptr"
)

var (
	setKind = appsv1.SchemeGroupVersion.WithKind("StatefulSet")
	podKind = corev1.SchemeGroupVersion.WithKind("Pod")
)

// podNamePattern splits a pod name into its set's name and its ordinal.
var podNamePattern = regexp.MustCompile("(.*)-([0-9]+)$")

// parentAndOrdinal returns the set name and ordinal a pod's name encodes;
// "" and -1 when it encodes none.
func parentAndOrdinal(pod *corev1.Pod) (string, int) {
	m := podNamePattern.FindStringSubmatch(pod.Name)
	if len(m) < 3 {
		return "", -1
	}
	ordinal := -1
	if n, err := strconv.ParseInt(m[2], 10, 32); err == nil {
		ordinal = int(n)
	}
	return m[1], ordinal
}

func ordinalOf(pod *corev1.Pod) int {
	_, ordinal := parentAndOrdinal(pod)
	return ordinal
}

// isMember says whether pod's name says it belongs to set.
func isMember(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	parent, _ := parentAndOrdinal(pod)
	return parent == set.Name
}

// startOrdinal is spec.ordinals.start, or 0.
func startOrdinal(set *appsv1.StatefulSet) int {
	if set.Spec.Ordinals != nil {
		return int(set.Spec.Ordinals.Start)
	}
	return 0
}

// endOrdinal is the last ordinal in range (inclusive).
func endOrdinal(set *appsv1.StatefulSet) int {
	return startOrdinal(set) + int(*set.Spec.Replicas) - 1
}

func inOrdinalRange(pod *corev1.Pod, set *appsv1.StatefulSet) bool {
	o := ordinalOf(pod)
	return o >= startOrdinal(set) && o <= endOrdinal(set)
}

func podName(set *appsv1.StatefulSet, ordinal int) string {
	return fmt.Sprintf("%s-%d", set.Name, ordinal)
}

func claimName(set *appsv1.StatefulSet, template *corev1.PersistentVolumeClaim, ordinal int) string {
	return fmt.Sprintf("%s-%s-%d", template.Name, set.Name, ordinal)
}

// identityMatches says whether pod has the name, namespace and pod-name
// label of a member of set.
func identityMatches(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	parent, ordinal := parentAndOrdinal(pod)
	return ordinal >= 0 && parent == set.Name && pod.Name == podName(set, ordinal) &&
		pod.Namespace == set.Namespace && pod.Labels[appsv1.StatefulSetPodNameLabel] == pod.Name
}

// storageMatches says whether every claim template has a same-named pod
// volume using the pod's claim.
func storageMatches(set *appsv1.StatefulSet, pod *corev1.Pod) bool {
	ordinal := ordinalOf(pod)
	if ordinal < 0 {
		return false
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for i := range set.Spec.VolumeClaimTemplates {
		t := &set.Spec.VolumeClaimTemplates[i]
		v, ok := volumes[t.Name]
		if !ok || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claimName(set, t, ordinal) {
			return false
		}
	}
	return true
}

// podClaims returns, by template name, the claims a pod of set with
// ordinal uses: a template copy named for the pod, in the set's namespace,
// labelled with the template's labels and the selector's matchLabels.
func podClaims(set *appsv1.StatefulSet, ordinal int) map[string]*corev1.PersistentVolumeClaim {
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for i := range set.Spec.VolumeClaimTemplates {
		claim := set.Spec.VolumeClaimTemplates[i].DeepCopy()
		claim.Name = claimName(set, &set.Spec.VolumeClaimTemplates[i], ordinal)
		claim.Namespace = set.Namespace
		if claim.Labels == nil {
			claim.Labels = map[string]string{}
		}
		for k, v := range set.Spec.Selector.MatchLabels {
			claim.Labels[k] = v
		}
		claims[set.Spec.VolumeClaimTemplates[i].Name] = claim
	}
	return claims
}

// updateStorage points one volume per claim template at the pod's claim,
// replacing a template volume of the same name and keeping the others.
func updateStorage(set *appsv1.StatefulSet, pod *corev1.Pod) {
	claims := podClaims(set, ordinalOf(pod))
	var volumes []corev1.Volume
	for _, t := range set.Spec.VolumeClaimTemplates {
		volumes = append(volumes, corev1.Volume{Name: t.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claims[t.Name].Name},
		}})
	}
	for _, v := range pod.Spec.Volumes {
		if _, ok := claims[v.Name]; !ok {
			volumes = append(volumes, v)
		}
	}
	pod.Spec.Volumes = volumes
}

// updateIdentity gives pod its name, namespace and identity labels.
func updateIdentity(set *appsv1.StatefulSet, pod *corev1.Pod) {
	ordinal := ordinalOf(pod)
	pod.Name = podName(set, ordinal)
	pod.Namespace = set.Namespace
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[appsv1.StatefulSetPodNameLabel] = pod.Name
	pod.Labels[appsv1.PodIndexLabel] = strconv.Itoa(ordinal)
}

// newPod builds pod ordinal of set from its template, as upstream's
// GetPodFromTemplate plus identity (hostname and subdomain are set only
// here: they are immutable) and storage.
func newPod(set *appsv1.StatefulSet, ordinal int) *corev1.Pod {
	t := &set.Spec.Template
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name:            podName(set, ordinal),
		GenerateName:    generateNamePrefix(set.Name),
		Labels:          copyMap(t.Labels),
		Annotations:     copyMap(t.Annotations),
		Finalizers:      append([]string(nil), t.Finalizers...),
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(set, setKind)},
	}, Spec: *t.Spec.DeepCopy()}
	updateIdentity(set, pod)
	pod.Spec.Hostname = pod.Name
	pod.Spec.Subdomain = set.Spec.ServiceName
	updateStorage(set, pod)
	return pod
}

// newVersionedPod builds pod ordinal at the current revision when it is
// below the partition (or, without rollingUpdate, below the current
// replicas), else at the update revision; the revision name goes in the
// controller-revision-hash label. The condition keeps upstream's operator
// precedence: the partition applies whatever the strategy type.
func newVersionedPod(currentSet, updateSet *appsv1.StatefulSet, currentRevision, updateRevision string, ordinal int) *corev1.Pod {
	s := currentSet.Spec.UpdateStrategy
	start := startOrdinal(currentSet)
	if s.Type == appsv1.RollingUpdateStatefulSetStrategyType && s.RollingUpdate == nil && ordinal < start+int(currentSet.Status.CurrentReplicas) ||
		s.RollingUpdate != nil && ordinal < start+int(ptr.Deref(s.RollingUpdate.Partition, 0)) {
		pod := newPod(currentSet, ordinal)
		pod.Labels[appsv1.StatefulSetRevisionLabel] = currentRevision
		return pod
	}
	pod := newPod(updateSet, ordinal)
	pod.Labels[appsv1.StatefulSetRevisionLabel] = updateRevision
	return pod
}

// generateNamePrefix is upstream's pod generateName for a controller:
// name plus a dash, or the bare name if that is not a valid prefix.
func generateNamePrefix(name string) string {
	prefix := name + "-"
	if len(validation.NameIsDNSSubdomain(prefix, true)) != 0 {
		return name
	}
	return prefix
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func revisionOf(pod *corev1.Pod) string {
	return pod.Labels[appsv1.StatefulSetRevisionLabel]
}

// Pod states as the controller sees them.

func created(pod *corev1.Pod) bool     { return pod.Status.Phase != "" }
func pending(pod *corev1.Pod) bool     { return pod.Status.Phase == corev1.PodPending }
func terminating(pod *corev1.Pod) bool { return pod.DeletionTimestamp != nil }
func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

func runningAndReady(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && podutils.IsPodReady(pod)
}

func available(pod *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	return podutils.IsPodAvailable(pod, minReadySeconds, metav1.NewTime(now))
}

// healthy is Running and Ready and not being deleted.
func healthy(pod *corev1.Pod) bool { return runningAndReady(pod) && !terminating(pod) }
