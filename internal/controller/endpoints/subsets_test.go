package endpoints

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func addresses(prefix string, n int) []corev1.EndpointAddress {
	out := make([]corev1.EndpointAddress, n)
	for i := range out {
		out[i].IP = fmt.Sprintf("%s.%d.%d", prefix, i/250, i%250)
	}
	return out
}

func TestTruncateKeepsReadyAddressesFirstInProportion(t *testing.T) {
	for _, tc := range []struct {
		name string
		// ready and not-ready addresses per subset, before and after
		in, want  [][2]int
		truncated bool
	}{
		{"at capacity", [][2]int{{600, 400}}, [][2]int{{600, 400}}, false},
		{"not-ready cut", [][2]int{{900, 50}, {0, 150}}, [][2]int{{900, 25}, {0, 75}}, true},
		{"ready cut, not-ready dropped", [][2]int{{1200, 10}, {300, 0}}, [][2]int{{800, 0}, {200, 0}}, true},
		{"rounding up starves the last subset", [][2]int{{500, 0}, {501, 0}, {1, 0}}, [][2]int{{500, 0}, {500, 0}}, true},
		{"emptied subsets are dropped", [][2]int{{1001, 0}, {0, 5}}, [][2]int{{1000, 0}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var subsets []corev1.EndpointSubset
			for i, n := range tc.in {
				subsets = append(subsets, corev1.EndpointSubset{
					Addresses:         addresses(fmt.Sprintf("10.%d", i), n[0]),
					NotReadyAddresses: addresses(fmt.Sprintf("11.%d", i), n[1]),
				})
			}
			if got := truncate(&subsets); got != tc.truncated {
				t.Fatalf("truncate = %t, want %t", got, tc.truncated)
			}
			var got [][2]int
			for _, ss := range subsets {
				got = append(got, [2]int{len(ss.Addresses), len(ss.NotReadyAddresses)})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("subsets hold %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPackingGroupsAddressesSharingPorts(t *testing.T) {
	p := newPacker()
	a := corev1.EndpointAddress{IP: "10.0.0.2"}
	b := corev1.EndpointAddress{IP: "10.0.0.1"}
	http := &corev1.EndpointPort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}
	dns := &corev1.EndpointPort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}
	metrics := &corev1.EndpointPort{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP}
	p.add(a, http, true)
	p.add(b, http, false)
	p.add(a, dns, true)
	p.add(b, dns, false)
	p.add(a, metrics, true)
	p.add(a, metrics, false) // not ready trumps ready
	got := fmt.Sprint(p.subsets())
	// {a, b} share http and dns; a alone serves metrics, not ready.
	want := fmt.Sprint([]corev1.EndpointSubset{
		{Addresses: []corev1.EndpointAddress{a}, NotReadyAddresses: []corev1.EndpointAddress{b}, Ports: []corev1.EndpointPort{*dns, *http}},
		{NotReadyAddresses: []corev1.EndpointAddress{a}, Ports: []corev1.EndpointPort{*metrics}},
	})
	if got != want {
		t.Fatalf("subsets:\n got %s\nwant %s", got, want)
	}
}
