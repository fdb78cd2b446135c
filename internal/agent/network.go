package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/network"
)

// Pods get their own network namespace and an address from the node's pod
// CIDR (package network); hostNetwork pods keep the node's. The cluster's
// DNS server and Service IPs are served by the agent inside the node's
// network namespace (services.go).

// ClusterDNS is the address of the cluster DNS server in every pod's
// resolv.conf: upstream's usual kube-dns Service IP.
var ClusterDNS = netip.MustParseAddr("10.96.0.10") // the kube-dns Service the server makes (apiserver.ClusterDNS)

// errNetworkNotReady is the sandbox error until the node's network is up,
// in the kubelet's words.
var errNetworkNotReady = errors.New("network is not ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:the node has no pod CIDR yet")

// openNetwork waits for the server to give the node its pod CIDR, then
// opens the node's pod network. Pods wait for it (errNetworkNotReady).
func (a *Agent) openNetwork(ctx context.Context) (*network.Node, error) {
	var cidr netip.Prefix
	for {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.opts.NodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			if cidr, err = netip.ParsePrefix(node.Spec.PodCIDR); err != nil {
				return nil, fmt.Errorf("node's pod CIDR %q: %w", node.Spec.PodCIDR, err)
			}
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return network.Open(filepath.Join(a.opts.DataDir, "network"), cidr)
}

// podNetwork returns the pod's network: its namespace and address, made
// on first use. Nil for hostNetwork pods.
func (a *Agent) podNetwork(pod *corev1.Pod) (*network.Pod, error) {
	if pod.Spec.HostNetwork {
		return nil, nil
	}
	n := a.net.Load()
	if n == nil {
		return nil, errNetworkNotReady
	}
	p, err := n.Attach(string(pod.UID))
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// podIP is the address the pod reports: its own, or the node's for
// hostNetwork pods; "" while it has none yet.
func (a *Agent) podIP(pod *corev1.Pod) string {
	if pod.Spec.HostNetwork {
		return a.ip
	}
	if n := a.net.Load(); n != nil {
		if p, ok := n.Lookup(string(pod.UID)); ok {
			return p.IP.String()
		}
	}
	return ""
}

// detachNetwork removes the pod's namespace and frees its address.
func (a *Agent) detachNetwork(uid string) error {
	if n := a.net.Load(); n != nil {
		return n.Detach(uid)
	}
	return nil
}

// pruneNetworks detaches the networks of sandboxes that no longer exist
// (a crash between the two removals).
func (a *Agent) pruneNetworks() {
	n := a.net.Load()
	if n == nil || a.runtime == nil {
		return
	}
	sandboxes, err := a.runtime.ListSandboxes()
	if err != nil {
		return
	}
	live := map[string]bool{}
	for _, id := range sandboxes {
		live[id] = true
	}
	attached, _ := n.Attached()
	for _, id := range attached {
		if !live[id] {
			if err := n.Detach(id); err != nil {
				a.log.Warn("removing the network of a gone sandbox", "sandbox", id, "err", err)
			}
		}
	}
}

// resolvConf is the pod's /etc/resolv.conf by its dnsPolicy, as the
// kubelet writes it: the cluster DNS with upstream's search path and
// ndots:5 (ClusterFirst; hostNetwork pods fall back to the node's file
// unless ClusterFirstWithHostNet), the node's file (Default), or only
// dnsConfig (None); dnsConfig's nameservers, searches and options are
// then merged in.
func resolvConf(pod *corev1.Pod, host []byte) []byte {
	hostServers, hostSearch, hostOptions := parseResolvConf(host)
	var servers, search, options []string
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		servers = []string{ClusterDNS.String()}
		search = append([]string{pod.Namespace + ".svc.cluster.local", "svc.cluster.local", "cluster.local"}, hostSearch...)
		options = []string{"ndots:5"}
	case corev1.DNSDefault:
		servers, search, options = hostServers, hostSearch, hostOptions
	case corev1.DNSNone:
	}
	if c := pod.Spec.DNSConfig; c != nil {
		servers = appendNew(servers, c.Nameservers...)
		search = appendNew(search, c.Searches...)
		for _, o := range c.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			options = mergeOption(options, o.Name, opt)
		}
	}
	if len(servers) > 3 {
		servers = servers[:3] // the resolver reads three
	}
	var b strings.Builder
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return []byte(b.String())
}

func parseResolvConf(b []byte) (servers, search, options []string) {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			servers = append(servers, f[1])
		case "search", "domain":
			search = f[1:]
		case "options":
			options = append(options, f[1:]...)
		}
	}
	return servers, search, options
}

func appendNew(list []string, more ...string) []string {
	for _, m := range more {
		if !slices.Contains(list, m) {
			list = append(list, m)
		}
	}
	return list
}

// mergeOption sets option name to opt, replacing an option of that name.
func mergeOption(options []string, name, opt string) []string {
	for i, o := range options {
		if o == name || strings.HasPrefix(o, name+":") {
			options[i] = opt
			return options
		}
	}
	return append(options, opt)
}

// hostsFile is the kubelet's managed /etc/hosts for a pod with its own
// network; hostNetwork pods get the node's own file.
func hostsFile(pod *corev1.Pod, ip string) ([]byte, error) {
	var b strings.Builder
	if pod.Spec.HostNetwork {
		node, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return nil, err
		}
		b.Write(node)
	} else {
		hostname := podHostname(pod)
		b.WriteString("# Kubernetes-managed hosts file.\n")
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
		if pod.Spec.Subdomain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.cluster.local\t%s\n", ip, hostname, pod.Spec.Subdomain, pod.Namespace, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, alias := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", alias.IP, strings.Join(alias.Hostnames, "\t"))
		}
	}
	return []byte(b.String()), nil
}

// routeNodes keeps routes to the pods of nodes on other machines (another
// InternalIP) until ctx ends; nodes sharing this machine's address need
// none, and a node alone changes nothing on the machine.
func (a *Agent) routeNodes(ctx context.Context, n *network.Node, factory informers.SharedInformerFactory) {
	nodes := factory.Core().V1().Nodes()
	changed, err := onChange(nodes.Informer())
	if err != nil {
		return
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return
	}
	own, _ := netip.ParseAddr(a.ip)
	for {
		remote := map[netip.Prefix]netip.Addr{}
		list, _ := nodes.Lister().List(labels.Everything())
		for _, node := range list {
			cidr, err := netip.ParsePrefix(node.Spec.PodCIDR)
			if node.Name == a.opts.NodeName || err != nil {
				continue
			}
			for _, addr := range node.Status.Addresses {
				ip, err := netip.ParseAddr(addr.Address)
				if addr.Type == corev1.NodeInternalIP && err == nil && ip.Is4() && ip != own && !ip.IsLoopback() {
					remote[cidr] = ip
					break
				}
			}
		}
		if err := n.Route(remote); err != nil {
			a.log.Warn("routes to other nodes' pods", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(30 * time.Second):
		}
	}
}
