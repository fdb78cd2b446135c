package history

import (
	"bytes"
	"context"
	"errors"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/util/retry"
)

// Store reads revisions from an informer's cache and writes them through the
// API, as upstream's history.Interface.
type Store struct {
	Client kubernetes.Interface
	Lister appslisters.ControllerRevisionLister
}

// ListOwned returns the revisions in owner's namespace that match selector
// and are controlled by owner or by nobody.
func (s Store) ListOwned(owner metav1.Object, selector labels.Selector) ([]*appsv1.ControllerRevision, error) {
	all, err := s.Lister.ControllerRevisions(owner.GetNamespace()).List(selector)
	if err != nil {
		return nil, err
	}
	var owned []*appsv1.ControllerRevision
	for _, r := range all {
		if ref := metav1.GetControllerOfNoCopy(r); ref == nil || ref.UID == owner.GetUID() {
			owned = append(owned, r)
		}
	}
	return owned, nil
}

// Create creates revision in owner's namespace, named after owner and the
// hash of its data and *collisionCount. When that name is taken by a
// revision with other data, *collisionCount is raised and the name hashed
// again; when it is taken by the same data, that revision is returned.
func (s Store) Create(ctx context.Context, owner metav1.Object, revision *appsv1.ControllerRevision, collisionCount *int32) (*appsv1.ControllerRevision, error) {
	if collisionCount == nil {
		return nil, errors.New("collisionCount must not be nil")
	}
	clone := revision.DeepCopy()
	api := s.Client.AppsV1().ControllerRevisions(owner.GetNamespace())
	for {
		clone.Name = Name(owner.GetName(), HashData(revision.Data.Raw, collisionCount))
		created, err := api.Create(ctx, clone, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return created, err
		}
		existing, err := api.Get(ctx, clone.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if bytes.Equal(existing.Data.Raw, clone.Data.Raw) {
			return existing, nil
		}
		*collisionCount++
	}
}

// Renumber sets revision's number to n, retrying on conflicts with the
// cached copy.
func (s Store) Renumber(ctx context.Context, revision *appsv1.ControllerRevision, n int64) (*appsv1.ControllerRevision, error) {
	clone := revision.DeepCopy()
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if clone.Revision == n {
			return nil
		}
		clone.Revision = n
		updated, err := s.Client.AppsV1().ControllerRevisions(clone.Namespace).Update(ctx, clone, metav1.UpdateOptions{})
		if err == nil {
			clone = updated
			return nil
		}
		if cached, gerr := s.Lister.ControllerRevisions(clone.Namespace).Get(clone.Name); gerr == nil {
			clone = cached.DeepCopy()
		}
		return err
	})
	return clone, err
}

// Delete deletes revision.
func (s Store) Delete(ctx context.Context, revision *appsv1.ControllerRevision) error {
	return s.Client.AppsV1().ControllerRevisions(revision.Namespace).Delete(ctx, revision.Name, metav1.DeleteOptions{})
}
