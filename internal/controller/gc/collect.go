package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/util/retry"

	"github.com/moorage/moorage/internal/registry"
)

// gcError is an outcome of processing an item that is not a failure.
type gcError string

func (e gcError) Error() string { return string(e) }

const (
	// errNotObserved: the item exists but the informers have not shown it
	// yet; it is looked at again, with back-off, until they do.
	errNotObserved gcError = "item not observed by the informers yet"
	// errClusterScopedWithNamespacedOwner: a cluster-scoped object names a
	// namespaced owner, which is invalid; retrying cannot help.
	errClusterScopedWithNamespacedOwner gcError = "cluster-scoped objects cannot refer to namespaced owners"
)

// client is the metadata client of res, in namespace ns if it is namespaced.
func (c *Controller) client(res *registry.Resource, ns string) metadata.ResourceInterface {
	if !res.Namespaced {
		return c.meta.Resource(res.GVR())
	}
	return c.meta.Resource(res.GVR()).Namespace(ns)
}

// attemptToDeleteItem looks at the live object of a node: a virtual node is
// verified, an owner waiting for its dependents is finished when they are
// gone, and a dependent whose owners are all absent is deleted.
func (c *Controller) attemptToDeleteItem(ctx context.Context, uid types.UID) error {
	n, ok := c.graph.get(uid)
	if !ok {
		return nil
	}
	if n.beingDeleted && !n.deletingDependents {
		return nil // on its way out: its dependents are handled once it is gone
	}
	res, err := c.resourceFor(n.ref.APIVersion, n.ref.Kind)
	if err != nil {
		return err
	}
	if res.Namespaced && n.ref.Namespace == "" {
		// Named by a cluster-scoped dependent: no such object can exist.
		c.graph.absentVerified(n.ref)
		return nil
	}
	latest, err := c.client(res, n.ref.Namespace).Get(ctx, n.ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && latest.UID != uid) {
		c.graph.absentVerified(n.ref)
		return nil
	}
	if err != nil {
		return err
	}
	if n.deletingDependents {
		return c.processDeletingDependents(ctx, n)
	}
	if err := c.collect(ctx, res, n, latest); err != nil {
		return err
	}
	if n.virtual {
		return errNotObserved
	}
	return nil
}

// collect applies upstream's decision to an object with owners.
func (c *Controller) collect(ctx context.Context, res *registry.Resource, n nodeState, latest *metav1.PartialObjectMetadata) error {
	owners := latest.OwnerReferences
	if len(owners) == 0 {
		return nil
	}
	solid, dangling, waiting, err := c.classify(ctx, n.ref, owners)
	if err != nil {
		return err
	}
	deps := c.graph.dependents(n.ref.UID)
	switch {
	case len(solid) > 0:
		// It stays; references to absent owners, and to owners waiting
		// for their dependents (which would wait forever), go.
		drop := append(dangling, waiting...)
		if len(drop) == 0 {
			return nil
		}
		c.log.Debug("removing owner references", "item", n.ref, "owners", drop)
		_, err := c.patch(ctx, res, n.ref, deleteOwnerRefsPatch(n.ref.UID, drop))
		return err
	case len(waiting) > 0 && len(deps) > 0:
		// An owner is deleting its dependents in foreground and this one has
		// dependents of its own: it goes in foreground too. If one of those
		// is itself deleting in foreground, a cycle is possible: its
		// references stop blocking first.
		if slices.ContainsFunc(deps, func(d nodeState) bool { return d.deletingDependents }) {
			if p := unblockOwnerRefsPatch(n.ref.UID, owners); p != nil {
				patched, err := c.patch(ctx, res, n.ref, p)
				if err != nil || patched == nil {
					return err
				}
				latest = patched
			}
		}
		return c.delete(ctx, res, n.ref, latest, metav1.DeletePropagationForeground)
	default:
		policy := metav1.DeletePropagationBackground
		switch {
		case slices.Contains(latest.Finalizers, metav1.FinalizerOrphanDependents):
			policy = metav1.DeletePropagationOrphan
		case slices.Contains(latest.Finalizers, metav1.FinalizerDeleteDependents):
			policy = metav1.DeletePropagationForeground
		}
		c.log.Debug("deleting", "item", n.ref, "propagationPolicy", policy)
		return c.delete(ctx, res, n.ref, latest, policy)
	}
}

// classify sorts references into solid (the owner exists and is not
// deleting its dependents), dangling (absent) and waiting (the owner is
// being deleted in foreground), asking the API server, not the graph.
func (c *Controller) classify(ctx context.Context, dep objectRef, refs []metav1.OwnerReference) (solid, dangling, waiting []metav1.OwnerReference, err error) {
	for _, ref := range refs {
		owner, absent, err := c.owner(ctx, dep, ref)
		if err != nil {
			return nil, nil, nil, err
		}
		switch {
		case absent:
			dangling = append(dangling, ref)
		case owner.DeletionTimestamp != nil && slices.Contains(owner.Finalizers, metav1.FinalizerDeleteDependents):
			waiting = append(waiting, ref)
		default:
			solid = append(solid, ref)
		}
	}
	return solid, dangling, waiting, nil
}

// owner fetches the owner ref names for dependent dep: a namespaced owner
// lives in the dependent's namespace. absent: not found, or another uid.
func (c *Controller) owner(ctx context.Context, dep objectRef, ref metav1.OwnerReference) (*metav1.PartialObjectMetadata, bool, error) {
	res, err := c.resourceFor(ref.APIVersion, ref.Kind)
	if err != nil {
		return nil, false, err
	}
	ns := dep.Namespace
	switch {
	case !res.Namespaced:
		ns = ""
	case ns == "":
		// Never collected, whatever became of the owner: reported instead.
		c.reportInvalidNamespace(dep, ref)
		return nil, false, errClusterScopedWithNamespacedOwner
	}
	key := objectRef{APIVersion: ref.APIVersion, Kind: ref.Kind, Namespace: ns, Name: ref.Name, UID: ref.UID}
	if c.absent.has(key) {
		return nil, true, nil
	}
	owner, err := c.client(res, ns).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, false, err
	case owner.UID == ref.UID:
		return owner, false, nil
	}
	c.absent.add(key)
	return nil, true, nil
}

