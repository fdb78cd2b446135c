package agent

import (
	"context"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/dns"
	"github.com/moorage/moorage/internal/network"
)

// The agent is the node's Service proxy (upstream's kube-proxy, in its old
// userspace form): each Service's cluster IP is a local address of the
// node's network namespace, where the agent listens on the Service's TCP
// ports and hands each connection to one of the ready endpoints in turn.
// Pods reach it through their default route. The kubernetes Service leads
// to the API server the agent itself uses. UDP is served only for the
// cluster DNS (ClusterDNS); other UDP Service ports are not proxied.

// proxier keeps one listener per Service TCP port.
type proxier struct {
	a        *Agent
	node     *network.Node
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	api      string // the API server's host:port, as the agent reaches it

	mu   sync.Mutex
	open map[string]*servicePort // by "ip:port"
	ips  map[netip.Addr]bool     // cluster IPs on the node namespace's lo
	next atomic.Uint64           // round robin
}

// servicePort is one proxied Service port.
type servicePort struct {
	namespace, name, port string // the Service and its port's name
	l                     net.Listener
}

// serveServices runs the proxy until ctx ends.
func (a *Agent) serveServices(ctx context.Context, node *network.Node, factory informers.SharedInformerFactory) {
	u, err := url.Parse(a.cfg.Host)
	if err != nil || u.Host == "" {
		a.log.Warn("Service proxy: the API server's address", "host", a.cfg.Host, "err", err)
		return
	}
	api := u.Host
	if u.Port() == "" {
		api = net.JoinHostPort(u.Hostname(), "443")
	}
	p := &proxier{
		a: a, node: node, api: api,
		services: factory.Core().V1().Services().Lister(),
		slices:   factory.Discovery().V1().EndpointSlices().Lister(),
		open:     map[string]*servicePort{}, ips: map[netip.Addr]bool{},
	}
	changed, err := onChange(factory.Core().V1().Services().Informer())
	if err != nil {
		return
	}
	slices := factory.Discovery().V1().EndpointSlices().Informer() // endpoints are read at connect time
	factory.Start(ctx.Done())
	defer p.closeAll()
	if !cache.WaitForCacheSync(ctx.Done(), factory.Core().V1().Services().Informer().HasSynced, slices.HasSynced) {
		return
	}
	for {
		p.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(30 * time.Second): // retry listeners that failed
		}
	}
}

