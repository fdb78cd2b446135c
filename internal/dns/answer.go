package dns

import (
	"errors"
	"math"
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

const (
	// schemaVersion is the version of the Kubernetes DNS specification
	// served, as dns-version.<zone> TXT says.
	schemaVersion = "1.1.0"
	// versionTTL is the TTL of that TXT record, as CoreDNS's.
	versionTTL = 28800
	// maxCNAMEs bounds a chain of ExternalNames within the zone.
	maxCNAMEs = 10
)

// ServeDNS answers one query. Over UDP the answer is truncated (TC set) to
// 512 bytes or the client's EDNS0 buffer size.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := r.answer(req, addrIP(w.LocalAddr()))
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
		if resp.IsEdns0() == nil {
			resp.SetEdns0(uint16(size), opt.Do())
		}
	}
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	}
	resp.Truncate(size)
	_ = w.WriteMsg(resp) // the client is gone: nothing to do
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP
	case *net.TCPAddr:
		return a.IP
	}
	return nil
}

// answer builds the response to req, received on local.
func (r *Resolver) answer(req *dns.Msg, local net.IP) *dns.Msg {
	resp := new(dns.Msg)
	if len(req.Question) != 1 {
		return resp.SetRcodeFormatError(req)
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		resp.SetRcode(req, dns.RcodeBadVers)
		resp.SetEdns0(max(dns.MinMsgSize, opt.UDPSize()), false)
		return resp
	}
	q := req.Question[0]
	switch {
	case r.inZone(q.Name):
		return r.answerZone(req, &lookup{zone: q.Name[len(q.Name)-len(r.zone):], local: local})
	case q.Qtype == dns.TypePTR && isReverse(q.Name):
		if targets := r.reverse(reverseIP(q.Name)); len(targets) > 0 {
			resp.SetReply(req)
			resp.Authoritative = true
			for _, t := range targets {
				resp.Answer = append(resp.Answer, &dns.PTR{Hdr: r.header(q.Name, dns.TypePTR), Ptr: t})
			}
			return resp
		}
	}
	// Outside the cluster's names: an upstream resolver's, and there is
	// none.
	return resp.SetRcode(req, dns.RcodeRefused)
}

// answerZone answers a question in the cluster domain, deciding between
// NXDOMAIN and NODATA as CoreDNS's kubernetes plugin does.
func (r *Resolver) answerZone(req *dns.Msg, l *lookup) *dns.Msg {
	q := req.Question[0]
	apex := strings.EqualFold(q.Name, l.zone)
	qtype := q.Qtype
	if qtype == dns.TypeNS && !apex {
		qtype = dns.TypeNone // answered like any other type
	}
	var answer, extra []dns.RR
	var err error
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		answer, err = r.addresses(l, q.Name, qtype, nil)
	case dns.TypeTXT:
		answer, err = r.txt(l, q.Name)
	case dns.TypeCNAME:
		answer, err = r.cname(l, q.Name)
	case dns.TypeSRV:
		answer, extra, err = r.srv(l, q.Name)
	case dns.TypeMX:
		// The cluster has no mail exchangers: only whether the name
		// exists matters.
		_, err = r.resolve(l, q.Name, qtype)
	case dns.TypePTR:
		// Forward names have no PTR records (reverse names are not in
		// the zone): likewise.
		_, err = r.records(l, q.Name)
	case dns.TypeSOA:
		if apex {
			answer = []dns.RR{r.soa(l.zone)}
		}
	case dns.TypeNS:
		answer, extra = r.ns(l, q.Name)
	case dns.TypeAXFR, dns.TypeIXFR:
		return new(dns.Msg).SetRcode(req, dns.RcodeRefused)
	default:
		// Whether the name exists, by its A records.
		_, err = r.addresses(l, q.Name, dns.TypeA, nil)
	}

	resp := new(dns.Msg)
	switch {
	case errors.Is(err, errName):
		rcode := dns.RcodeNameError
		if !r.HasSynced() {
			rcode = dns.RcodeServerFailure // it may exist
		}
		return r.negative(req, rcode, l.zone)
	case err != nil:
		return resp.SetRcode(req, dns.RcodeServerFailure)
	case len(answer) == 0:
		return r.negative(req, dns.RcodeSuccess, l.zone)
	}
	resp.SetReply(req)
	resp.Authoritative = true
	resp.Answer, resp.Extra = answer, extra
	return resp
}

// negative is NXDOMAIN or NODATA (or SERVFAIL), with the zone's SOA for
// negative caching.
func (r *Resolver) negative(req *dns.Msg, rcode int, zone string) *dns.Msg {
	resp := new(dns.Msg).SetRcode(req, rcode)
	resp.Authoritative = true
	resp.Ns = []dns.RR{r.soa(zone)}
	return resp
}

func (r *Resolver) header(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: r.ttl}
}

func (r *Resolver) soa(zone string) dns.RR {
	hdr := r.header(zone, dns.TypeSOA)
	hdr.Ttl = min(r.ttl, 300)
	return &dns.SOA{
		Hdr: hdr, Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone,
		Serial: uint32(r.modified.Load()), Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: r.ttl,
	}
}

