// Package network gives every pod of a node its own network namespace and
// address, as a CNI bridge plugin does for the kubelet, without touching the
// host's own network:
//
//	host (the agent's namespace; untouched)
//	node namespace  <dir>/netns/node: bridge moorage0 with the gateway
//	                (the first address of the node's pod CIDR), and on lo
//	                the cluster IPs the agent serves (DNS, Services)
//	pod namespaces  <dir>/netns/<sandbox>: lo, and eth0 (a veth whose
//	                other end is on the bridge) with the pod's IP and a
//	                default route through the gateway
//
// So pods reach each other over the bridge, and reach cluster IPs (the DNS
// server, the kubernetes Service, other Services) as local addresses of the
// node namespace, where the agent listens. Because nothing is added to the
// host's namespace, several nodes (or test clusters) on one machine never
// collide, even with the same pod CIDR.
//
// Addresses come from the node's pod CIDR (Node.spec.podCIDR, given by the
// server's node-ipam controller); each allocation is a file under
// <dir>/ips named by the address, so that a restarted agent keeps them.
package network

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BridgeName is the node namespace's bridge.
const BridgeName = "moorage0"

// Node is one node's pod network.
type Node struct {
	dir     string
	cidr    netip.Prefix
	gateway netip.Addr

	mu sync.Mutex // allocations and attachments
}

// Pod is a pod's place on the network.
type Pod struct {
	ID    string     `json:"id"`
	NetNS string     `json:"netns"` // the namespace's pinned path
	IP    netip.Addr `json:"ip"`
	Veth  string     `json:"veth"` // its end on the bridge
}

// Open prepares the node's network under dir for the pod CIDR: the node
// namespace, its bridge and gateway. Calling it again (an agent restart)
// finds what exists.
func Open(dir string, podCIDR netip.Prefix) (*Node, error) {
	if !podCIDR.Addr().Is4() || podCIDR.Bits() > 30 {
		return nil, fmt.Errorf("network: pod CIDR %s: want an IPv4 range of at least 4 addresses", podCIDR)
	}
	podCIDR = podCIDR.Masked()
	n := &Node{dir: dir, cidr: podCIDR, gateway: podCIDR.Addr().Next()}
	for _, sub := range []string{"netns", "ips", "pods"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := n.ensureNodeNS(); err != nil {
		return nil, fmt.Errorf("network: node namespace: %w", err)
	}
	return n, nil
}

// CIDR is the node's pod range; Gateway its bridge's address.
func (n *Node) CIDR() netip.Prefix  { return n.cidr }
func (n *Node) Gateway() netip.Addr { return n.gateway }

// NodeNS is the path of the node namespace (where cluster IPs are served).
func (n *Node) NodeNS() string { return filepath.Join(n.dir, "netns", "node") }

func (n *Node) podNS(id string) string        { return filepath.Join(n.dir, "netns", id) }
func (n *Node) podRecord(id string) string    { return filepath.Join(n.dir, "pods", id+".json") }
func (n *Node) ipRecord(ip netip.Addr) string { return filepath.Join(n.dir, "ips", ip.String()) }

// handle opens a netlink handle on the namespace pinned at path.
func handle(path string) (*netlink.Handle, netns.NsHandle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, 0, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, 0, err
	}
	return h, ns, nil
}

func (n *Node) ensureNodeNS() error {
	path := n.NodeNS()
	if !isNetNS(path) {
		_ = os.Remove(path)
		if err := createNetNS(path); err != nil {
			return err
		}
	}
	h, ns, err := handle(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	br, err := h.LinkByName(BridgeName)
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = BridgeName
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", BridgeName, err)
		}
		if br, err = h.LinkByName(BridgeName); err != nil {
			return err
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.gateway.AsSlice(), Mask: net.CIDRMask(n.cidr.Bits(), 32)}}
	if err := h.AddrReplace(br, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr.IPNet, BridgeName, err)
	}
	return h.LinkSetUp(br)
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// Attach gives the sandbox id its namespace, address and veth; attaching a
// sandbox that is attached already returns what it has.
func (n *Node) Attach(id string) (Pod, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.lookup(id); ok && isNetNS(p.NetNS) {
		return p, nil
	}
	// Whatever a crash left half done goes first.
	if err := n.detach(id); err != nil {
		return Pod{}, err
	}
	ip, err := n.allocate(id)
	if err != nil {
		return Pod{}, err
	}
	p := Pod{ID: id, NetNS: n.podNS(id), IP: ip, Veth: vethName(id)}
	if err := n.wire(p); err != nil {
		return Pod{}, errors.Join(fmt.Errorf("network for sandbox %s: %w", id, err), n.detach(id))
	}
	if err := writeJSON(n.podRecord(id), p); err != nil {
		return Pod{}, errors.Join(err, n.detach(id))
	}
	return p, nil
}

