package gc

import (
	"fmt"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// objectRef identifies an object: its kind, where it lives and its uid.
type objectRef struct {
	APIVersion, Kind, Namespace, Name string
	UID                               types.UID
}

// String is upstream's rendering, which its events and logs use.
func (r objectRef) String() string {
	return fmt.Sprintf("[%s/%s, namespace: %s, name: %s, uid: %s]", r.APIVersion, r.Kind, r.Namespace, r.Name, r.UID)
}

func (r objectRef) less(o objectRef) bool {
	a := []string{r.Kind, r.APIVersion, r.Namespace, r.Name, string(r.UID)}
	b := []string{o.Kind, o.APIVersion, o.Namespace, o.Name, string(o.UID)}
	return slices.Compare(a, b) < 0
}

// node is one object of the graph. A virtual node is known only from a
// dependent's ownerReference: whether it exists is still to be verified.
type node struct {
	ref                objectRef
	owners             []metav1.OwnerReference
	dependents         map[*node]struct{}
	virtual            bool
	beingDeleted       bool
	deletingDependents bool // being deleted with the foregroundDeletion finalizer
}

// nodeState is a copy of a node's fields, for the workers.
type nodeState struct {
	ref                                       objectRef
	virtual, beingDeleted, deletingDependents bool
}

func (n *node) state() nodeState {
	return nodeState{ref: n.ref, virtual: n.virtual, beingDeleted: n.beingDeleted, deletingDependents: n.deletingDependents}
}

// graph is the dependency graph. Informer handlers and workers change it
// under mu; it enqueues the uids of nodes that need attention.
type graph struct {
	mu    sync.Mutex
	nodes map[types.UID]*node

	// clusterScoped tells whether an owner's kind is a cluster-scoped one.
	clusterScoped func(apiVersion, kind string) bool
	toDelete      func(uid types.UID)
	toRecheck     func(uid types.UID) // rate limited
	toOrphan      func(uid types.UID)
	absent        *absentCache
	// invalidNamespace reports a dependent whose owner lives in another namespace.
	invalidNamespace func(dependent objectRef, owner metav1.OwnerReference)
}

// observe applies an informer's add (old nil) or update of obj.
func (g *graph) observe(gvk schema.GroupVersionKind, old, obj metav1.Object) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ref := objectRef{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID()}
	n, found := g.nodes[ref.UID]
	switch {
	case !found:
		n = &node{ref: ref, dependents: map[*node]struct{}{}}
		g.nodes[ref.UID] = n
		old = nil // whatever the event, the graph sees the object for the first time
	case n.virtual:
		g.recheckMismatchedDependents(n, ref)
	}
	n.ref, n.virtual = ref, false
	added, removed, changed := diffOwners(n.owners, obj.GetOwnerReferences())
	g.enqueueUnblockedOwners(removed, changed)
	n.owners = obj.GetOwnerReferences()
	g.removeFromOwners(n, removed)
	g.addToOwners(n, added)
	n.beingDeleted = obj.GetDeletionTimestamp() != nil
	n.deletingDependents = n.beingDeleted && slices.Contains(obj.GetFinalizers(), metav1.FinalizerDeleteDependents)
	switch {
	case deletionStartsWith(old, obj, metav1.FinalizerOrphanDependents):
		g.toOrphan(n.ref.UID)
	case deletionStartsWith(old, obj, metav1.FinalizerDeleteDependents):
		for dep := range n.dependents {
			g.toDelete(dep.ref.UID)
		}
		g.toDelete(n.ref.UID)
	}
}

// deleted applies an informer's delete.
func (g *graph) deleted(uid types.UID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, ok := g.nodes[uid]; ok {
		g.remove(n)
	}
}

// absentVerified applies a worker's finding that the object ref names does
// not exist (not found, or found with another uid).
func (g *graph) absentVerified(ref objectRef) {
	g.absent.add(ref)
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.nodes[ref.UID]
	if !ok {
		return
	}
	if !n.virtual {
		if n.ref == ref {
			g.remove(n) // the informer's delete event is late
		}
		return
	}
	matching, mismatched := partitionDependents(n, ref)
	if len(mismatched) == 0 {
		g.remove(n)
		return
	}
	// Some dependents name this uid with other coordinates: those are
	// still to be verified, under the next identity they use.
	for _, dep := range matching {
		g.toDelete(dep.ref.UID)
	}
	if alt, ok := alternateIdentity(mismatched, ref, g.clusterScoped); ok {
		n.ref = alt
		g.toRecheck(n.ref.UID)
	}
}

