package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moorage/moorage/internal/network"
)

// A lab is machines on one network, on this host: network namespaces
// (pinned under a temporary directory), each with eth0 at 10.77.0.<i+1>/24
// on a switch (a bridge in a namespace of its own). Nothing is added to
// the host's own network, so labs of parallel tests never collide.
type lab struct {
	dir      string
	machines []string // the namespaces' pinned paths
}

// machineIP is machine i's address.
func machineIP(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }

func newLab(t *testing.T, n int) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a lab of machines needs network namespaces: root")
	}
	dir, err := os.MkdirTemp("", "lab-")
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{dir: dir}
	t.Cleanup(func() {
		for _, m := range l.machines {
			_ = network.RemoveNamespace(m)
		}
		_ = network.RemoveNamespace(filepath.Join(dir, "switch"))
		os.RemoveAll(dir)
	})
	sw := filepath.Join(dir, "switch")
	if err := network.CreateNamespace(sw); err != nil {
		t.Fatal(err)
	}
	swh, swns := nsHandle(t, sw)
	defer swns.Close()
	defer swh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "sw0"
	if err := swh.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	br, err := swh.LinkByName("sw0")
	if err != nil {
		t.Fatal(err)
	}
	if err := swh.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		m := filepath.Join(dir, fmt.Sprintf("m%d", i))
		if err := network.CreateNamespace(m); err != nil {
			t.Fatal(err)
		}
		l.machines = append(l.machines, m)
		h, ns := nsHandle(t, m)
		port := netlink.NewLinkAttrs()
		port.Name, port.MasterIndex = fmt.Sprintf("port%d", i), br.Attrs().Index
		if err := swh.LinkAdd(&netlink.Veth{LinkAttrs: port, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}); err != nil {
			t.Fatal(err)
		}
		if p, err := swh.LinkByName(port.Name); err != nil || swh.LinkSetUp(p) != nil {
			t.Fatalf("switch port %s: %v", port.Name, err)
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(machineIP(i)), Mask: net.CIDRMask(24, 32)}}
		if err := h.AddrAdd(eth0, addr); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"eth0", "lo"} {
			if l, err := h.LinkByName(name); err != nil || h.LinkSetUp(l) != nil {
				t.Fatalf("machine %d: %s up: %v", i, name, err)
			}
		}
		h.Close()
		ns.Close()
	}
	return l
}

func nsHandle(t *testing.T, path string) (*netlink.Handle, netns.NsHandle) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	return h, ns
}
