package endpoints

import (
	"cmp"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/controller/endpointslice/endpointutil"
)

// desiredSubsets lists the Service's pods as canonically packed subsets.
func desiredSubsets(svc *corev1.Service, pods []*corev1.Pod) []corev1.EndpointSubset {
	p := newPacker()
	publishNotReady := svc.Spec.PublishNotReadyAddresses
	for _, pod := range pods {
		if !endpointutil.ShouldPodBeInEndpoints(pod, publishNotReady) {
			continue
		}
		addr, ok := podAddress(svc, pod)
		if !ok {
			continue // no IP of the Service's family
		}
		if endpointutil.ShouldSetHostname(pod, svc) {
			addr.Hostname = pod.Spec.Hostname
		}
		ready := publishNotReady || endpointutil.IsPodReady(pod)
		if len(svc.Spec.Ports) == 0 {
			if svc.Spec.ClusterIP == corev1.ClusterIPNone {
				p.add(addr, nil, ready)
			}
			continue
		}
		for i := range svc.Spec.Ports {
			sp := &svc.Spec.Ports[i]
			port, err := endpointutil.FindPort(pod, sp)
			if err != nil {
				continue
			}
			p.add(addr, &corev1.EndpointPort{Name: sp.Name, Port: port, Protocol: sp.Protocol, AppProtocol: sp.AppProtocol}, ready)
		}
	}
	return p.subsets()
}

// podAddress is the pod's address for the Service: its IP of the Service's
// first IP family (for a Service without families, that of its cluster
// IP, or, headless, that of the pod's primary IP).
func podAddress(svc *corev1.Service, pod *corev1.Pod) (corev1.EndpointAddress, bool) {
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 {
		ips = append(ips, pod.Status.PodIP)
	}
	var v6 bool
	switch {
	case len(svc.Spec.IPFamilies) > 0:
		v6 = svc.Spec.IPFamilies[0] == corev1.IPv6Protocol
	case endpointutil.IsServiceIPSet(svc):
		v6 = isIPv6(svc.Spec.ClusterIP)
	default:
		v6 = isIPv6(ips[0])
	}
	for _, ip := range ips {
		if addr, err := netip.ParseAddr(ip); err == nil && addr.Unmap().Is6() == v6 {
			a := corev1.EndpointAddress{
				IP:        ip,
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
			}
			if pod.Spec.NodeName != "" {
				a.NodeName = &pod.Spec.NodeName
			}
			return a, true
		}
	}
	return corev1.EndpointAddress{}, false
}

func isIPv6(s string) bool {
	addr, err := netip.ParseAddr(s)
	return err == nil && addr.Unmap().Is6()
}

// packer gathers (address, port, readiness) triples and packs them the
// way upstream's RepackSubsets does: one subset per distinct set of
// addresses, holding every port those addresses share. An address is not
// ready on a port if any triple says so.
type packer struct {
	addrs map[addrKey]corev1.EndpointAddress
	ports map[string]*corev1.EndpointPort // by portKey; nil: no port
	byKey map[string]map[addrKey]bool     // port key -> address -> ready
}

// addrKey tells addresses apart by IP and pod.
type addrKey struct {
	ip  string
	uid types.UID
}

func newPacker() *packer {
	return &packer{addrs: map[addrKey]corev1.EndpointAddress{}, ports: map[string]*corev1.EndpointPort{}, byKey: map[string]map[addrKey]bool{}}
}

func (p *packer) add(addr corev1.EndpointAddress, port *corev1.EndpointPort, ready bool) {
	ak := addrKey{ip: addr.IP}
	if addr.TargetRef != nil {
		ak.uid = addr.TargetRef.UID
	}
	if _, ok := p.addrs[ak]; !ok {
		p.addrs[ak] = addr
	}
	pk := portKey(port)
	p.ports[pk] = port
	set := p.byKey[pk]
	if set == nil {
		set = map[addrKey]bool{}
		p.byKey[pk] = set
	}
	if was, ok := set[ak]; !ok || was {
		set[ak] = ready
	}
}