// sync opens a listener for every Service TCP port with a cluster IP and
// closes those of ports that went away.
func (p *proxier) sync(ctx context.Context) {
	services, err := p.services.List(labels.Everything())
	if err != nil {
		return
	}
	want := map[string]*servicePort{}
	wantIPs := map[netip.Addr]bool{}
	for _, svc := range services {
		for _, ipStr := range clusterIPs(svc) {
			ip, err := netip.ParseAddr(ipStr)
			if err != nil || !ip.Is4() || ip == ClusterDNS {
				continue // headless, or the DNS server's own
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Protocol != corev1.ProtocolTCP && sp.Protocol != "" {
					continue
				}
				wantIPs[ip] = true
				key := net.JoinHostPort(ip.String(), strconv.Itoa(int(sp.Port)))
				want[key] = &servicePort{namespace: svc.Namespace, name: svc.Name, port: sp.Name}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, sp := range p.open {
		if w, ok := want[key]; !ok || w.namespace != sp.namespace || w.name != sp.name || w.port != sp.port {
			sp.l.Close()
			delete(p.open, key)
		}
	}
	for ip := range wantIPs {
		if !p.ips[ip] {
			if err := p.node.AddClusterIP(ip); err != nil {
				p.a.log.Warn("Service proxy: cluster IP", "ip", ip, "err", err)
				continue
			}
			p.ips[ip] = true
		}
	}
	for ip := range p.ips {
		if !wantIPs[ip] {
			_ = p.node.RemoveClusterIP(ip)
			delete(p.ips, ip)
		}
	}
	for key, sp := range want {
		if _, ok := p.open[key]; ok {
			continue
		}
		l, err := p.node.Listen("tcp", key)
		if err != nil {
			p.a.log.Warn("Service proxy: listen", "service", sp.namespace+"/"+sp.name, "address", key, "err", err)
			continue
		}
		sp.l = l
		p.open[key] = sp
		go p.accept(ctx, sp)
	}
}

func clusterIPs(svc *corev1.Service) []string {
	if len(svc.Spec.ClusterIPs) > 0 {
		return svc.Spec.ClusterIPs
	}
	if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		return []string{svc.Spec.ClusterIP}
	}
	return nil
}

func (p *proxier) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, sp := range p.open {
		sp.l.Close()
		delete(p.open, key)
	}
	for ip := range p.ips {
		_ = p.node.RemoveClusterIP(ip)
		delete(p.ips, ip)
	}
}

func (p *proxier) accept(ctx context.Context, sp *servicePort) {
	for {
		c, err := sp.l.Accept()
		if err != nil {
			return
		}
		go p.forward(ctx, sp, c)
	}
}

// forward connects the client to a ready endpoint, trying each in turn
// from the next one in the round; with none it closes the connection, as
// a Service without endpoints refuses.
func (p *proxier) forward(ctx context.Context, sp *servicePort, client net.Conn) {
	defer client.Close()
	backends := p.backends(sp)
	if len(backends) == 0 {
		return
	}
	start := int(p.next.Add(1))
	var upstream net.Conn
	for i := range backends {
		b := backends[(start+i)%len(backends)]
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		switch {
		case b.fromAgent && p.a.cfg.Dial != nil: // several servers (package failover)
			upstream, err = p.a.cfg.Dial(dctx, "tcp", b.addr)
		case b.fromAgent:
			var d net.Dialer
			upstream, err = d.DialContext(dctx, "tcp", b.addr)
		default:
			upstream, err = p.node.Dial(dctx, "tcp", b.addr)
		}
		cancel()
		if err == nil {
			break
		}
	}
	if upstream == nil {
		return
	}
	defer upstream.Close()
	splice(client, upstream)
}

// splice copies both ways until both directions are done.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

type backend struct {
	addr      string
	fromAgent bool // dialled from the agent's namespace, not the node's
}

// backends are the ready endpoints of the Service's port: the API server
// for the kubernetes Service, else the addresses of its EndpointSlices.
func (p *proxier) backends(sp *servicePort) []backend {
	if sp.namespace == "default" && sp.name == "kubernetes" {
		return []backend{{addr: p.api, fromAgent: true}}
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: sp.name})
	slices, err := p.slices.EndpointSlices(sp.namespace).List(sel)
	if err != nil {
		return nil
	}
	var out []backend
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32 = -1
		for _, pt := range s.Ports {
			if pt.Name != nil && *pt.Name == sp.port && pt.Port != nil {
				port = *pt.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, addr := range e.Addresses {
				out = append(out, backend{addr: net.JoinHostPort(addr, strconv.Itoa(int(port)))})
			}
		}
	}
	return out
}

// serveClusterIPs starts the node's cluster DNS server and Service proxy in
// its network namespace, and the routes to other nodes' pods, on one set
// of informers; all stop with ctx.
func (a *Agent) serveClusterIPs(ctx context.Context, node *network.Node, wg *sync.WaitGroup) {
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0, dns.SlimInformers)
	wg.Go(func() { a.serveServices(ctx, node, factory) })
	wg.Go(func() { a.serveDNS(ctx, node, factory) })
	wg.Go(func() { a.routeNodes(ctx, node, factory) })
	wg.Go(func() {
		<-ctx.Done()
		factory.Shutdown()
	})
}

// onChange returns a channel that is signalled (without blocking, so
// changes coalesce) whenever inf sees an object added, updated or deleted.
func onChange(inf cache.SharedIndexInformer) (<-chan struct{}, error) {
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke})
	return changed, err
}
