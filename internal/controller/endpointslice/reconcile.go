package endpointslice

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/moorage/moorage/internal/controller/endpointslice/endpointutil"
)

// reconciler turns a Service's pods into its slices.
type reconciler struct {
	client      kubernetes.Interface
	nodes       corelisters.NodeLister
	maxPerSlice int
	tracker     *sliceTracker
}

// plan is the writes one sync makes.
type plan struct {
	create, update, delete []*discoveryv1.EndpointSlice
}

// reconcile writes the slices of svc so that they list pods. existing are
// the managed slices of svc (not being deleted), as the cache shows them.
func (r *reconciler) reconcile(ctx context.Context, svc *corev1.Service, pods []*corev1.Pod, existing []*discoveryv1.EndpointSlice, trigger time.Time) error {
	types := addressTypes(svc)
	byType := map[discoveryv1.AddressType][]*discoveryv1.EndpointSlice{}
	var unsupported []*discoveryv1.EndpointSlice
	for _, s := range existing {
		if slices.Contains(types, s.AddressType) {
			byType[s.AddressType] = append(byType[s.AddressType], s)
		} else {
			unsupported = append(unsupported, s)
		}
	}
	var errs []error
	for _, at := range types {
		p, err := r.planAddressType(svc, pods, byType[at], at)
		if err != nil {
			errs = append(errs, err) // but write what can be written
		}
		if err := r.apply(ctx, svc, p, existing, trigger); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.apply(ctx, svc, plan{delete: unsupported}, existing, trigger); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// desiredPorts is the endpoints that serve one set of ports.
type desiredPorts struct {
	ports     []discoveryv1.EndpointPort
	endpoints endpointSet
}

// planAddressType plans the slices of one address type. An error reports
// pods left out because their node is unknown; the plan is still good.
func (r *reconciler) planAddressType(svc *corev1.Service, pods []*corev1.Pod, existing []*discoveryv1.EndpointSlice, at discoveryv1.AddressType) (plan, error) {
	var p plan
	existingByPorts := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		if ownedBy(s, svc) {
			k := portsKey(s.Ports)
			existingByPorts[k] = append(existingByPorts[k], s)
		} else {
			// Left by an older Service of the same name, to the garbage
			// collector; or reused below.
			p.delete = append(p.delete, s)
		}
	}

	desired := map[string]*desiredPorts{}
	var errs []error
	for _, pod := range pods {
		if !endpointutil.ShouldPodBeInEndpoints(pod, true) {
			continue
		}
		ports := endpointPorts(svc, pod)
		k := portsKey(ports)
		d := desired[k]
		if d == nil {
			d = &desiredPorts{ports: ports, endpoints: endpointSet{}}
			desired[k] = d
		}
		node, err := r.nodes.Get(pod.Spec.NodeName)
		if err != nil { // not found: the lister reads memory
			// The pod garbage collector removes pods of deleted nodes; until
			// then the pod is left out, unless the Service asks for every
			// address.
			if !svc.Spec.PublishNotReadyAddresses {
				errs = append(errs, fmt.Errorf("pod %s/%s skipped: node %q not found", pod.Namespace, pod.Name, pod.Spec.NodeName))
				continue
			}
			node = nil
		}
		if ep := podToEndpoint(pod, node, svc, at); len(ep.Addresses) > 0 {
			d.endpoints[endpointKey(&ep)] = &ep
		}
	}

	for _, k := range slices.Sorted(maps.Keys(desired)) {
		p.add(r.planPorts(svc, existingByPorts[k], desired[k], at))
	}
	for k, list := range existingByPorts {
		if _, ok := desired[k]; !ok {
			p.delete = append(p.delete, list...)
		}
	}

	// A Service without endpoints keeps one empty slice.
	if len(existing) == len(p.delete) && len(p.create) == 0 {
		placeholder := newSlice(svc, []discoveryv1.EndpointPort{}, at)
		if len(p.delete) == 1 && isPlaceholder(p.delete[0], placeholder) {
			p.delete = nil
		} else {
			p.create = append(p.create, placeholder)
		}
	}
	return p, errors.Join(errs...)
}

func (p *plan) add(q plan) {
	p.create = append(p.create, q.create...)
	p.update = append(p.update, q.update...)
	p.delete = append(p.delete, q.delete...)
}

// planPorts plans the slices of one set of ports:
//  1. in each existing slice, endpoints no longer desired go and changed
//     ones are updated (and its labels, if the Service's changed); a slice
//     left empty is deleted;
//  2. the remaining desired endpoints fill the slices being updated,
//     fullest first;
//  3. then the unchanged slice they fill best (if they fit in one), then
//     new slices.
func (r *reconciler) planPorts(svc *corev1.Service, existing []*discoveryv1.EndpointSlice, d *desiredPorts, at discoveryv1.AddressType) plan {
	var p plan
	var unchanged, updated []*discoveryv1.EndpointSlice
	want := d.endpoints
	for _, s := range existing {
		var keep []discoveryv1.Endpoint
		changed := false
		for i := range s.Endpoints {
			k := endpointKey(&s.Endpoints[i])
			if ep, ok := want[k]; ok {
				keep = append(keep, *ep)
				changed = changed || !sameBeyondKey(ep, &s.Endpoints[i])
				delete(want, k)
			}
		}
		labels, labelsChanged := sliceLabels(s, svc)
		switch {
		case len(keep) == 0 && len(s.Endpoints) > 0:
			p.delete = append(p.delete, s)
		case changed || len(keep) != len(s.Endpoints) || labelsChanged:
			next := s.DeepCopy()
			next.Endpoints, next.Labels = keep, labels
			updated = append(updated, next)
		default:
			unchanged = append(unchanged, s)
		}
	}

	if len(want) > 0 && len(updated) > 0 {
		byFullness := slices.Clone(updated)
		slices.SortStableFunc(byFullness, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(len(b.Endpoints), len(a.Endpoints)) })
		for _, s := range byFullness {
			for len(want) > 0 && len(s.Endpoints) < r.maxPerSlice {
				s.Endpoints = append(s.Endpoints, want.pop())
			}
		}
	}

	for len(want) > 0 {
		var fill *discoveryv1.EndpointSlice
		if len(want) < r.maxPerSlice {
			if i := bestFit(unchanged, len(want), r.maxPerSlice); i >= 0 {
				fill = unchanged[i].DeepCopy()
				unchanged = slices.Delete(unchanged, i, i+1)
				updated = append(updated, fill)
			}
		}
		if fill == nil {
			fill = newSlice(svc, d.ports, at)
			p.create = append(p.create, fill)
		}
		for len(want) > 0 && len(fill.Endpoints) < r.maxPerSlice {
			fill.Endpoints = append(fill.Endpoints, want.pop())
		}
	}
	p.update = updated
	return p
}

