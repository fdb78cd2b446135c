package nodeipam_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/controller/nodeipam"
	"github.com/moorage/moorage/internal/testserver"
)

// The server runs the controller: nodes get distinct blocks of the
// cluster CIDR.
func TestNodesGetDistinctBlocks(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	for _, name := range []string{"n1", "n2", "n3"} {
		if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		clear(seen)
		for _, n := range nodes.Items {
			if n.Spec.PodCIDR != "" {
				if len(n.Spec.PodCIDRs) != 1 || n.Spec.PodCIDRs[0] != n.Spec.PodCIDR {
					t.Fatalf("node %s: podCIDR %q, podCIDRs %v", n.Name, n.Spec.PodCIDR, n.Spec.PodCIDRs)
				}
				seen[n.Spec.PodCIDR] = n.Name
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"} {
		if seen[want] == "" {
			t.Errorf("no node has %s (assigned: %v)", want, seen)
		}
	}
}

func TestFreeBlocks(t *testing.T) {
	srv := testserver.Start(t)
	ctrl, err := nodeipam.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), nodeipam.Options{ClusterCIDR: netip.MustParsePrefix("10.9.0.0/23")})
	if err != nil {
		t.Fatal(err)
	}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	ctrl.SetNodeLister(corelisters.NewNodeLister(indexer))
	add := func(name, cidr string) {
		_ = indexer.Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}})
	}
	add("a", "10.9.0.0/24")
	add("b", "")
	add("c", "")
	got, ok := ctrl.Free("b")
	if !ok || got.String() != "10.9.1.0/24" {
		t.Fatalf("b got %v, %v", got, ok)
	}
	if again, _ := ctrl.Free("b"); again != got {
		t.Fatalf("b asked again: %v, want the block it holds", again)
	}
	if got, ok := ctrl.Free("c"); ok {
		t.Fatalf("c got %v from a full range", got)
	}
	_ = indexer.Delete(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}})
	if got, ok := ctrl.Free("c"); !ok || got.String() != "10.9.0.0/24" {
		t.Fatalf("after a was deleted c got %v, %v", got, ok)
	}
	if _, err := nodeipam.New(srv.Loopback, slog.Default(), nodeipam.Options{ClusterCIDR: netip.MustParsePrefix("10.9.0.0/24"), NodeMaskSize: 16}); err == nil {
		t.Error("a mask size wider than the cluster CIDR was accepted")
	}
}
