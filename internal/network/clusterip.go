package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddClusterIP makes ip a local address of the node namespace (on its lo),
// so that pods reach it through their default route and the agent can
// listen on it there.
func (n *Node) AddClusterIP(ip netip.Addr) error {
	return n.clusterIP(ip, true)
}

// RemoveClusterIP undoes AddClusterIP; removing an absent address succeeds.
func (n *Node) RemoveClusterIP(ip netip.Addr) error {
	return n.clusterIP(ip, false)
}

func (n *Node) clusterIP(ip netip.Addr, add bool) error {
	h, ns, err := handle(n.NodeNS())
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
	if add {
		if err := h.AddrReplace(lo, addr); err != nil {
			return fmt.Errorf("cluster IP %s: %w", ip, err)
		}
		return nil
	}
	if err := h.AddrDel(lo, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("cluster IP %s: %w", ip, err)
	}
	return nil
}

// Listen opens a listener in the node namespace (on a cluster IP).
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	return ListenIn(n.NodeNS(), network, addr)
}

// ListenPacket opens a packet socket in the node namespace.
func (n *Node) ListenPacket(network, addr string) (net.PacketConn, error) {
	return ListenPacketIn(n.NodeNS(), network, addr)
}

// Dial connects from the node namespace: to pods on the bridge (the
// Service proxy's backends, probes).
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, n.NodeNS(), network, addr)
}
