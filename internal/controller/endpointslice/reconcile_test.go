package endpointslice

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// ep is the endpoint of pod "p<n>" at 10.0.0.<n>.
func ep(n int, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{fmt.Sprint("10.0.0.", n)},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: fmt.Sprint("p", n)},
	}
}

func slice(name string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "svc", discoveryv1.LabelManagedBy: ManagedBy}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
	}
}

// contents is "name:ip,ip" (new slices are named "+"), sorted.
func contents(list []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range list {
		var ips []string
		for _, e := range s.Endpoints {
			ips = append(ips, strings.TrimPrefix(e.Addresses[0], "10.0.0."))
		}
		name := s.Name
		if name == "" {
			name = "+"
		}
		out = append(out, name+":"+strings.Join(ips, ","))
	}
	slices.Sort(out)
	return out
}

func TestPlanPortsFillsSlicesAsUpstream(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: "ns", UID: "u"}}
	for _, tc := range []struct {
		name                   string
		existing               []*discoveryv1.EndpointSlice
		desired                []discoveryv1.Endpoint
		create, update, delete []string
	}{
		{
			name:    "new slices of at most 3",
			desired: []discoveryv1.Endpoint{ep(1, true), ep(2, true), ep(3, true), ep(4, true), ep(5, true), ep(6, true), ep(7, true)},
			create:  []string{"+:1,2,3", "+:4,5,6", "+:7"},
		},
		{
			name:     "a new endpoint goes to the unchanged slice it fits best",
			existing: []*discoveryv1.EndpointSlice{slice("a", ep(1, true), ep(2, true)), slice("b", ep(3, true))},
			desired:  []discoveryv1.Endpoint{ep(1, true), ep(2, true), ep(3, true), ep(4, true)},
			update:   []string{"a:1,2,4"},
		},
		{
			name:     "changes in place, then the changed slice fills first",
			existing: []*discoveryv1.EndpointSlice{slice("a", ep(1, true), ep(2, true), ep(3, true)), slice("b", ep(8, true), ep(9, true))},
			desired:  []discoveryv1.Endpoint{ep(1, true), ep(3, false), ep(6, true), ep(7, true), ep(8, true), ep(9, true)},
			update:   []string{"a:1,3,6", "b:8,9,7"},
		},
		{
			name:     "a slice left empty goes",
			existing: []*discoveryv1.EndpointSlice{slice("a", ep(1, true)), slice("b", ep(2, true))},
			desired:  []discoveryv1.Endpoint{ep(2, true)},
			delete:   []string{"a:1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range tc.existing {
				s.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))}
				s.Labels, _ = sliceLabels(s, svc)
			}
			d := &desiredPorts{endpoints: endpointSet{}}
			for i := range tc.desired {
				d.endpoints[endpointKey(&tc.desired[i])] = &tc.desired[i]
			}
			r := &reconciler{maxPerSlice: 3}
			p := r.planPorts(svc, tc.existing, d, discoveryv1.AddressTypeIPv4)
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"create", contents(p.create), tc.create}, {"update", contents(p.update), tc.update}, {"delete", contents(p.delete), tc.delete}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s %q, want %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestTrackerSeesTheCacheCatchUp(t *testing.T) {
	tr := newSliceTracker()
	const key = "ns/svc"
	s := func(uid types.UID, rv string) *discoveryv1.EndpointSlice {
		x := slice(string(uid))
		x.UID, x.ResourceVersion = uid, rv
		return x
	}
	steps := []struct {
		what  string
		do    func()
		shown []*discoveryv1.EndpointSlice
		stale bool
	}{
		{"created, not shown yet", func() { tr.wrote(s("a", "10"), "") }, nil, true},
		{"created, shown", nil, []*discoveryv1.EndpointSlice{s("a", "10")}, false},
		{"updated from 10, cache still at 10", func() { tr.wrote(s("a", "12"), "10") }, []*discoveryv1.EndpointSlice{s("a", "10")}, true},
		{"updated, shown", nil, []*discoveryv1.EndpointSlice{s("a", "12")}, false},
		{"changed since by someone else", nil, []*discoveryv1.EndpointSlice{s("a", "15")}, false},
		{"deleted, still shown", func() { tr.deleted(s("a", "15")) }, []*discoveryv1.EndpointSlice{s("a", "15")}, true},
		{"deleted, gone", nil, nil, false},
	}
	for _, step := range steps {
		if step.do != nil {
			step.do()
		}
		if got := tr.stale(key, step.shown); got != step.stale {
			t.Errorf("%s: stale %t, want %t", step.what, got, step.stale)
		}
	}

	// Events: the controller's own writes cause no sync, others' do.
	tr.wrote(s("b", "20"), "")
	for _, tc := range []struct {
		what string
		got  bool
		want bool
	}{
		{"own write", tr.observe(s("b", "20")), false},
		{"someone else's write", tr.observe(s("b", "21")), true},
		{"a slice never written", tr.observe(s("c", "1")), true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: sync %t, want %t", tc.what, tc.got, tc.want)
		}
	}
	tr.deleted(s("b", "21"))
	if tr.observeDeletion(s("b", "21")) {
		t.Error("the controller's own delete caused a sync")
	}
	tr.wrote(s("d", "30"), "")
	if !tr.observeDeletion(s("d", "30")) {
		t.Error("someone else's delete caused no sync")
	}
}
