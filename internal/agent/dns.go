package agent

import (
	"context"
	"net"

	"k8s.io/client-go/informers"

	"github.com/moorage/moorage/internal/dns"
	"github.com/moorage/moorage/internal/network"
)

// serveDNS answers the cluster's names (internal/dns) at ClusterDNS:53,
// UDP and TCP, in the node's network namespace, until ctx ends. Every node
// serves its own pods, so names resolve on each node without a DNS pod.
func (a *Agent) serveDNS(ctx context.Context, node *network.Node, factory informers.SharedInformerFactory) {
	if err := node.AddClusterIP(ClusterDNS); err != nil {
		a.log.Warn("cluster DNS address", "err", err)
		return
	}
	addr := net.JoinHostPort(ClusterDNS.String(), "53")
	pc, err := node.ListenPacket("udp", addr)
	if err != nil {
		a.log.Warn("cluster DNS", "err", err)
		return
	}
	l, err := node.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		a.log.Warn("cluster DNS", "err", err)
		return
	}
	resolver := dns.NewWithInformers(factory, dns.Options{})
	go resolver.Run(ctx)
	if err := dns.Serve(ctx, resolver, pc, l); err != nil {
		a.log.Warn("cluster DNS", "err", err)
	}
}