// delete deletes the object latest shows, if it is still the same object
// with the same owners.
func (c *Controller) delete(ctx context.Context, res *registry.Resource, ref objectRef, latest *metav1.PartialObjectMetadata, policy metav1.DeletionPropagation) error {
	client := c.client(res, ref.Namespace)
	uid, rv := ref.UID, latest.ResourceVersion
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}, PropagationPolicy: &policy}
	err := client.Delete(ctx, ref.Name, opts)
	if apierrors.IsConflict(err) {
		// Changed since: delete anyway if its owners did not change.
		live, gerr := client.Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(gerr) || (gerr == nil && live.UID != uid):
			c.graph.absentVerified(ref)
			return nil
		case gerr != nil:
			return gerr
		case live.ResourceVersion == rv:
			return err
		case !apiequality.Semantic.DeepEqual(live.OwnerReferences, latest.OwnerReferences):
			return fmt.Errorf("owner references of %s changed: %w", ref, err)
		}
		opts.Preconditions.ResourceVersion = nil
		err = client.Delete(ctx, ref.Name, opts)
	}
	if apierrors.IsNotFound(err) {
		c.graph.absentVerified(ref)
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting %s: %w", ref, err)
	}
	return nil
}

// processDeletingDependents finishes a foreground deletion once no
// dependent blocks it, and otherwise makes sure the blocking ones go.
func (c *Controller) processDeletingDependents(ctx context.Context, n nodeState) error {
	blocking := c.graph.blockingDependents(n.ref.UID)
	if len(blocking) == 0 {
		c.log.Debug("removing finalizer", "item", n.ref, "finalizer", metav1.FinalizerDeleteDependents)
		return c.removeFinalizer(ctx, n.ref, metav1.FinalizerDeleteDependents)
	}
	for _, dep := range blocking {
		if !dep.deletingDependents {
			c.attemptToDelete.Add(dep.ref.UID)
		}
	}
	return nil
}

// attemptToOrphanItem removes an owner deleted with the orphan finalizer
// from its dependents' ownerReferences, then the finalizer from the owner.
func (c *Controller) attemptToOrphanItem(ctx context.Context, uid types.UID) error {
	n, ok := c.graph.get(uid)
	if !ok {
		return nil
	}
	var errs []error
	for _, dep := range c.graph.dependents(uid) {
		res, err := c.resourceFor(dep.ref.APIVersion, dep.ref.Kind)
		if err == nil {
			_, err = c.patch(ctx, res, dep.ref, deleteOwnerRefsPatch(dep.ref.UID, []metav1.OwnerReference{{UID: uid}}))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("orphaning %s: %w", dep.ref, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.log.Debug("removing finalizer", "item", n.ref, "finalizer", metav1.FinalizerOrphanDependents)
	return c.removeFinalizer(ctx, n.ref, metav1.FinalizerOrphanDependents)
}

// patch applies a strategic merge patch that names the object's uid and
// returns the patched object; a missing object needs no patch (nil, nil).
func (c *Controller) patch(ctx context.Context, res *registry.Resource, ref objectRef, p []byte) (*metav1.PartialObjectMetadata, error) {
	out, err := c.client(res, ref.Namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, p, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("patching %s: %w", ref, err)
	}
	return out, nil
}

// removeFinalizer removes f from the live object, with optimistic locking.
func (c *Controller) removeFinalizer(ctx context.Context, ref objectRef, f string) error {
	res, err := c.resourceFor(ref.APIVersion, ref.Kind)
	if err != nil {
		return err
	}
	client := c.client(res, ref.Namespace)
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		live, err := client.Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && live.UID != ref.UID) {
			return nil
		}
		if err != nil {
			return err
		}
		if !slices.Contains(live.Finalizers, f) {
			return nil
		}
		rest := slices.DeleteFunc(slices.Clone(live.Finalizers), func(x string) bool { return x == f })
		p, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": live.ResourceVersion, "finalizers": rest}})
		if err != nil {
			return err
		}
		_, err = client.Patch(ctx, ref.Name, types.MergePatchType, p, metav1.PatchOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("removing finalizer %s from %s: %w", f, ref, err)
	}
	return nil
}

// deleteOwnerRefsPatch removes the references to owners from the object
// with uid dependent (the uid makes it fail on another object).
func deleteOwnerRefsPatch(dependent types.UID, owners []metav1.OwnerReference) []byte {
	refs := make([]map[string]any, 0, len(owners))
	for _, o := range owners {
		refs = append(refs, map[string]any{"$patch": "delete", "uid": o.UID})
	}
	p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": refs, "uid": dependent}})
	return p
}

// unblockOwnerRefsPatch sets blockOwnerDeletion=false on the blocking
// references of refs; nil when none blocks.
func unblockOwnerRefsPatch(dependent types.UID, refs []metav1.OwnerReference) []byte {
	var unblocked []metav1.OwnerReference
	for _, o := range refs {
		if blocks(o) {
			o.BlockOwnerDeletion = new(bool)
			unblocked = append(unblocked, o)
		}
	}
	if len(unblocked) == 0 {
		return nil
	}
	p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": unblocked, "uid": dependent}})
	return p
}