// remove takes n out of the graph; its dependents and the owners waiting
// for it are enqueued.
func (g *graph) remove(n *node) {
	delete(g.nodes, n.ref.UID)
	g.removeFromOwners(n, n.owners)
	for dep := range n.dependents {
		g.toDelete(dep.ref.UID)
	}
	for _, o := range n.owners {
		if on, ok := g.nodes[o.UID]; ok && on.deletingDependents {
			g.toDelete(on.ref.UID)
		}
	}
}

// addToOwners links n to the owners it gained, creating virtual nodes (to be
// verified) for owners not seen yet. A reference that does not match an
// observed owner's coordinates makes n itself a candidate for collection.
func (g *graph) addToOwners(n *node, owners []metav1.OwnerReference) {
	suspect := false
	for _, o := range owners {
		on, ok := g.nodes[o.UID]
		if !ok {
			on = &node{ref: g.ownerRef(o, n.ref.Namespace), dependents: map[*node]struct{}{}, virtual: true}
			g.nodes[o.UID] = on
			g.toDelete(o.UID)
		}
		on.dependents[n] = struct{}{}
		if !ok || suspect {
			continue
		}
		if on.ref.Namespace != "" && on.ref.Namespace != n.ref.Namespace {
			if !on.virtual {
				g.invalidNamespace(n.ref, o)
			}
			suspect = true
		} else if !coordinatesMatch(o, on.ref) {
			suspect = true
		}
	}
	if suspect {
		g.toDelete(n.ref.UID)
	}
}

func (g *graph) removeFromOwners(n *node, owners []metav1.OwnerReference) {
	for _, o := range owners {
		if on, ok := g.nodes[o.UID]; ok {
			delete(on.dependents, n)
		}
	}
}

// recheckMismatchedDependents: a virtual node is observed as ref; the
// dependents that named it otherwise are enqueued for verification.
func (g *graph) recheckMismatchedDependents(n *node, ref objectRef) {
	if n.ref == ref {
		return
	}
	_, mismatched := partitionDependents(n, ref)
	for _, dep := range mismatched {
		if ref.Namespace != "" && dep.ref.Namespace != ref.Namespace {
			for _, o := range dep.owners {
				if o.UID == ref.UID {
					g.invalidNamespace(dep.ref, o)
					break
				}
			}
		}
		g.toDelete(dep.ref.UID)
	}
}

// enqueueUnblockedOwners enqueues owners that a dependent stopped blocking.
func (g *graph) enqueueUnblockedOwners(removed []metav1.OwnerReference, changed [][2]metav1.OwnerReference) {
	for _, o := range removed {
		if blocks(o) {
			g.enqueueIfKnown(o.UID)
		}
	}
	for _, c := range changed {
		if blocks(c[0]) && !blocks(c[1]) {
			g.enqueueIfKnown(c[1].UID)
		}
	}
}

func (g *graph) enqueueIfKnown(uid types.UID) {
	if _, ok := g.nodes[uid]; ok {
		g.toDelete(uid)
	}
}

// ownerRef is the identity an ownerReference of a dependent in namespace ns
// gives its owner; a cluster-scoped kind has no namespace.
func (g *graph) ownerRef(o metav1.OwnerReference, ns string) objectRef {
	if g.clusterScoped(o.APIVersion, o.Kind) {
		ns = ""
	}
	return objectRef{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: ns, Name: o.Name, UID: o.UID}
}

// get returns a copy of a node's state.
func (g *graph) get(uid types.UID) (nodeState, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.nodes[uid]
	if !ok {
		return nodeState{}, false
	}
	return n.state(), true
}

// dependents returns the identities of the node's dependents.
func (g *graph) dependents(uid types.UID) []nodeState {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []nodeState
	if n, ok := g.nodes[uid]; ok {
		for dep := range n.dependents {
			out = append(out, dep.state())
		}
	}
	return out
}

// blockingDependents returns the dependents whose reference to the node has
// blockOwnerDeletion set.
func (g *graph) blockingDependents(uid types.UID) []nodeState {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []nodeState
	if n, ok := g.nodes[uid]; ok {
		for dep := range n.dependents {
			if slices.ContainsFunc(dep.owners, func(o metav1.OwnerReference) bool { return o.UID == uid && blocks(o) }) {
				out = append(out, dep.state())
			}
		}
	}
	return out
}

