package dns

import (
	"errors"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"

	"github.com/miekg/dns"
)

// errName: the name does not exist (NXDOMAIN).
var errName = errors.New("no such name")

// noPort stands for "no port": a Service or slice that declares none.
const noPort = -1

// record is one thing a name stands for: an address (or, for an
// ExternalName, a domain name), a port, and the name it has as an SRV
// target.
type record struct {
	host   string
	port   int
	target string // FQDN
}

// request is a name in the cluster domain, split as CoreDNS does:
// [endpoint | _port._protocol].service.namespace.(svc|pod).
type request struct {
	kind      string // "svc" or "pod"; empty for the apex, svc. and pod.
	namespace string
	service   string
	endpoint  string
	port      string // without its underscore; empty: any
	protocol  string // likewise
}

// parse splits name (lowercase FQDN) under zone. A name of the wrong
// shape (neither svc nor pod, or too many labels) is an error.
func parse(name, zone string) (request, error) {
	var r request
	base := strings.TrimSuffix(strings.TrimSuffix(name, zone), ".")
	if base == "" || base == "svc" || base == "pod" {
		return r, nil
	}
	labels := dns.SplitDomainName(base)
	last := len(labels) - 1
	r.kind = labels[last]
	if r.kind != "svc" && r.kind != "pod" {
		return r, errName
	}
	next := func() (string, bool) {
		last--
		if last < 0 {
			return "", false
		}
		return labels[last], true
	}
	var ok bool
	if r.namespace, ok = next(); !ok {
		return r, nil
	}
	if r.service, ok = next(); !ok {
		return r, nil
	}
	switch last - 1 {
	case -1:
	case 0:
		r.endpoint = labels[0]
	case 1:
		r.port, r.protocol = strings.TrimPrefix(labels[0], "_"), strings.TrimPrefix(labels[1], "_")
	default:
		return r, errName
	}
	return r, nil
}

// lookup is the context of one query: the zone as the query spells it
// (names in answers keep the query's case) and the address the query
// reached (the nameserver's own).
type lookup struct {
	zone  string
	local net.IP
}

// inZone reports whether name (any case) is in the cluster domain.
func (r *Resolver) inZone(name string) bool { return dns.IsSubDomain(r.zone, name) }

// resolve is what name stands for, for a query of type qtype (CoreDNS's
// Services): the nameserver's addresses for ns.dns.<zone>, else the
// cluster's records; SRV queries skip ExternalNames.
func (r *Resolver) resolve(l *lookup, name string, qtype uint16) ([]record, error) {
	if strings.EqualFold(name, "ns.dns."+l.zone) {
		var out []record
		for _, ns := range r.nameservers(l) {
			if v4 := ns.ip.To4() != nil; (qtype == dns.TypeA && v4) || (qtype == dns.TypeAAAA && !v4) {
				out = append(out, record{host: ns.ip.String(), port: noPort, target: name})
			}
		}
		return out, nil
	}
	recs, err := r.records(l, name)
	if qtype != dns.TypeSRV {
		return recs, err
	}
	return slices.DeleteFunc(recs, func(rec record) bool { return net.ParseIP(rec.host) == nil }), err
}

// records resolves a name of the cluster domain (CoreDNS's Records).
func (r *Resolver) records(l *lookup, name string) ([]record, error) {
	req, err := parse(strings.ToLower(name), r.zone)
	if err != nil {
		return nil, err
	}
	if req.kind == "" {
		return nil, nil
	}
	if _, err := r.namespaces.Get(req.namespace); err != nil {
		return nil, errName
	}
	if req.kind == "pod" {
		return r.pod(l, req)
	}
	return r.service(l, req)
}

// pod resolves <dashed-ip>.<ns>.pod.<zone> to the IP it spells, without
// looking for the pod ("pods insecure").
func (r *Resolver) pod(l *lookup, req request) ([]record, error) {
	if req.service == "" {
		return nil, nil
	}
	ip := strings.ReplaceAll(req.service, "-", ":")
	if strings.Count(req.service, "-") == 3 && !strings.Contains(req.service, "--") {
		ip = strings.ReplaceAll(req.service, "-", ".")
	}
	if net.ParseIP(ip) == nil {
		return nil, errName
	}
	return []record{{host: ip, port: noPort, target: strings.Join([]string{req.service, req.namespace, "pod", l.zone}, ".")}}, nil
}

