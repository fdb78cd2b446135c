package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/moorage/moorage/internal/store"
)

// Services get a cluster IP from ServiceCIDR and node ports from
// NodePortRange, as upstream allocates them. Each allocation is a store key
// created with Create (so two servers can never hand out the same one) and
// deleted with the Service; Bootstrap repairs allocations a crash left behind.

// ServiceCIDR is upstream's default service range; its first address is the
// `kubernetes` Service's.
var ServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")

// NodePortRange is upstream's default node-port range.
var NodePortRange = [2]int{30000, 32767}

const (
	ipAllocationPrefix   = "/registry/ranges/serviceips/"
	portAllocationPrefix = "/registry/ranges/servicenodeports/"
)

// allocateService fills in a new Service's cluster IP, IP families and node
// ports, reserving them unless dryRun. On error nothing stays reserved;
// release undoes a successful allocation (when the create fails later).
func (s *Server) allocateService(ctx context.Context, svc *corev1.Service, dryRun bool) (release func(), err error) {
	var keys []string
	release = func() {
		for _, k := range keys {
			_, _ = s.objects.store.Delete(context.WithoutCancel(ctx), k, 0)
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	owner := []byte(svc.Namespace + "/" + svc.Name)
	reserve := func(key string) (bool, error) {
		if dryRun {
			_, err := s.objects.store.Get(ctx, key)
			return errors.Is(err, store.ErrNotFound), nilIfNotFound(err)
		}
		_, err := s.objects.store.Create(ctx, key, owner)
		if errors.Is(err, store.ErrExists) {
			return false, nil
		}
		if err == nil {
			keys = append(keys, key)
		}
		return err == nil, err
	}
	spec := &svc.Spec
	if spec.Type != corev1.ServiceTypeExternalName {
		spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		single := corev1.IPFamilyPolicySingleStack
		if spec.IPFamilyPolicy == nil {
			spec.IPFamilyPolicy = &single
		}
		switch ip := spec.ClusterIP; {
		case ip == corev1.ClusterIPNone:
			spec.ClusterIPs = []string{corev1.ClusterIPNone}
		case ip != "":
			addr, perr := netip.ParseAddr(ip)
			if perr != nil || !ServiceCIDR.Contains(addr) {
				return release, invalidService(svc, field.Invalid(field.NewPath("spec", "clusterIPs").Index(0), ip,
					fmt.Sprintf("failed to allocate IP %s: the provided IP (%s) is not in the valid range. The range of valid IPs is %s", ip, ip, ServiceCIDR)))
			}
			ok, err := reserve(ipAllocationPrefix + ip)
			if err != nil {
				return release, err
			}
			if !ok {
				return release, invalidService(svc, field.Invalid(field.NewPath("spec", "clusterIPs").Index(0), []string{ip},
					fmt.Sprintf("failed to allocate IP %s: provided IP is already allocated", ip)))
			}
			spec.ClusterIPs = []string{ip}
		default:
			ip, err := s.pick(func() string { return randomServiceIP().String() }, ipAllocationPrefix, reserve)
			if err != nil {
				return release, err
			}
			if ip == "" {
				return release, apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP: range is full"))
			}
			spec.ClusterIP, spec.ClusterIPs = ip, []string{ip}
		}
	}
	if spec.Type == corev1.ServiceTypeNodePort || spec.Type == corev1.ServiceTypeLoadBalancer {
		for i := range spec.Ports {
			p := &spec.Ports[i]
			if p.NodePort != 0 {
				if p.NodePort < int32(NodePortRange[0]) || p.NodePort > int32(NodePortRange[1]) {
					return release, invalidService(svc, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), p.NodePort,
						fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", NodePortRange[0], NodePortRange[1])))
				}
				ok, err := reserve(portAllocationPrefix + strconv.Itoa(int(p.NodePort)))
				if err != nil {
					return release, err
				}
				if !ok {
					return release, invalidService(svc, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), p.NodePort, "provided port is already allocated"))
				}
				continue
			}
			port, err := s.pick(randomNodePort, portAllocationPrefix, reserve)
			if err != nil {
				return release, err
			}
			if port == "" {
				return release, apierrors.NewInternalError(fmt.Errorf("failed to allocate a nodePort: range is full"))
			}
			n, _ := strconv.Atoi(port)
			p.NodePort = int32(n)
		}
	}
	return release, nil
}

// pick reserves a random free value: a few random tries, then (a nearly full
// range) nothing, which the caller reports.
func (s *Server) pick(random func() string, prefix string, reserve func(string) (bool, error)) (string, error) {
	for i := 0; i < 64; i++ {
		v := random()
		ok, err := reserve(prefix + v)
		if err != nil || ok {
			return v, err
		}
	}
	return "", nil
}

