package endpointslice

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/endpointslice/endpointutil"
)

// addressTypes are the slice address types a Service needs: one per IP
// family; without families, that of its cluster IP, or both for a headless
// Service (as upstream does for Services an old API server wrote).
func addressTypes(svc *corev1.Service) []discoveryv1.AddressType {
	var out []discoveryv1.AddressType
	add := func(t discoveryv1.AddressType) {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			add(discoveryv1.AddressTypeIPv4)
		case corev1.IPv6Protocol:
			add(discoveryv1.AddressTypeIPv6)
		}
	}
	switch {
	case len(out) > 0:
	case endpointutil.IsServiceIPSet(svc) && isIPv6(svc.Spec.ClusterIP):
		add(discoveryv1.AddressTypeIPv6)
	case endpointutil.IsServiceIPSet(svc):
		add(discoveryv1.AddressTypeIPv4)
	default:
		add(discoveryv1.AddressTypeIPv4)
		add(discoveryv1.AddressTypeIPv6)
	}
	return out
}

func isIPv6(s string) bool {
	addr, err := netip.ParseAddr(s)
	return err == nil && addr.Unmap().Is6()
}

// podToEndpoint is the pod's endpoint in a slice of type at; node is nil
// when the pod's node is unknown.
func podToEndpoint(pod *corev1.Pod, node *corev1.Node, svc *corev1.Service, at discoveryv1.AddressType) discoveryv1.Endpoint {
	serving := endpointutil.IsPodReady(pod)
	terminating := pod.DeletionTimestamp != nil
	// Ready stays false while terminating, for the consumers that look at
	// nothing else, unless the Service publishes not-ready addresses.
	ready := svc.Spec.PublishNotReadyAddresses || (serving && !terminating)
	ep := discoveryv1.Endpoint{
		Addresses:  podAddresses(pod, at),
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
	}
	if pod.Spec.NodeName != "" {
		ep.NodeName = ptr.To(pod.Spec.NodeName)
	}
	if node != nil && node.Labels[corev1.LabelTopologyZone] != "" {
		ep.Zone = ptr.To(node.Labels[corev1.LabelTopologyZone])
	}
	if endpointutil.ShouldSetHostname(pod, svc) {
		ep.Hostname = ptr.To(pod.Spec.Hostname)
	}
	return ep
}

// podAddresses are the pod's IPs of type at, in canonical form.
func podAddresses(pod *corev1.Pod, at discoveryv1.AddressType) []string {
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	out := []string{}
	for _, ip := range ips {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		if addr.Is6() == (at == discoveryv1.AddressTypeIPv6) {
			out = append(out, addr.String())
		}
	}
	return out
}

// endpointPorts are the Service's ports as the pod serves them, sorted; a
// port whose named targetPort the pod lacks is left out.
func endpointPorts(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	out := []discoveryv1.EndpointPort{}
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		port, err := endpointutil.FindPort(pod, sp)
		if err != nil {
			continue
		}
		out = append(out, discoveryv1.EndpointPort{
			Name: ptr.To(sp.Name), Port: ptr.To(port), Protocol: ptr.To(sp.Protocol), AppProtocol: sp.AppProtocol,
		})
	}
	slices.SortFunc(out, func(a, b discoveryv1.EndpointPort) int { return strings.Compare(portString(a), portString(b)) })
	return out
}

func portString(p discoveryv1.EndpointPort) string {
	s := fmt.Sprintf("%s/%s/%d", ptr.Deref(p.Name, ""), ptr.Deref(p.Protocol, ""), ptr.Deref(p.Port, -1))
	if p.AppProtocol != nil {
		s += "/" + *p.AppProtocol
	}
	return s
}

