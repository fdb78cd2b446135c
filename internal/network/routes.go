package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pods on other nodes are reached through the agent's own namespace (the
// machine's network): once there is a node elsewhere, the node namespace
// gets an uplink, a veth to the machine's namespace, and
//
//	node namespace:    default route through the uplink
//	machine namespace: this node's pod CIDR through the uplink, and each
//	                   other node's pod CIDR through that node's address
//
// with forwarding on in both, and proxy ARP on both ends of the uplink so
// that it needs no addresses of its own. A node alone (the usual `moorage
// up`) never touches the machine's namespace.

// uplinkName is the uplink's end in the node namespace.
const uplinkName = "uplink"

// routeProtocol marks the machine's routes made here, so that stale ones
// are found again (rtnetlink protocol numbers above 4 are free for
// routing daemons).
const routeProtocol netlink.RouteProtocol = 77

// Route makes pods of the other nodes reachable: remote maps each other
// node's pod CIDR to that node's address, which the machine must reach
// directly. Routes of nodes no longer listed are removed.
func (n *Node) Route(remote map[netip.Prefix]netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	machine, err := netlink.NewHandle() // of the calling thread's namespace
	if err != nil {
		return err
	}
	defer machine.Close()
	if _, err := machine.LinkByName(n.machineEnd()); err != nil && len(remote) == 0 {
		return nil
	}
	up, err := n.ensureUplink(machine)
	if err != nil {
		return fmt.Errorf("network: uplink: %w", err)
	}
	want := map[netip.Prefix]bool{n.cidr: true}
	if err := machine.RouteReplace(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: ipNet(n.cidr), Protocol: routeProtocol, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route to this node's pods: %w", err)
	}
	for cidr, via := range remote {
		want[cidr.Masked()] = true
		r := &netlink.Route{Dst: ipNet(cidr.Masked()), Gw: via.AsSlice(), Protocol: routeProtocol}
		if err := machine.RouteReplace(r); err != nil {
			return fmt.Errorf("route to %s via %s: %w", cidr, via, err)
		}
	}
	routes, err := machine.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if ok && !want[netip.PrefixFrom(p.Unmap(), ones)] && (r.LinkIndex == up.Attrs().Index || r.Gw != nil) {
			_ = machine.RouteDel(&r)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// machineEnd is the uplink's name in the machine's namespace: unique per
// node, since several agents may share a machine.
func (n *Node) machineEnd() string { return vethName("uplink:" + n.dir) }

func (n *Node) ensureUplink(machine *netlink.Handle) (netlink.Link, error) {
	name := n.machineEnd()
	if l, err := machine.LinkByName(name); err == nil {
		return l, nil
	}
	node, nodeNS, err := handle(n.NodeNS())
	if err != nil {
		return nil, err
	}
	defer nodeNS.Close()
	defer node.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := machine.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: uplinkName, PeerNamespace: netlink.NsFd(nodeNS)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, err
	}
	l, err := machine.LinkByName(name)
	if err != nil {
		return nil, err
	}
	if err := machine.LinkSetUp(l); err != nil {
		return nil, err
	}
	if err := setSysctls(map[string]string{"ipv4/ip_forward": "1", "ipv4/conf/" + name + "/proxy_arp": "1"}); err != nil {
		return nil, err
	}
	err = In(n.NodeNS(), func() error {
		return setSysctls(map[string]string{"ipv4/ip_forward": "1", "ipv4/conf/" + uplinkName + "/proxy_arp": "1"})
	})
	if err != nil {
		return nil, err
	}
	peer, err := node.LinkByName(uplinkName)
	if err != nil {
		return nil, err
	}
	if err := node.LinkSetUp(peer); err != nil {
		return nil, err
	}
	def := &netlink.Route{LinkIndex: peer.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Scope: netlink.SCOPE_LINK}
	if err := node.RouteReplace(def); err != nil {
		return nil, fmt.Errorf("default route of the node namespace: %w", err)
	}
	return l, nil
}

// setSysctls writes net sysctls of the calling thread's namespace (the
// caller is on the machine's namespace, or locked in another by In).
func setSysctls(values map[string]string) error {
	for key, v := range values {
		if err := os.WriteFile(filepath.Join("/proc/sys/net", key), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}
