package history

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
)

// Claimer adopts and releases the objects a controller selects, with
// upstream's ControllerRefManager rules:
//
//   - an object controlled by someone else is left alone;
//   - an object we control stays ours while it matches; when it no longer
//     matches it is released (its controllerRef removed), unless the owner
//     is being deleted;
//   - an orphan that matches, in the owner's namespace, is adopted (given a
//     controllerRef to the owner) unless the owner or the object is being
//     deleted; before the first adoption CanAdopt runs once, typically a
//     live read proving that the owner is not being deleted.
//
// Adoption and release are strategic-merge patches that carry the object's
// UID, so a recreated object of the same name is not touched.
type Claimer struct {
	Client   kubernetes.Interface
	Owner    metav1.Object
	Kind     schema.GroupVersionKind
	Selector labels.Selector
	CanAdopt func(context.Context) error

	once     sync.Once
	adoptErr error
}

// patchFunc sends a strategic-merge patch to one object.
type patchFunc func(ctx context.Context, name string, data []byte) error

// ClaimPods returns the pods the owner controls after adopting and
// releasing; a pod must also pass every filter to match.
func (c *Claimer) ClaimPods(ctx context.Context, pods []*corev1.Pod, filters ...func(*corev1.Pod) bool) ([]*corev1.Pod, error) {
	var claimed []*corev1.Pod
	var errs []error
	for _, pod := range pods {
		match := c.Selector.Matches(labels.Set(pod.Labels))
		for _, f := range filters {
			match = match && f(pod)
		}
		ok, err := c.claim(ctx, pod, match, "Pod", c.patchPod)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			claimed = append(claimed, pod)
		}
	}
	return claimed, utilerrors.NewAggregate(errs)
}

// AdoptRevisions adopts orphaned revisions the caller has already selected
// (upstream's AdoptOrphanRevisions); one controlled by another is an error.
func (c *Claimer) AdoptRevisions(ctx context.Context, revisions []*appsv1.ControllerRevision) error {
	for _, r := range revisions {
		if ref := metav1.GetControllerOfNoCopy(r); ref != nil {
			return fmt.Errorf("attempt to adopt revision %s owned by %s %s", r.Name, ref.Kind, ref.Name)
		}
		if err := c.adopt(ctx, r, "ControllerRevision", c.patchRevision); err != nil {
			return err
		}
	}
	return nil
}

func (c *Claimer) patchRevision(ctx context.Context, name string, data []byte) error {
	_, err := c.Client.AppsV1().ControllerRevisions(c.Owner.GetNamespace()).Patch(ctx, name, types.StrategicMergePatchType, data, metav1.PatchOptions{})
	return err
}

func (c *Claimer) patchPod(ctx context.Context, name string, data []byte) error {
	_, err := c.Client.CoreV1().Pods(c.Owner.GetNamespace()).Patch(ctx, name, types.StrategicMergePatchType, data, metav1.PatchOptions{})
	return err
}

// ClaimRevisions is ClaimPods for ControllerRevisions.
func (c *Claimer) ClaimRevisions(ctx context.Context, revisions []*appsv1.ControllerRevision) ([]*appsv1.ControllerRevision, error) {
	var claimed []*appsv1.ControllerRevision
	var errs []error
	for _, r := range revisions {
		ok, err := c.claim(ctx, r, c.Selector.Matches(labels.Set(r.Labels)), "ControllerRevision", c.patchRevision)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			claimed = append(claimed, r)
		}
	}
	return claimed, utilerrors.NewAggregate(errs)
}

// adopt gives obj a controllerRef to the owner (CanAdopt permitting).
func (c *Claimer) adopt(ctx context.Context, obj metav1.Object, kind string, patch patchFunc) error {
	c.once.Do(func() {
		if c.CanAdopt != nil {
			c.adoptErr = c.CanAdopt(ctx)
		}
	})
	if c.adoptErr != nil {
		return fmt.Errorf("can't adopt %s %s/%s (%s): %w", kind, obj.GetNamespace(), obj.GetName(), obj.GetUID(), c.adoptErr)
	}
	data := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":%q,"kind":%q,"name":%q,"uid":%q,"controller":true,"blockOwnerDeletion":true}],"uid":%q}}`,
		c.Kind.GroupVersion().String(), c.Kind.Kind, c.Owner.GetName(), c.Owner.GetUID(), obj.GetUID())
	return patch(ctx, obj.GetName(), []byte(data))
}

// release removes the owner's reference from obj; an object gone, or no
// longer referring to the owner, is not an error.
func (c *Claimer) release(ctx context.Context, obj metav1.Object, patch patchFunc) error {
	data := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"$patch":"delete","uid":%q}],"uid":%q}}`, c.Owner.GetUID(), obj.GetUID())
	err := patch(ctx, obj.GetName(), []byte(data))
	if apierrors.IsNotFound(err) || apierrors.IsInvalid(err) {
		return nil
	}
	return err
}

func (c *Claimer) claim(ctx context.Context, obj metav1.Object, match bool, kind string, patch patchFunc) (bool, error) {
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		switch {
		case ref.UID != c.Owner.GetUID():
			return false, nil
		case match:
			return true, nil
		case c.Owner.GetDeletionTimestamp() != nil:
			return false, nil
		}
		return false, c.release(ctx, obj, patch)
	}
	if !match || c.Owner.GetDeletionTimestamp() != nil || obj.GetDeletionTimestamp() != nil || obj.GetNamespace() != c.Owner.GetNamespace() {
		return false, nil
	}
	if err := c.adopt(ctx, obj, kind, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// OwnerNotDeleted is a CanAdopt that reads the owner live and refuses when
// it is gone, replaced (another UID) or being deleted.
func OwnerNotDeleted(owner metav1.Object, get func(ctx context.Context) (metav1.Object, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		fresh, err := get(ctx)
		if err != nil {
			return fmt.Errorf("can't recheck DeletionTimestamp: %w", err)
		}
		if fresh.GetUID() != owner.GetUID() {
			return fmt.Errorf("original %s/%s is gone: got uid %s, wanted %s", owner.GetNamespace(), owner.GetName(), fresh.GetUID(), owner.GetUID())
		}
		if fresh.GetDeletionTimestamp() != nil {
			return fmt.Errorf("%s/%s has just been deleted at %v", owner.GetNamespace(), owner.GetName(), fresh.GetDeletionTimestamp())
		}
		return nil
	}
}