// service resolves the names under <svc>.<ns>.svc.<zone>.
func (r *Resolver) service(l *lookup, req request) ([]record, error) {
	if req.service == "" {
		return nil, nil
	}
	svc, err := r.services.Services(req.namespace).Get(req.service)
	if apierrors.IsNotFound(err) {
		return nil, errName
	}
	if err != nil {
		return nil, err
	}
	svcName := strings.Join([]string{svc.Name, svc.Namespace, "svc", l.zone}, ".")

	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		if req.endpoint != "" || req.port != "" || req.protocol != "" || net.ParseIP(svc.Spec.ExternalName) != nil {
			return nil, errName
		}
		return []record{{host: svc.Spec.ExternalName, port: noPort, target: svcName}}, nil
	}

	var out []record
	found := false
	if headless(svc) || req.endpoint != "" {
		for _, s := range r.serviceSlices(svc) {
			ports := slicePorts(s)
			for _, ep := range s.Endpoints {
				if !ready(ep) {
					continue
				}
				for _, ip := range ep.Addresses {
					host := endpointHostname(ip, ptr.Deref(ep.Hostname, ""))
					if req.endpoint != "" && !strings.EqualFold(req.endpoint, host) {
						continue
					}
					for _, p := range ports {
						if matchPort(req, p.name, p.protocol) {
							found = true
							out = append(out, record{host: ip, port: p.number, target: host + "." + svcName})
						}
					}
				}
			}
		}
	} else {
		ports := []namedPort{{number: noPort}}
		if len(svc.Spec.Ports) > 0 {
			ports = ports[:0]
			for _, p := range svc.Spec.Ports {
				ports = append(ports, namedPort{name: p.Name, protocol: string(p.Protocol), number: int(p.Port)})
			}
		}
		for _, p := range ports {
			if !matchPort(req, p.name, p.protocol) {
				continue
			}
			found = true
			for _, ip := range serviceIPs(svc) {
				out = append(out, record{host: ip, port: p.number, target: svcName})
			}
		}
	}
	if !found {
		return nil, errName
	}
	return out, nil
}

type namedPort struct {
	name, protocol string
	number         int
}

func matchPort(req request, name, protocol string) bool {
	return (req.port == "" || strings.EqualFold(req.port, name)) && (req.protocol == "" || strings.EqualFold(req.protocol, protocol))
}

// serviceSlices are the IP EndpointSlices of svc, by name.
func (r *Resolver) serviceSlices(svc *corev1.Service) []*discoveryv1.EndpointSlice {
	objs, _ := r.slices.ByIndex(byService, svc.Namespace+"/"+svc.Name)
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, obj := range objs {
		if s := obj.(*discoveryv1.EndpointSlice); addressSlice(s) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// slicePorts are a slice's ports; one without ports has one "no port".
func slicePorts(s *discoveryv1.EndpointSlice) []namedPort {
	if len(s.Ports) == 0 {
		return []namedPort{{number: noPort}}
	}
	out := make([]namedPort, len(s.Ports))
	for i, p := range s.Ports {
		out[i] = namedPort{name: ptr.Deref(p.Name, ""), number: int(ptr.Deref(p.Port, noPort))}
		if p.Protocol != nil {
			out[i].protocol = string(*p.Protocol)
		}
	}
	return out
}

// nameserver is an address of this server and the name it has.
type nameserver struct {
	name string
	ip   net.IP
}

// nameservers are the names and addresses of this server for the apex NS
// (CoreDNS's nsAddrs): the Services whose cluster IP the query reached
// (kube-dns), else ns.dns.<zone> at that address.
func (r *Resolver) nameservers(l *lookup) []nameserver {
	if l.local == nil || l.local.IsUnspecified() {
		return nil
	}
	var out []nameserver
	objs, _ := r.svcIndex.ByIndex(byClusterIP, l.local.String())
	for _, obj := range objs {
		svc := obj.(*corev1.Service)
		name := strings.Join([]string{svc.Name, svc.Namespace, "svc", l.zone}, ".")
		for _, ip := range serviceIPs(svc) {
			if addr := net.ParseIP(ip); addr != nil {
				out = append(out, nameserver{name: name, ip: addr})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, nameserver{name: "ns.dns." + l.zone, ip: l.local})
	}
	return out
}

// reverse is the PTR targets of ip: the Service whose cluster IP it is,
// else the endpoints that have it.
func (r *Resolver) reverse(ip string) []string {
	if objs, _ := r.svcIndex.ByIndex(byClusterIP, ip); len(objs) > 0 {
		svc := objs[0].(*corev1.Service)
		return []string{strings.Join([]string{svc.Name, svc.Namespace, "svc", r.zone}, ".")}
	}
	objs, _ := r.slices.ByIndex(byReadyIP, ip)
	var out []string
	for _, obj := range objs {
		s := obj.(*discoveryv1.EndpointSlice)
		for _, ep := range s.Endpoints {
			if ready(ep) && slices.Contains(ep.Addresses, ip) {
				name := strings.Join([]string{endpointHostname(ip, ptr.Deref(ep.Hostname, "")), s.Labels[discoveryv1.LabelServiceName], s.Namespace, "svc", r.zone}, ".")
				if !slices.Contains(out, name) {
					out = append(out, name)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
