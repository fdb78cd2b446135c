package statefulset

import (
	"context"
	"encoding/json"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/moorage/moorage/internal/controller/history"
)

// setCodec encodes sets as apps/v1 JSON, as upstream's patchCodec.
var setCodec = scheme.Codecs.LegacyCodec(appsv1.SchemeGroupVersion)

// revisionData is the set's template as a replacing strategic-merge patch:
// {"spec":{"template":{...,"$patch":"replace"}}}.
func revisionData(set *appsv1.StatefulSet) ([]byte, error) {
	encoded, err := runtime.Encode(setCodec, set)
	if err != nil {
		return nil, err
	}
	var object map[string]any
	if err := json.Unmarshal(encoded, &object); err != nil {
		return nil, err
	}
	return history.TemplatePatch(object)
}

// newRevision is the revision recording set's template: labelled with the
// template's labels and the data hash, annotated with the set's
// annotations, controlled by the set, named after the set and the hash.
func newRevision(set *appsv1.StatefulSet, number int64, collisionCount *int32) (*appsv1.ControllerRevision, error) {
	data, err := revisionData(set)
	if err != nil {
		return nil, err
	}
	hash := history.HashData(data, collisionCount)
	labels := copyMap(set.Spec.Template.Labels)
	labels[history.HashLabel] = hash
	return &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name:            history.Name(set.Name, hash),
			Labels:          labels,
			Annotations:     copyMap(set.Annotations),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(set, setKind)},
		},
		Data:     runtime.RawExtension{Raw: data},
		Revision: number,
	}, nil
}

// applyRevision returns a copy of set with revision's template restored.
func applyRevision(set *appsv1.StatefulSet, revision *appsv1.ControllerRevision) (*appsv1.StatefulSet, error) {
	clone := set.DeepCopy()
	encoded, err := runtime.Encode(setCodec, clone)
	if err != nil {
		return nil, err
	}
	patched, err := strategicpatch.StrategicMergePatch(encoded, revision.Data.Raw, clone)
	if err != nil {
		return nil, err
	}
	restored := &appsv1.StatefulSet{}
	if err := json.Unmarshal(patched, restored); err != nil {
		return nil, err
	}
	return restored, nil
}

// nextRevisionNumber is one more than the highest of sorted revisions, or 1.
func nextRevisionNumber(sorted []*appsv1.ControllerRevision) int64 {
	if len(sorted) == 0 {
		return 1
	}
	return sorted[len(sorted)-1].Revision + 1
}

// revisions returns the set's current and update revisions and collision
// count, as upstream's getStatefulSetRevisions: the update revision is the
// latest revision if it records the template, else an older equal one
// renumbered as the latest (a rollback), else a new one; the current
// revision is status.currentRevision, or the update revision at first.
// sorted must be sorted by revision number.
func (s *syncPass) revisions(ctx context.Context, set *appsv1.StatefulSet, sorted []*appsv1.ControllerRevision) (current, update *appsv1.ControllerRevision, collisionCount int32, err error) {
	if set.Status.CollisionCount != nil {
		collisionCount = *set.Status.CollisionCount
	}
	update, err = newRevision(set, nextRevisionNumber(sorted), &collisionCount)
	if err != nil {
		return nil, nil, collisionCount, err
	}
	equal := history.FindEqual(sorted, update)
	switch {
	case len(equal) > 0 && history.Equal(sorted[len(sorted)-1], equal[len(equal)-1]):
		update = sorted[len(sorted)-1]
	case len(equal) > 0:
		update, err = s.c.history.Renumber(ctx, equal[len(equal)-1], update.Revision)
	default:
		update, err = s.c.history.Create(ctx, set, update, &collisionCount)
	}
	if err != nil {
		return nil, nil, collisionCount, err
	}
	for _, r := range sorted {
		if r.Name == set.Status.CurrentRevision {
			current = r
			break
		}
	}
	if current == nil {
		current = update
	}
	return current, update, collisionCount, nil
}

// truncateHistory deletes, oldest first, revisions that are neither the
// current nor the update revision nor used by a pod, beyond
// revisionHistoryLimit of them.
func (s *syncPass) truncateHistory(ctx context.Context, set *appsv1.StatefulSet, pods []*corev1.Pod, sorted []*appsv1.ControllerRevision, current, update *appsv1.ControllerRevision) error {
	limit := int(*set.Spec.RevisionHistoryLimit)
	if limit < 0 {
		return nil
	}
	live := map[string]bool{}
	for _, r := range []*appsv1.ControllerRevision{current, update} {
		if r != nil {
			live[r.Name] = true
		}
	}
	for _, pod := range pods {
		live[revisionOf(pod)] = true
	}
	for _, r := range history.Prunable(sorted, limit, func(r *appsv1.ControllerRevision) bool { return live[r.Name] }) {
		if err := s.c.history.Delete(ctx, r); err != nil {
			return err
		}
	}
	return nil
}
