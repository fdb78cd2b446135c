package apiserver

import (
	"context"
	"net"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/registry"
)

// SystemNamespaces exist in every cluster, as upstream.
var SystemNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// Bootstrap creates what every cluster starts with: the system namespaces
// and the `kubernetes` Service in default, whose Endpoints and EndpointSlice
// point at this server (when it listens on more than loopback). It also frees Service allocations a crash left.
func (s *Server) Bootstrap(ctx context.Context) error {
	for _, name := range SystemNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := s.ensure(ctx, "namespaces", ns, false); err != nil {
			return err
		}
	}
	if !s.cfg.SharedStore {
		if err := s.repairServiceAllocations(ctx); err != nil {
			return err
		}
	}
	host, portStr, err := net.SplitHostPort(s.cfg.ExternalAddress)
	if err != nil {
		return err
	}
	port, _ := strconv.Atoi(portStr)
	labels := map[string]string{"component": "apiserver", "provider": "kubernetes"}
	first := ServiceCIDR.Masked().Addr().Next().String()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: first,
			Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(int32(port))}},
		},
	}
	if err := s.ensure(ctx, "services", svc, false); err != nil {
		return err
	}
	if err := s.ensure(ctx, "services", kubeDNSService(), false); err != nil {
		return err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.IsLoopback() || addr.IsUnspecified() {
		// Endpoints may not point at loopback (upstream's validation): a
		// server on 127.0.0.1 has a kubernetes Service without endpoints.
		return nil
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault, Labels: map[string]string{"endpointslice.kubernetes.io/skip-mirror": "true"}},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: host}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: int32(port), Protocol: corev1.ProtocolTCP}},
		}},
	}
	if err := s.ensure(ctx, "endpoints", ep, true); err != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "moorage-apiserver"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if addr.Is6() {
		slice.AddressType = discoveryv1.AddressTypeIPv6
	}
	return s.ensure(ctx, "endpointslices", slice, true)
}

// ClusterDNS is the address of the cluster DNS server (upstream's usual
// kube-dns Service IP). Every agent answers there for its pods, in the
// node's pod network (internal/agent), so the Service has no endpoints.
var ClusterDNS = netip.MustParseAddr("10.96.0.10")

// kubeDNSService is the kube-dns Service that clusters have, so that
// `kubectl get svc -n kube-system` shows where names are served.
func kubeDNSService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ClusterDNS.String(),
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
}

// ensure creates obj if it is missing; with refresh, it also replaces the
// content of an existing one that differs (the server's address changed).
func (s *Server) ensure(ctx context.Context, plural string, obj runtime.Object, refresh bool) error {
	var res = s.resourceByPlural(plural)
	req := &request{res: res, namespace: m(obj).GetNamespace(), name: m(obj).GetName()}
	manager := func(o runtime.Object) (runtime.Object, error) { return o, nil }
	cur, _, err := s.objects.get(ctx, res, req.namespace, req.name)
	switch {
	case apierrors.IsNotFound(err):
		_, err = s.createObject(ctx, req, obj, writeOptions{fieldManager: "moorage-apiserver"}, manager)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	case err != nil || !refresh:
		return err
	}
	want := obj.DeepCopyObject()
	m(want).SetResourceVersion(m(cur).GetResourceVersion())
	s.scheme.Default(want)
	if apiequality.Semantic.DeepEqual(contentOf(want), contentOf(cur)) {
		return nil
	}
	_, _, err = s.guaranteedUpdate(ctx, req, writeOptions{fieldManager: "moorage-apiserver"},
		func(runtime.Object) (runtime.Object, error) { return obj.DeepCopyObject(), nil }, nil, nil)
	return err
}

// contentOf is what ensure compares: everything but metadata.
func contentOf(obj runtime.Object) runtime.Object {
	c := obj.DeepCopyObject()
	if a, ok := c.(metav1.ObjectMetaAccessor); ok {
		*a.GetObjectMeta().(*metav1.ObjectMeta) = metav1.ObjectMeta{}
	}
	return c
}

// resourceByPlural finds a served resource by plural, the core group's first
// (events are served by two groups).
func (s *Server) resourceByPlural(plural string) *registry.Resource {
	var found *registry.Resource
	for _, r := range s.reg.All() {
		if r.Plural == plural && (found == nil || r.GVK.Group == "") {
			found = r
		}
	}
	if found == nil {
		panic("apiserver: no resource " + plural)
	}
	return found
}