func blocks(o metav1.OwnerReference) bool {
	return o.BlockOwnerDeletion != nil && *o.BlockOwnerDeletion
}

func coordinatesMatch(o metav1.OwnerReference, ref objectRef) bool {
	return o.UID == ref.UID && o.Name == ref.Name && o.Kind == ref.Kind && o.APIVersion == ref.APIVersion
}

// partitionDependents splits n's dependents into those whose reference to
// n's uid matches id and those naming it with other coordinates (a
// dependent can be in both).
func partitionDependents(n *node, id objectRef) (matching, mismatched []*node) {
	for dep := range n.dependents {
		match, mismatch := false, false
		if id.Namespace != "" && dep.ref.Namespace != id.Namespace {
			mismatch = true
		} else {
			for _, o := range dep.owners {
				if o.UID == id.UID {
					if coordinatesMatch(o, id) {
						match = true
					} else {
						mismatch = true
					}
				}
			}
		}
		if match {
			matching = append(matching, dep)
		}
		if mismatch {
			mismatched = append(mismatched, dep)
		}
	}
	return matching, mismatched
}

// alternateIdentity picks, among the other identities the dependents give
// the absent uid, the first after it in order (or else the first), so that
// repeated verifications go through all of them.
func alternateIdentity(deps []*node, absent objectRef, clusterScoped func(string, string) bool) (objectRef, bool) {
	var first, next *objectRef
	for _, dep := range deps {
		for _, o := range dep.owners {
			if o.UID != absent.UID {
				continue
			}
			ref := objectRef{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: dep.ref.Namespace, Name: o.Name, UID: o.UID}
			if clusterScoped(o.APIVersion, o.Kind) {
				ref.Namespace = ""
			}
			if ref == absent {
				continue
			}
			if first == nil || ref.less(*first) {
				first = &ref
			}
			if absent.less(ref) && (next == nil || ref.less(*next)) {
				next = &ref
			}
		}
	}
	switch {
	case next != nil:
		return *next, true
	case first != nil:
		return *first, true
	}
	return objectRef{}, false
}

// diffOwners compares ownerReferences by uid.
func diffOwners(old, cur []metav1.OwnerReference) (added, removed []metav1.OwnerReference, changed [][2]metav1.OwnerReference) {
	byUID := map[types.UID]metav1.OwnerReference{}
	for _, o := range old {
		byUID[o.UID] = o
	}
	for _, c := range cur {
		o, ok := byUID[c.UID]
		switch {
		case !ok:
			added = append(added, c)
		case !ownerRefEqual(o, c):
			changed = append(changed, [2]metav1.OwnerReference{o, c})
		}
		delete(byUID, c.UID)
	}
	for _, o := range old {
		if _, ok := byUID[o.UID]; ok {
			removed = append(removed, o)
		}
	}
	return added, removed, changed
}

func ownerRefEqual(a, b metav1.OwnerReference) bool {
	boolEq := func(x, y *bool) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.APIVersion == b.APIVersion && a.Kind == b.Kind && a.Name == b.Name && a.UID == b.UID &&
		boolEq(a.Controller, b.Controller) && boolEq(a.BlockOwnerDeletion, b.BlockOwnerDeletion)
}

// deletionStartsWith tells whether obj is being deleted with finalizer f and
// old (nil for a first sight) was not.
func deletionStartsWith(old, obj metav1.Object, f string) bool {
	if obj.GetDeletionTimestamp() == nil || !slices.Contains(obj.GetFinalizers(), f) {
		return false
	}
	return old == nil || old.GetDeletionTimestamp() == nil || !slices.Contains(old.GetFinalizers(), f)
}

// absentCache remembers owners verified absent by a live GET: a uid never
// comes back, so the answer stays true. It is bounded, and simply emptied
// when full.
type absentCache struct {
	mu  sync.Mutex
	set map[objectRef]struct{}
}

const absentCacheSize = 1024

func (c *absentCache) add(r objectRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set == nil || len(c.set) >= absentCacheSize {
		c.set = map[objectRef]struct{}{}
	}
	c.set[r] = struct{}{}
}

func (c *absentCache) has(r objectRef) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.set[r]
	return ok
}