// bestFit is the index of the slice that n more endpoints bring closest
// to full without overflowing, or -1.
func bestFit(list []*discoveryv1.EndpointSlice, n, max int) int {
	best, bestGap := -1, max
	for i, s := range list {
		if gap := max - n - len(s.Endpoints); gap >= 0 && gap < bestGap {
			best, bestGap = i, gap
		}
	}
	return best
}

// apply writes a plan. A slice to create takes the place of one to delete
// where it can (same address type, owned by svc), as an update. existing
// gives the resourceVersions the writes replace.
func (r *reconciler) apply(ctx context.Context, svc *corev1.Service, p plan, existing []*discoveryv1.EndpointSlice, trigger time.Time) error {
	for i := 0; i < len(p.delete) && len(p.create) > 0; {
		old, s := p.delete[i], p.create[len(p.create)-1]
		if old.AddressType != s.AddressType || !ownedBy(old, svc) {
			i++
			continue
		}
		s.Name = old.Name
		p.create = p.create[:len(p.create)-1]
		p.update = append(p.update, s)
		p.delete = slices.Delete(p.delete, i, i+1)
	}
	replaced := map[string]string{}
	for _, s := range existing {
		replaced[s.Name] = s.ResourceVersion
	}

	api := r.client.DiscoveryV1().EndpointSlices(svc.Namespace)
	// Creating while the Service is being deleted would race the garbage
	// collector.
	if svc.DeletionTimestamp == nil {
		for _, s := range p.create {
			setTriggerTime(s, trigger)
			created, err := api.Create(ctx, s, metav1.CreateOptions{})
			if apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return nil // creates fail until the namespace is gone
			}
			if err != nil {
				return fmt.Errorf("creating an EndpointSlice for Service %s/%s: %w", svc.Namespace, svc.Name, err)
			}
			r.tracker.wrote(created, "")
		}
	}
	for _, s := range p.update {
		setTriggerTime(s, trigger)
		updated, err := api.Update(ctx, s, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("updating EndpointSlice %s for Service %s/%s: %w", s.Name, svc.Namespace, svc.Name, err)
		}
		r.tracker.wrote(updated, replaced[s.Name])
	}
	for _, s := range p.delete {
		err := api.Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(s.UID))})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting EndpointSlice %s for Service %s/%s: %w", s.Name, svc.Namespace, svc.Name, err)
		}
		r.tracker.deleted(s)
	}
	return nil
}

func setTriggerTime(s *discoveryv1.EndpointSlice, trigger time.Time) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if trigger.IsZero() {
		delete(s.Annotations, corev1.EndpointsLastChangeTriggerTime)
	} else {
		s.Annotations[corev1.EndpointsLastChangeTriggerTime] = trigger.UTC().Format(time.RFC3339Nano)
	}
}
