// Package dns is the cluster DNS: an authoritative server for the cluster
// domain (cluster.local) with the semantics of CoreDNS's kubernetes plugin
// as kubeadm configures it ("pods insecure", reverse zones with
// fallthrough), fed by informers on Services, EndpointSlices and
// Namespaces. Its records follow the Kubernetes DNS specification:
//
//   - <svc>.<ns>.svc.<zone>: A/AAAA of the cluster IPs; for a headless
//     Service, of its ready endpoints (EndpointSlice endpoints whose ready
//     condition is not false: with publishNotReadyAddresses, all of them);
//     an ExternalName Service is a CNAME to its external name;
//   - <host>.<svc>.<ns>.svc.<zone>: an endpoint of the Service, by its
//     hostname (a StatefulSet pod: web-0.nginx.default.svc.cluster.local)
//     or, without one, its dashed IP (10-244-0-5);
//   - _<port>._<proto>.<svc>.<ns>.svc.<zone>: SRV per named port, with
//     the Service's name as target, or each endpoint's for a headless
//     Service, and their addresses as additional records; <svc>... SRV
//     lists every port;
//   - <a-b-c-d>.<ns>.pod.<zone>: A of the IP the name spells, in any
//     existing namespace, unverified ("pods insecure");
//   - PTR for cluster IPs (<svc>.<ns>.svc.<zone>) and ready endpoint IPs
//     (<host>.<svc>.<ns>.svc.<zone>) under in-addr.arpa and ip6.arpa;
//   - dns-version.<zone> TXT "1.1.0"; SOA and NS at the apex
//     (ns.dns.<zone>, or the Service whose cluster IP the query reached).
//
// Answers are authoritative, with the TTL (5 s by default). A name that
// does not exist is NXDOMAIN (SERVFAIL until the informers have synced), a
// name that exists without records of the type asked is NODATA, both with
// the SOA, as CoreDNS decides them: a missing namespace, Service or
// endpoint, a headless Service without ready endpoints, a name too long to
// parse, are NXDOMAIN; the zone apex, svc.<zone>, <ns>.svc.<zone> of an
// existing namespace, or an AAAA query for an IPv4-only Service, are
// NODATA.
//
// There is no upstream resolver: names outside the cluster domain, and
// reverse names of addresses the cluster does not know (where CoreDNS
// would fall through to its forwarder), are answered REFUSED, so that a
// client moves on to its next nameserver. An ExternalName's CNAME is
// answered alone (CoreDNS would add the target's records from upstream);
// the client resolves the target itself. Search-path expansion (ndots,
// the pod's search list) is the client's.
package dns

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/miekg/dns"
)

// Options tune the resolver; zero values are the defaults.
type Options struct {
	// Domain is the cluster domain ("cluster.local").
	Domain string
	// TTL of every record but dns-version's, in whole seconds (5 s).
	TTL time.Duration
}

// Resolver answers DNS queries about the cluster; it is a dns.Handler.
type Resolver struct {
	zone       string // lowercase FQDN: "cluster.local."
	ttl        uint32
	factory    informers.SharedInformerFactory
	services   corelisters.ServiceLister
	svcIndex   cache.Indexer
	slices     cache.Indexer
	namespaces corelisters.NamespaceLister
	synced     []cache.InformerSynced
	// modified is when the data last changed (unix seconds): the SOA
	// serial.
	modified atomic.Int64
}

var _ dns.Handler = (*Resolver)(nil)

// Index names.
const (
	byClusterIP = "clusterIP"     // Services by cluster IP
	byService   = "service"       // slices by namespace/service
	byReadyIP   = "readyEndpoint" // slices by ready endpoint address
)

// New builds a resolver reading the cluster through client; Run starts it.
func New(client kubernetes.Interface, opts Options) *Resolver {
	return NewWithInformers(informers.NewSharedInformerFactoryWithOptions(client, 0, SlimInformers), opts)
}

// SlimInformers drops what answers never need (managed fields) from the
// objects informers keep.
var SlimInformers = informers.WithTransform(func(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
})