// releaseService frees what a deleted Service held.
func (s *Server) releaseService(ctx context.Context, svc *corev1.Service) {
	ctx = context.WithoutCancel(ctx)
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != corev1.ClusterIPNone && ip != "" {
			s.releaseIfOwned(ctx, ipAllocationPrefix+ip, svc)
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			s.releaseIfOwned(ctx, portAllocationPrefix+strconv.Itoa(int(p.NodePort)), svc)
		}
	}
}

func (s *Server) releaseIfOwned(ctx context.Context, key string, svc *corev1.Service) {
	kv, err := s.objects.store.Get(ctx, key)
	if err == nil && string(kv.Value) == svc.Namespace+"/"+svc.Name {
		_, _ = s.objects.store.Delete(ctx, key, kv.ModRevision)
	}
}

// keepServiceAllocations: an update that leaves out the allocated values
// (kubectl replace of a manifest without clusterIP) keeps them, as upstream.
func keepServiceAllocations(svc, old *corev1.Service) {
	if svc.Spec.Type == old.Spec.Type || old.Spec.Type != corev1.ServiceTypeExternalName {
		if svc.Spec.ClusterIP == "" && len(svc.Spec.ClusterIPs) == 0 {
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
		}
		if len(svc.Spec.IPFamilies) == 0 {
			svc.Spec.IPFamilies = old.Spec.IPFamilies
		}
		if svc.Spec.IPFamilyPolicy == nil {
			svc.Spec.IPFamilyPolicy = old.Spec.IPFamilyPolicy
		}
	}
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].NodePort != 0 {
			continue
		}
		for _, op := range old.Spec.Ports {
			if op.Port == svc.Spec.Ports[i].Port && op.Protocol == svc.Spec.Ports[i].Protocol {
				svc.Spec.Ports[i].NodePort = op.NodePort
			}
		}
	}
}

// repairServiceAllocations deletes reservations whose Service is gone (a
// crash between deleting the Service and its reservations). Only for a
// store no other server writes: see RepairServiceAllocations.
func (s *Server) repairServiceAllocations(ctx context.Context) error {
	orphans, err := s.orphanAllocations(ctx)
	for _, kv := range orphans {
		_, _ = s.objects.store.Delete(ctx, kv.Key, kv.ModRevision)
	}
	return err
}

// RepairServiceAllocations is the repair of servers sharing a store, where
// another server may have reserved an IP or port for a Service it has not
// created yet: it deletes only the reservations orphaned both now and
// after grace, unchanged in between. It returns when done or ctx ends.
func (s *Server) RepairServiceAllocations(ctx context.Context, grace time.Duration) error {
	first, err := s.orphanAllocations(ctx)
	if err != nil || len(first) == 0 {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(grace):
	}
	second, err := s.orphanAllocations(ctx)
	if err != nil {
		return err
	}
	for _, kv := range second {
		if slices.ContainsFunc(first, func(f store.KeyValue) bool { return f.Key == kv.Key && f.ModRevision == kv.ModRevision }) {
			_, _ = s.objects.store.Delete(ctx, kv.Key, kv.ModRevision)
		}
	}
	return nil
}

// orphanAllocations are the reservations whose Service is gone or no
// longer holds the value.
func (s *Server) orphanAllocations(ctx context.Context) ([]store.KeyValue, error) {
	var orphans []store.KeyValue
	for _, prefix := range []string{ipAllocationPrefix, portAllocationPrefix} {
		lr, err := s.objects.store.List(ctx, prefix, store.ListOptions{})
		if err != nil {
			return orphans, err
		}
		for _, kv := range lr.KVs {
			ns, name, _ := strings.Cut(string(kv.Value), "/")
			obj, _, err := s.objects.get(ctx, s.resourceByPlural("services"), ns, name)
			if apierrors.IsNotFound(err) || (err == nil && !holds(obj.(*corev1.Service), strings.TrimPrefix(kv.Key, prefix))) {
				orphans = append(orphans, kv)
			}
		}
	}
	return orphans, nil
}

func holds(svc *corev1.Service, value string) bool {
	for _, ip := range svc.Spec.ClusterIPs {
		if ip == value {
			return true
		}
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.NodePort)) == value {
			return true
		}
	}
	return false
}

func randomServiceIP() netip.Addr {
	base := ServiceCIDR.Masked().Addr().As4()
	size := uint32(1) << (32 - ServiceCIDR.Bits())
	// Skip the network address, the first address (the kubernetes Service)
	// and the broadcast address.
	off := 2 + randUint32()%(size-3)
	n := binary.BigEndian.Uint32(base[:]) + off
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

func randomNodePort() string {
	return strconv.Itoa(NodePortRange[0] + int(randUint32()%uint32(NodePortRange[1]-NodePortRange[0]+1)))
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func invalidService(svc *corev1.Service, err *field.Error) error {
	return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, field.ErrorList{err})
}

func nilIfNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}