// portsKey identifies a set of ports, whatever their order.
func portsKey(ports []discoveryv1.EndpointPort) string {
	keys := make([]string, len(ports))
	for i, p := range ports {
		keys[i] = portString(p)
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// endpointKey identifies an endpoint across syncs by its addresses,
// hostname and pod, so that other changes (conditions, zone) update it in
// place.
func endpointKey(ep *discoveryv1.Endpoint) string {
	addrs := slices.Sorted(slices.Values(ep.Addresses))
	var ref string
	if ep.TargetRef != nil {
		ref = ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
	}
	return strings.Join(addrs, ",") + "|" + ptr.Deref(ep.Hostname, "") + "|" + ref
}

// sameBeyondKey compares what endpointKey leaves out, but the pods'
// resourceVersions.
func sameBeyondKey(a, b *discoveryv1.Endpoint) bool {
	eq := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqb := func(x, y *bool) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	if !eq(a.NodeName, b.NodeName) || !eq(a.Zone, b.Zone) ||
		!eqb(a.Conditions.Ready, b.Conditions.Ready) || !eqb(a.Conditions.Serving, b.Conditions.Serving) ||
		!eqb(a.Conditions.Terminating, b.Conditions.Terminating) || (a.TargetRef == nil) != (b.TargetRef == nil) {
		return false
	}
	if a.TargetRef == nil {
		return true
	}
	x, y := *a.TargetRef, *b.TargetRef
	x.ResourceVersion, y.ResourceVersion = "", ""
	return x == y
}

// endpointSet holds desired endpoints by endpointKey.
type endpointSet map[string]*discoveryv1.Endpoint

// pop removes and returns the endpoint of the smallest key, so that slices
// fill in a stable order.
func (s endpointSet) pop() discoveryv1.Endpoint {
	k := slices.MinFunc(slices.Collect(maps.Keys(s)), cmp.Compare[string])
	ep := s[k]
	delete(s, k)
	return *ep
}

// sliceLabels are the labels a slice of svc carries: the Service's, but
// the reserved ones, which the controller sets. changed reports whether
// the Service's own labels differ from those s carries.
func sliceLabels(s *discoveryv1.EndpointSlice, svc *corev1.Service) (out map[string]string, changed bool) {
	reserved := func(k string) bool {
		return k == discoveryv1.LabelServiceName || k == discoveryv1.LabelManagedBy || k == corev1.IsHeadlessService
	}
	have := map[string]string{}
	for k, v := range s.Labels {
		if !reserved(k) {
			have[k] = v
		}
	}
	out = map[string]string{}
	for k, v := range svc.Labels {
		if !reserved(k) {
			out[k] = v
		}
	}
	changed = !maps.Equal(have, out)
	if !endpointutil.IsServiceIPSet(svc) {
		out[corev1.IsHeadlessService] = ""
	}
	out[discoveryv1.LabelServiceName] = svc.Name
	out[discoveryv1.LabelManagedBy] = ManagedBy
	return out, changed
}

// newSlice is an empty slice of svc, for ports and address type at, to be
// created under a generated name.
func newSlice(svc *corev1.Service, ports []discoveryv1.EndpointPort, at discoveryv1.AddressType) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    svc.Name + "-",
			Namespace:       svc.Namespace,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))},
		},
		AddressType: at,
		Ports:       ports,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	s.Labels, _ = sliceLabels(s, svc)
	return s
}

// ownedBy reports whether svc (this very object, by UID) owns the slice.
func ownedBy(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	for _, o := range s.OwnerReferences {
		if o.UID == svc.UID && o.Kind == "Service" && o.APIVersion == "v1" {
			return true
		}
	}
	return false
}

// isPlaceholder reports whether s is the empty slice a Service without
// endpoints gets, as the controller would write it now.
func isPlaceholder(s, want *discoveryv1.EndpointSlice) bool {
	if s.Namespace != want.Namespace || !maps.Equal(s.Labels, want.Labels) || s.AddressType != want.AddressType ||
		len(s.Endpoints) != 0 || len(s.Ports) != 0 || len(s.OwnerReferences) != len(want.OwnerReferences) {
		return false
	}
	for i := range s.OwnerReferences {
		if s.OwnerReferences[i].String() != want.OwnerReferences[i].String() {
			return false
		}
	}
	return true
}
