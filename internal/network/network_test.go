package network

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func openTestNode(t *testing.T) *Node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	dir := t.TempDir()
	n, err := Open(dir, netip.MustParsePrefix("10.244.7.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ids, _ := n.Attached()
		for _, id := range ids {
			_ = n.Detach(id)
		}
		_ = removeNetNS(n.NodeNS())
	})
	return n
}

// echo serves one line back on l.
func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte(line))
		}()
	}
}

func roundTrip(t *testing.T, ns, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialIn(ctx, ns, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, filepath.Base(ns), err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("hello\n"))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo from %s: %q, %v", addr, line, err)
	}
}

func TestPodsReachEachOtherAndClusterIPs(t *testing.T) {
	n := openTestNode(t)
	a, err := n.Attach("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Attach("pod-b")
	if err != nil {
		t.Fatal(err)
	}
	if a.IP != netip.MustParseAddr("10.244.7.2") || b.IP != netip.MustParseAddr("10.244.7.3") {
		t.Fatalf("addresses %s and %s, want 10.244.7.2 and .3", a.IP, b.IP)
	}
	again, err := n.Attach("pod-a")
	if err != nil || again != a {
		t.Fatalf("attaching again: %+v, %v; want %+v", again, err, a)
	}

	l, err := ListenIn(b.NetNS, "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echo(l)
	roundTrip(t, a.NetNS, net.JoinHostPort(b.IP.String(), "8080"))
	roundTrip(t, n.NodeNS(), net.JoinHostPort(b.IP.String(), "8080"))

	// A cluster IP served in the node namespace is reached from pods.
	vip := netip.MustParseAddr("10.96.0.10")
	if err := n.AddClusterIP(vip); err != nil {
		t.Fatal(err)
	}
	sl, err := n.Listen("tcp", "10.96.0.10:53")
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	go echo(sl)
	roundTrip(t, a.NetNS, "10.96.0.10:53")
	if err := n.RemoveClusterIP(vip); err != nil {
		t.Fatal(err)
	}
	if err := n.RemoveClusterIP(vip); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestDetachFreesEverything(t *testing.T) {
	n := openTestNode(t)
	p, err := n.Attach("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Detach("pod-a"); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach("pod-a"); err != nil {
		t.Fatalf("detaching twice: %v", err)
	}
	if _, err := os.Stat(p.NetNS); !os.IsNotExist(err) {
		t.Errorf("namespace file still there: %v", err)
	}
	if ids, _ := n.Attached(); len(ids) != 0 {
		t.Errorf("still attached: %v", ids)
	}
	h, ns, err := handle(n.NodeNS())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer h.Close()
	if _, err := h.LinkByName(p.Veth); err == nil {
		t.Errorf("veth %s still on the bridge", p.Veth)
	}
	// The address is free again.
	q, err := n.Attach("pod-b")
	if err != nil || q.IP != p.IP {
		t.Fatalf("reattach: %+v, %v; want address %s", q, err, p.IP)
	}
}

func TestReopenKeepsPods(t *testing.T) {
	n := openTestNode(t)
	p, err := n.Attach("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(n.dir, n.cidr)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := m.Lookup("pod-a"); !ok || got != p {
		t.Fatalf("after reopening: %+v, %v", got, ok)
	}
	h, ns, err := handle(m.NodeNS())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer h.Close()
	br, err := h.LinkByName(BridgeName)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := h.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IP.String() != "10.244.7.1" {
		t.Fatalf("bridge addresses %v", addrs)
	}
}