func portKey(p *corev1.EndpointPort) string {
	if p == nil {
		return ""
	}
	app := "-"
	if p.AppProtocol != nil {
		app = "=" + *p.AppProtocol
	}
	return strings.Join([]string{p.Name, strconv.Itoa(int(p.Port)), string(p.Protocol), app}, "/")
}

func (p *packer) subsets() []corev1.EndpointSubset {
	type group struct {
		set   map[addrKey]bool
		ports []corev1.EndpointPort
	}
	groups := map[string]*group{}
	for pk, set := range p.byKey {
		sig := signature(set)
		g := groups[sig]
		if g == nil {
			g = &group{set: set}
			groups[sig] = g
		}
		if port := p.ports[pk]; port != nil {
			g.ports = append(g.ports, *port)
		}
	}
	out := make([]corev1.EndpointSubset, 0, len(groups))
	for _, sig := range slices.Sorted(maps.Keys(groups)) {
		g := groups[sig]
		var ss corev1.EndpointSubset
		for ak, ready := range g.set {
			if ready {
				ss.Addresses = append(ss.Addresses, p.addrs[ak])
			} else {
				ss.NotReadyAddresses = append(ss.NotReadyAddresses, p.addrs[ak])
			}
		}
		slices.SortFunc(ss.Addresses, compareAddresses)
		slices.SortFunc(ss.NotReadyAddresses, compareAddresses)
		slices.SortFunc(g.ports, func(a, b corev1.EndpointPort) int { return strings.Compare(portKey(&a), portKey(&b)) })
		ss.Ports = g.ports
		out = append(out, ss)
	}
	return out
}

// signature names a set of addresses with their readiness, in a canonical
// order.
func signature(set map[addrKey]bool) string {
	parts := make([]string, 0, len(set))
	for ak, ready := range set {
		parts = append(parts, ak.ip+"|"+string(ak.uid)+"|"+strconv.FormatBool(ready))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func compareAddresses(a, b corev1.EndpointAddress) int {
	if n := compareIPs(a.IP, b.IP); n != 0 {
		return n
	}
	var ua, ub types.UID
	if a.TargetRef != nil {
		ua = a.TargetRef.UID
	}
	if b.TargetRef != nil {
		ub = b.TargetRef.UID
	}
	return cmp.Compare(ua, ub)
}

func compareIPs(a, b string) int {
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	if errx != nil || erry != nil {
		return strings.Compare(a, b)
	}
	return x.Compare(y)
}

// truncate keeps at most MaxCapacity addresses, as upstream does: ready
// addresses first; the cut is shared among subsets in proportion to their
// sizes (rounded up, so the last subsets may get less). Subsets left empty
// are dropped (the API rejects them). It reports whether anything was cut.
func truncate(subsets *[]corev1.EndpointSubset) bool {
	if !truncateAddresses(*subsets) {
		return false
	}
	*subsets = slices.DeleteFunc(*subsets, func(ss corev1.EndpointSubset) bool {
		return len(ss.Addresses) == 0 && len(ss.NotReadyAddresses) == 0
	})
	return true
}

func truncateAddresses(subsets []corev1.EndpointSubset) bool {
	ready, notReady := 0, 0
	for _, ss := range subsets {
		ready += len(ss.Addresses)
		notReady += len(ss.NotReadyAddresses)
	}
	if ready+notReady <= MaxCapacity {
		return false
	}
	cutReady := ready > MaxCapacity
	budget, total := MaxCapacity-ready, notReady
	if cutReady {
		budget, total = MaxCapacity, ready
	}
	left := budget
	for i := range subsets {
		ss := &subsets[i]
		n := len(ss.NotReadyAddresses)
		if cutReady {
			n = len(ss.Addresses)
		}
		keep := min(int(math.Ceil(float64(n)/float64(total)*float64(budget))), left)
		if cutReady {
			ss.Addresses = ss.Addresses[:min(keep, len(ss.Addresses))]
			ss.NotReadyAddresses = nil
			left -= len(ss.Addresses)
		} else {
			ss.NotReadyAddresses = ss.NotReadyAddresses[:min(keep, len(ss.NotReadyAddresses))]
			left -= len(ss.NotReadyAddresses)
		}
	}
	return true
}
