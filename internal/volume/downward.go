package volume

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
)

// downwardAPIPayload is one file per item: a pod field (fieldRef) or a
// container resource (resourceFieldRef). Every failing item is reported,
// together, as upstream.
func downwardAPIPayload(items []corev1.DownwardAPIVolumeFile, pod *corev1.Pod, defaultMode *int32, allocatable corev1.ResourceList) (map[string]fileProjection, error) {
	mode := modeOr(defaultMode, corev1.DownwardAPIVolumeSourceDefaultMode)
	out := make(map[string]fileProjection, len(items))
	var errs []error
	for _, it := range items {
		fp := fileProjection{Mode: modeOr(it.Mode, mode)}
		switch {
		case it.FieldRef != nil:
			v, err := PodFieldValue(pod, it.FieldRef.FieldPath)
			if err != nil {
				errs = append(errs, err)
			}
			fp.Data = []byte(v)
		case it.ResourceFieldRef != nil:
			v, err := ContainerResourceValue(it.ResourceFieldRef, pod, allocatable)
			if err != nil {
				errs = append(errs, err)
			}
			fp.Data = []byte(v)
		}
		out[filepath.Clean(it.Path)] = fp
	}
	return out, utilerrors.NewAggregate(errs)
}

// PodFieldValue is a pod field as a downwardAPI volume shows it. Volumes
// take only the metadata fields (the API server rejects the others in a
// volume, and upstream's kubelet reports them as unsupported): name,
// namespace, uid, labels and annotations (all of them, as key="value"
// lines sorted by key, or one with a ['key'] subscript).
func PodFieldValue(pod *corev1.Pod, fieldPath string) (string, error) {
	if path, key, ok := splitSubscript(fieldPath); ok {
		switch path {
		case "metadata.annotations":
			if errs := validation.IsQualifiedName(strings.ToLower(key)); len(errs) != 0 {
				return "", fmt.Errorf("invalid key subscript in %s: %s", fieldPath, strings.Join(errs, ";"))
			}
			return pod.Annotations[key], nil
		case "metadata.labels":
			if errs := validation.IsQualifiedName(key); len(errs) != 0 {
				return "", fmt.Errorf("invalid key subscript in %s: %s", fieldPath, strings.Join(errs, ";"))
			}
			return pod.Labels[key], nil
		default:
			return "", fmt.Errorf("fieldPath %q does not support subscript", fieldPath)
		}
	}
	switch fieldPath {
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	}
	return "", fmt.Errorf("unsupported fieldPath: %v", fieldPath)
}

// splitSubscript splits "metadata.labels['key']" into its path and key.
func splitSubscript(fieldPath string) (path, key string, ok bool) {
	if !strings.HasSuffix(fieldPath, "']") {
		return fieldPath, "", false
	}
	path, key, found := strings.Cut(strings.TrimSuffix(fieldPath, "']"), "['")
	if !found || path == "" {
		return fieldPath, "", false
	}
	return path, key, true
}

// formatMap is upstream's rendering of labels and annotations: one
// key="value" line per entry (the value Go-quoted), sorted by key, with
// no newline after the last.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%v=%q", k, m[k])
	}
	return b.String()
}

// ContainerResourceValue is a container's limit or request in units of
// the divisor (1 when unset), rounded up, as upstream. A limit the
// container does not set is the node's allocatable amount (cpu, memory,
// ephemeral-storage); a request it does not set is 0.
func ContainerResourceValue(sel *corev1.ResourceFieldSelector, pod *corev1.Pod, allocatable corev1.ResourceList) (string, error) {
	c := findContainer(pod, sel.ContainerName)
	if c == nil {
		return "", fmt.Errorf("container %s not found", sel.ContainerName)
	}
	limits := corev1.ResourceList{}
	for k, v := range c.Resources.Limits {
		limits[k] = v
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		if q, ok := limits[name]; !ok || q.IsZero() {
			if a, ok := allocatable[name]; ok {
				limits[name] = a.DeepCopy()
			}
		}
	}
	divisor := resource.MustParse("1")
	if !sel.Divisor.IsZero() {
		divisor = sel.Divisor
	}
	requests := c.Resources.Requests
	switch sel.Resource {
	case "limits.cpu":
		return cpuIn(limits.Cpu(), divisor), nil
	case "limits.memory":
		return bytesIn(limits.Memory(), divisor), nil
	case "limits.ephemeral-storage":
		return bytesIn(limits.StorageEphemeral(), divisor), nil
	case "requests.cpu":
		return cpuIn(requests.Cpu(), divisor), nil
	case "requests.memory":
		return bytesIn(requests.Memory(), divisor), nil
	case "requests.ephemeral-storage":
		return bytesIn(requests.StorageEphemeral(), divisor), nil
	}
	for prefix, list := range map[string]corev1.ResourceList{"requests.": requests, "limits.": limits} {
		if name, ok := strings.CutPrefix(sel.Resource, prefix); ok && strings.HasPrefix(name, corev1.ResourceHugePagesPrefix) {
			return bytesIn(list.Name(corev1.ResourceName(name), resource.BinarySI), divisor), nil
		}
	}
	return "", fmt.Errorf("unsupported container resource : %v", sel.Resource)
}

func cpuIn(q *resource.Quantity, divisor resource.Quantity) string {
	return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10)
}

func bytesIn(q *resource.Quantity, divisor resource.Quantity) string {
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10)
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}