// addresses are the A or AAAA records of name; an ExternalName within the
// zone is followed (its CNAME is kept only if the target resolves), one
// outside is answered by its CNAME alone.
func (r *Resolver) addresses(l *lookup, name string, qtype uint16, chain []dns.RR) ([]dns.RR, error) {
	recs, err := r.resolve(l, name, qtype)
	if err != nil {
		return nil, err
	}
	var out []dns.RR
	seen := map[string]bool{}
	for _, rec := range recs {
		ip := net.ParseIP(rec.host)
		if ip == nil {
			target := dns.Fqdn(rec.host)
			if dns.IsSubDomain(name, target) || len(chain) > maxCNAMEs {
				continue // a loop, or too long a chain
			}
			cname := &dns.CNAME{Hdr: r.header(name, dns.TypeCNAME), Target: target}
			if slices.ContainsFunc(chain, func(rr dns.RR) bool { return dns.IsDuplicate(rr, cname) }) {
				continue
			}
			if !r.inZone(target) {
				out = append(out, cname)
				continue
			}
			next, err := r.addresses(l, target, qtype, append(chain, cname))
			if err == nil && len(next) > 0 {
				out = append(out, cname)
				out = append(out, next...)
			}
			continue
		}
		if seen[rec.host] {
			continue
		}
		switch v4 := ip.To4(); {
		case qtype == dns.TypeA && v4 != nil:
			out = append(out, &dns.A{Hdr: r.header(name, dns.TypeA), A: v4})
		case qtype == dns.TypeAAAA && v4 == nil:
			out = append(out, &dns.AAAA{Hdr: r.header(name, dns.TypeAAAA), AAAA: ip})
		default:
			continue
		}
		seen[rec.host] = true
	}
	return out, nil
}

// txt answers dns-version.<zone>; any other name has no TXT record.
func (r *Resolver) txt(l *lookup, name string) ([]dns.RR, error) {
	if strings.EqualFold(name, "dns-version."+l.zone) {
		hdr := r.header(name, dns.TypeTXT)
		hdr.Ttl = versionTTL
		return []dns.RR{&dns.TXT{Hdr: hdr, Txt: []string{schemaVersion}}}, nil
	}
	// As CoreDNS: NODATA if the name has records, NXDOMAIN otherwise
	// (so also for the apex and a namespace).
	if recs, _ := r.records(l, name); len(recs) > 0 {
		return nil, nil
	}
	return nil, errName
}

func (r *Resolver) cname(l *lookup, name string) ([]dns.RR, error) {
	recs, err := r.resolve(l, name, dns.TypeCNAME)
	if err != nil || len(recs) == 0 || net.ParseIP(recs[0].host) != nil {
		return nil, err
	}
	return []dns.RR{&dns.CNAME{Hdr: r.header(name, dns.TypeCNAME), Target: dns.Fqdn(recs[0].host)}}, nil
}

// srv lists a port per record, targeting the Service's name or, headless,
// each endpoint's, with the targets' addresses as additional records.
// Every record weighs the same, 100 shared among them.
func (r *Resolver) srv(l *lookup, name string) (answer, extra []dns.RR, err error) {
	recs, err := r.resolve(l, name, dns.TypeSRV)
	if err != nil {
		return nil, nil, err
	}
	if len(recs) == 0 {
		return nil, nil, nil
	}
	weight := uint16(max(1, math.Floor(100/float64(len(recs)))))
	type key struct {
		name, addr string
		port       int
	}
	seen := map[key]bool{}
	for _, rec := range recs {
		if rec.port == noPort {
			continue
		}
		if k := (key{name: rec.target, port: rec.port}); !seen[k] {
			seen[k] = true
			answer = append(answer, &dns.SRV{Hdr: r.header(name, dns.TypeSRV), Weight: weight, Port: uint16(rec.port), Target: rec.target})
		}
		if k := (key{name: rec.target, addr: rec.host}); !seen[k] {
			seen[k] = true
			extra = append(extra, r.address(rec.target, net.ParseIP(rec.host)))
		}
	}
	return answer, extra, nil
}

func (r *Resolver) address(name string, ip net.IP) dns.RR {
	if v4 := ip.To4(); v4 != nil {
		return &dns.A{Hdr: r.header(name, dns.TypeA), A: v4}
	}
	return &dns.AAAA{Hdr: r.header(name, dns.TypeAAAA), AAAA: ip}
}

// ns answers the apex's NS, with the nameservers' addresses.
func (r *Resolver) ns(l *lookup, name string) (answer, extra []dns.RR) {
	for _, ns := range r.nameservers(l) {
		extra = append(extra, r.address(ns.name, ns.ip))
		if !slices.ContainsFunc(answer, func(rr dns.RR) bool { return rr.(*dns.NS).Ns == ns.name }) {
			answer = append(answer, &dns.NS{Hdr: r.header(name, dns.TypeNS), Ns: ns.name})
		}
	}
	return answer, extra
}

func isReverse(name string) bool {
	return dns.IsSubDomain("in-addr.arpa.", name) || dns.IsSubDomain("ip6.arpa.", name)
}

// reverseIP is the address a full reverse name stands for, in canonical
// form; empty if it stands for none.
func reverseIP(name string) string {
	labels := dns.SplitDomainName(strings.ToLower(name))
	slices.Reverse(labels)
	var ip net.IP
	switch {
	case len(labels) == 6 && labels[0] == "arpa" && labels[1] == "in-addr":
		ip = net.ParseIP(strings.Join(labels[2:], ".")).To4()
	case len(labels) == 34 && labels[0] == "arpa" && labels[1] == "ip6":
		var b strings.Builder
		for i, nibble := range labels[2:] {
			if len(nibble) != 1 {
				return ""
			}
			if i > 0 && i%4 == 0 {
				b.WriteByte(':')
			}
			b.WriteString(nibble)
		}
		ip = net.ParseIP(b.String())
	}
	if ip == nil {
		return ""
	}
	return ip.String()
}
