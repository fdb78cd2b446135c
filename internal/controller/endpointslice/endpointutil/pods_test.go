package endpointutil

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

func TestFindPort(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
		}}},
		InitContainers: []corev1.Container{
			{Ports: []corev1.ContainerPort{{Name: "init", ContainerPort: 1, Protocol: corev1.ProtocolTCP}}},
			{RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001, Protocol: corev1.ProtocolTCP}}},
		},
	}}
	for _, tc := range []struct {
		target   intstr.IntOrString
		protocol corev1.Protocol
		want     int32 // 0: not found
	}{
		{intstr.FromInt32(9000), corev1.ProtocolTCP, 9000},
		{intstr.FromString("http"), corev1.ProtocolTCP, 8080},
		{intstr.FromString("http"), corev1.ProtocolUDP, 0},
		{intstr.FromString("dns"), corev1.ProtocolUDP, 5353},
		{intstr.FromString("proxy"), corev1.ProtocolTCP, 15001}, // a sidecar's
		{intstr.FromString("init"), corev1.ProtocolTCP, 0},      // not a sidecar
		{intstr.FromString("nope"), corev1.ProtocolTCP, 0},
	} {
		got, err := FindPort(pod, &corev1.ServicePort{TargetPort: tc.target, Protocol: tc.protocol})
		if (err == nil) != (tc.want != 0) || got != tc.want {
			t.Errorf("%s/%s: %d, %v; want %d", tc.target.String(), tc.protocol, got, err, tc.want)
		}
	}
}

func TestShouldPodBeInEndpoints(t *testing.T) {
	deleted := metav1.Now()
	for _, tc := range []struct {
		name                string
		phase               corev1.PodPhase
		ip                  string
		deleting            bool
		include, wantResult bool
	}{
		{"running", corev1.PodRunning, "10.0.0.1", false, false, true},
		{"no IP", corev1.PodRunning, "", false, false, false},
		{"succeeded", corev1.PodSucceeded, "10.0.0.1", false, true, false},
		{"failed", corev1.PodFailed, "10.0.0.1", false, true, false},
		{"terminating", corev1.PodRunning, "10.0.0.1", true, false, false},
		{"terminating, included", corev1.PodRunning, "10.0.0.1", true, true, true},
	} {
		pod := &corev1.Pod{Status: corev1.PodStatus{Phase: tc.phase, PodIP: tc.ip}}
		if tc.deleting {
			pod.DeletionTimestamp = &deleted
		}
		if got := ShouldPodBeInEndpoints(pod, tc.include); got != tc.wantResult {
			t.Errorf("%s: %t, want %t", tc.name, got, tc.wantResult)
		}
	}
}

func TestServicesToSync(t *testing.T) {
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for name, selector := range map[string]map[string]string{"a": {"app": "a"}, "b": {"app": "b"}, "all": {}, "none": nil} {
		_ = indexer.Add(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: selector}})
	}
	lister := corelisters.NewServiceLister(indexer)
	pod := func(rv, app string, ready bool, ip string) *corev1.Pod {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", ResourceVersion: rv, Labels: map[string]string{"app": app}},
			Status:     corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: ip}}, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
		}
	}
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Pod
		want     []string
	}{
		{"resync", pod("1", "a", true, "10.0.0.1"), pod("1", "a", false, "10.0.0.1"), nil},
		{"nothing published changed", pod("1", "a", true, "10.0.0.1"), pod("2", "a", true, "10.0.0.1"), nil},
		{"readiness", pod("1", "a", false, "10.0.0.1"), pod("2", "a", true, "10.0.0.1"), []string{"ns/a", "ns/all"}},
		{"IP", pod("1", "a", true, "10.0.0.1"), pod("2", "a", true, "10.0.0.2"), []string{"ns/a", "ns/all"}},
		{"labels only: the services joined and left", pod("1", "a", true, "10.0.0.1"), pod("2", "b", true, "10.0.0.1"), []string{"ns/a", "ns/b"}},
		{"labels and readiness: all", pod("1", "a", false, "10.0.0.1"), pod("2", "b", true, "10.0.0.1"), []string{"ns/a", "ns/all", "ns/b"}},
	} {
		got := ServicesToSync(lister, tc.old, tc.cur)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTriggerTime(t *testing.T) {
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", CreationTimestamp: metav1.NewTime(created)}}
	pod := func(name string, readyAt time.Time) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(readyAt)},
		}}}
	}
	at := func(s int) time.Time { return created.Add(time.Duration(s) * time.Second) }
	tr := NewTriggerTimeTracker()
	for i, tc := range []struct {
		pods []*corev1.Pod
		want time.Time
	}{
		{[]*corev1.Pod{pod("a", at(5))}, created},                // first sync: the Service's creation
		{[]*corev1.Pod{pod("a", at(5))}, time.Time{}},            // nothing new
		{[]*corev1.Pod{pod("a", at(9)), pod("b", at(7))}, at(7)}, // the earliest change
		{[]*corev1.Pod{pod("b", at(7))}, time.Time{}},            // a pod gone is no trigger
	} {
		if got := tr.Compute(svc, tc.pods); !got.Equal(tc.want) {
			t.Errorf("sync %d: %v, want %v", i, got, tc.want)
		}
	}
	tr.Forget("ns", "s")
	if got := tr.Compute(svc, nil); !got.Equal(created) {
		t.Errorf("after Forget: %v, want the creation %v", got, created)
	}
}