// NewWithInformers builds a resolver on informers the caller shares with
// others (the agent's Service proxy watches the same Services and
// EndpointSlices); Run starts them.
func NewWithInformers(factory informers.SharedInformerFactory, opts Options) *Resolver {
	if opts.Domain == "" {
		opts.Domain = "cluster.local"
	}
	if opts.TTL <= 0 {
		opts.TTL = 5 * time.Second
	}
	r := &Resolver{
		zone:       dns.CanonicalName(opts.Domain),
		ttl:        uint32(opts.TTL / time.Second),
		factory:    factory,
		services:   factory.Core().V1().Services().Lister(),
		namespaces: factory.Core().V1().Namespaces().Lister(),
	}
	r.modified.Store(time.Now().Unix())

	svcInformer := factory.Core().V1().Services().Informer()
	sliceInformer := factory.Discovery().V1().EndpointSlices().Informer()
	nsInformer := factory.Core().V1().Namespaces().Informer()
	// Indexers are added before the informers start: this cannot fail.
	_ = svcInformer.AddIndexers(cache.Indexers{byClusterIP: clusterIPs})
	_ = sliceInformer.AddIndexers(cache.Indexers{byService: sliceService, byReadyIP: readyAddresses})
	touch := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { r.touch() },
		UpdateFunc: func(old, cur any) {
			if old.(metav1.Object).GetResourceVersion() != cur.(metav1.Object).GetResourceVersion() {
				r.touch()
			}
		},
		DeleteFunc: func(any) { r.touch() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInformer, sliceInformer, nsInformer} {
		_, _ = inf.AddEventHandler(touch)
		r.synced = append(r.synced, inf.HasSynced)
	}
	r.svcIndex = svcInformer.GetIndexer()
	r.slices = sliceInformer.GetIndexer()
	return r
}

// Run starts the informers and blocks until ctx is done.
func (r *Resolver) Run(ctx context.Context) {
	r.factory.Start(ctx.Done())
	<-ctx.Done()
	r.factory.Shutdown()
}

// HasSynced reports whether the resolver has seen the whole cluster once;
// until then a name not found is SERVFAIL rather than NXDOMAIN.
func (r *Resolver) HasSynced() bool {
	for _, synced := range r.synced {
		if !synced() {
			return false
		}
	}
	return true
}

func (r *Resolver) touch() { r.modified.Store(time.Now().Unix()) }

func clusterIPs(obj any) ([]string, error) {
	svc := obj.(*corev1.Service)
	var out []string
	for _, ip := range serviceIPs(svc) {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	return out, nil
}

// serviceIPs are a Service's cluster IPs ("None" for a headless one).
func serviceIPs(svc *corev1.Service) []string {
	if len(svc.Spec.ClusterIPs) > 0 {
		return svc.Spec.ClusterIPs
	}
	return []string{svc.Spec.ClusterIP}
}

func headless(svc *corev1.Service) bool { return serviceIPs(svc)[0] == corev1.ClusterIPNone }

func sliceService(obj any) ([]string, error) {
	s := obj.(*discoveryv1.EndpointSlice)
	if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
		return []string{s.Namespace + "/" + name}, nil
	}
	return nil, nil
}

func readyAddresses(obj any) ([]string, error) {
	s := obj.(*discoveryv1.EndpointSlice)
	if !addressSlice(s) {
		return nil, nil
	}
	var out []string
	for _, ep := range s.Endpoints {
		if ready(ep) {
			out = append(out, ep.Addresses...)
		}
	}
	return out, nil
}

// addressSlice: the slice holds IP addresses (not FQDNs).
func addressSlice(s *discoveryv1.EndpointSlice) bool {
	return s.AddressType == discoveryv1.AddressTypeIPv4 || s.AddressType == discoveryv1.AddressTypeIPv6
}

// ready: an unknown readiness counts as ready, as the API says.
func ready(ep discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

// endpointHostname is the label an endpoint answers to under its Service:
// its hostname, or its IP with dashes.
func endpointHostname(ip, hostname string) string {
	switch {
	case hostname != "":
		return hostname
	case strings.Contains(ip, "."):
		return strings.ReplaceAll(ip, ".", "-")
	case strings.HasSuffix(ip, ":"):
		return strings.ReplaceAll(ip, ":", "-") + "0"
	default:
		return strings.ReplaceAll(ip, ":", "-")
	}
}