// vethName is the bridge end's name: unique per sandbox, because the
// kernel frees a deleted namespace's interfaces asynchronously.
func vethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "mv" + hex.EncodeToString(sum[:6])
}

func (n *Node) wire(p Pod) error {
	if err := createNetNS(p.NetNS); err != nil {
		return err
	}
	node, nodeNS, err := handle(n.NodeNS())
	if err != nil {
		return err
	}
	defer nodeNS.Close()
	defer node.Close()
	pod, podNS, err := handle(p.NetNS)
	if err != nil {
		return err
	}
	defer podNS.Close()
	defer pod.Close()

	br, err := node.LinkByName(BridgeName)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", BridgeName, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MasterIndex = p.Veth, br.Attrs().Index
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(podNS)}
	if err := node.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", p.Veth, err)
	}
	if err := linkUp(node, p.Veth); err != nil {
		return err
	}
	if err := linkUp(pod, "lo"); err != nil {
		return err
	}
	eth0, err := pod.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.IP.AsSlice(), Mask: net.CIDRMask(n.cidr.Bits(), 32)}}
	if err := pod.AddrAdd(eth0, addr); err != nil {
		return fmt.Errorf("address %s: %w", addr.IPNet, err)
	}
	if err := pod.LinkSetUp(eth0); err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: n.gateway.AsSlice()}
	if err := pod.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %s: %w", n.gateway, err)
	}
	return nil
}

// Detach removes the sandbox's namespace, veth and address. Detaching a
// sandbox that has none succeeds.
func (n *Node) Detach(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.detach(id)
}

func (n *Node) detach(id string) error {
	if node, nodeNS, err := handle(n.NodeNS()); err == nil {
		if l, err := node.LinkByName(vethName(id)); err == nil {
			_ = node.LinkDel(l) // the peer goes with it
		}
		node.Close()
		nodeNS.Close()
	}
	if err := removeNetNS(n.podNS(id)); err != nil {
		return err
	}
	if err := n.release(id); err != nil {
		return err
	}
	if err := os.Remove(n.podRecord(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Lookup returns an attached sandbox's place on the network.
func (n *Node) Lookup(id string) (Pod, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lookup(id)
}

func (n *Node) lookup(id string) (Pod, bool) {
	var p Pod
	b, err := os.ReadFile(n.podRecord(id))
	if err != nil || json.Unmarshal(b, &p) != nil {
		return Pod{}, false
	}
	return p, true
}

// Attached lists the sandboxes that have a network.
func (n *Node) Attached() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(n.dir, "pods"))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && id != "" {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// allocate claims the first free address of the range (after the gateway)
// for id: a file created exclusively, so two claims never share one.
func (n *Node) allocate(id string) (netip.Addr, error) {
	last := lastAddr(n.cidr)
	for ip := n.gateway.Next(); ip.Less(last); ip = ip.Next() {
		f, err := os.OpenFile(n.ipRecord(ip), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return netip.Addr{}, err
		}
		_, werr := f.WriteString(id)
		if err := errors.Join(werr, f.Close()); err != nil {
			_ = os.Remove(n.ipRecord(ip))
			return netip.Addr{}, err
		}
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("no free address left in the node's pod range %s", n.cidr)
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// release frees every address id holds (more than one only when a crash
// came between an allocation and its record).
func (n *Node) release(id string) error {
	entries, err := os.ReadDir(filepath.Join(n.dir, "ips"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(n.dir, "ips", e.Name())
		if b, err := os.ReadFile(path); err == nil && string(b) == id {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// CloseIfIdle removes the node namespace when no pod uses it (an agent
// stopping with no pods leaves nothing behind; Open makes it again).
func (n *Node) CloseIfIdle() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ids, err := n.Attached(); err != nil || len(ids) > 0 {
		return err
	}
	return removeNetNS(n.NodeNS())
}
