package network

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

// machines makes two network namespaces joined by a veth, 10.77.0.1/24 and
// 10.77.0.2/24: two machines on one network.
func machines(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	m1, m2 := filepath.Join(dir, "m1"), filepath.Join(dir, "m2")
	for _, p := range []string{m1, m2} {
		if err := createNetNS(p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = removeNetNS(p) })
	}
	h1, ns1, err := handle(m1)
	if err != nil {
		t.Fatal(err)
	}
	defer ns1.Close()
	defer h1.Close()
	h2, ns2, err := handle(m2)
	if err != nil {
		t.Fatal(err)
	}
	defer ns2.Close()
	defer h2.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "eth0"
	if err := h1.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns2)}); err != nil {
		t.Fatal(err)
	}
	for i, h := range []*netlink.Handle{h1, h2} {
		l, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 77, 0, byte(i+1)), Mask: net.CIDRMask(24, 32)}}
		if err := h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if err := linkUp(h, "lo"); err != nil {
			t.Fatal(err)
		}
	}
	return m1, m2
}

// Pods on two nodes of two machines reach each other through the routes.
func TestPodsOnTwoMachines(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	m1, m2 := machines(t)
	cidr1, cidr2 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24")
	var n1, n2 *Node
	var p1, p2 Pod
	dir := t.TempDir()
	setup := func(m string, sub string, cidr, remote netip.Prefix, via string, n **Node, p *Pod) {
		err := In(m, func() error {
			var err error
			if *n, err = Open(filepath.Join(dir, sub), cidr); err != nil {
				return err
			}
			if *p, err = (*n).Attach("pod-" + sub); err != nil {
				return err
			}
			return (*n).Route(map[netip.Prefix]netip.Addr{remote: netip.MustParseAddr(via)})
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = (*n).Detach("pod-" + sub)
			_ = removeNetNS((*n).NodeNS())
		})
	}
	setup(m1, "n1", cidr1, cidr2, "10.77.0.2", &n1, &p1)
	setup(m2, "n2", cidr2, cidr1, "10.77.0.1", &n2, &p2)

	l, err := ListenIn(p2.NetNS, "tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echo(l)
	roundTrip(t, p1.NetNS, net.JoinHostPort(p2.IP.String(), "9000"))
	// and the other machine itself, from a pod
	ml, err := ListenIn(m2, "tcp", "10.77.0.2:9001")
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Close()
	go echo(ml)
	roundTrip(t, p1.NetNS, "10.77.0.2:9001")

	// A node that leaves takes its route with it.
	if err := In(m1, func() error { return n1.Route(nil) }); err != nil {
		t.Fatal(err)
	}
	err = In(m1, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		routes, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == cidr2.String() {
				t.Errorf("route to %s still there", cidr2)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
