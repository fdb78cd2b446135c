package daemonset

import (
	"bytes"
	"context"
	"fmt"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/json"

	"github.com/moorage/moorage/internal/controller/history"
)

// hashLabel holds a template hash on daemon pods and revisions.
const hashLabel = appsv1.DefaultDaemonSetUniqueLabelKey

// templateGenerationLabel holds, on daemon pods, the daemon set's
// deprecated.daemonset.template.generation annotation when it has one.
const templateGenerationLabel = "pod-template-generation"

// revisionData is the daemon set's template as a replacing strategic-merge
// patch: {"spec":{"template":{...,"$patch":"replace"}}}.
func revisionData(ds *appsv1.DaemonSet) ([]byte, error) {
	encoded, err := json.Marshal(ds)
	if err != nil {
		return nil, err
	}
	var object map[string]any
	if err := json.Unmarshal(encoded, &object); err != nil {
		return nil, err
	}
	return history.TemplatePatch(object)
}

// recordsTemplate says whether revision records ds's current template.
func recordsTemplate(ds *appsv1.DaemonSet, revision *appsv1.ControllerRevision) (bool, error) {
	data, err := revisionData(ds)
	if err != nil {
		return false, err
	}
	return bytes.Equal(data, revision.Data.Raw), nil
}

// constructHistory is upstream's: it claims the daemon set's revisions,
// labels any without a hash label with its name, and returns the revision
// recording the current template (creating it, or renumbering it as the
// newest) and the older ones. Duplicates of the current one are merged.
func (c *Controller) constructHistory(ctx context.Context, ds *appsv1.DaemonSet) (cur *appsv1.ControllerRevision, old []*appsv1.ControllerRevision, _ error) {
	revisions, err := c.controlledRevisions(ctx, ds)
	if err != nil {
		return nil, nil, err
	}
	var current []*appsv1.ControllerRevision
	for _, r := range revisions {
		if _, ok := r.Labels[hashLabel]; !ok {
			labelled := r.DeepCopy()
			if labelled.Labels == nil {
				labelled.Labels = map[string]string{}
			}
			labelled.Labels[hashLabel] = labelled.Name
			if r, err = c.client.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, labelled, metav1.UpdateOptions{}); err != nil {
				return nil, nil, err
			}
		}
		match, err := recordsTemplate(ds, r)
		if err != nil {
			return nil, nil, err
		}
		if match {
			current = append(current, r)
		} else {
			old = append(old, r)
		}
	}
	next := maxRevision(old) + 1
	if len(current) == 0 {
		cur, err = c.snapshot(ctx, ds, next)
		return cur, old, err
	}
	if cur, err = c.dedupCurrent(ctx, ds, current); err != nil {
		return nil, nil, err
	}
	if cur.Revision < next {
		renumbered := cur.DeepCopy()
		renumbered.Revision = next
		if _, err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Update(ctx, renumbered, metav1.UpdateOptions{}); err != nil {
			return nil, nil, err
		}
	}
	return cur, old, nil
}

func maxRevision(revisions []*appsv1.ControllerRevision) int64 {
	var n int64
	for _, r := range revisions {
		n = max(n, r.Revision)
	}
	return n
}

// controlledRevisions adopts and releases revisions by the selector, among
// all revisions of the namespace (those we own but no longer select too).
func (c *Controller) controlledRevisions(ctx context.Context, ds *appsv1.DaemonSet) ([]*appsv1.ControllerRevision, error) {
	selector, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, err
	}
	all, err := c.revisions.ControllerRevisions(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return c.claimer(ds, selector).ClaimRevisions(ctx, all)
}

// snapshot creates the revision recording ds's template, named after the
// template hash. On a name taken by another template it raises the daemon
// set's collisionCount (so the next sync hashes differently) and fails.
func (c *Controller) snapshot(ctx context.Context, ds *appsv1.DaemonSet, number int64) (*appsv1.ControllerRevision, error) {
	data, err := revisionData(ds)
	if err != nil {
		return nil, err
	}
	hash := history.HashTemplate(&ds.Spec.Template, ds.Status.CollisionCount)
	labels := map[string]string{}
	for k, v := range ds.Spec.Template.Labels {
		labels[k] = v
	}
	labels[hashLabel] = hash
	revision := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name:            ds.Name + "-" + hash,
			Namespace:       ds.Namespace,
			Labels:          labels,
			Annotations:     ds.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, dsKind)},
		},
		Data:     runtime.RawExtension{Raw: data},
		Revision: number,
	}
	api := c.client.AppsV1().ControllerRevisions(ds.Namespace)
	created, createErr := api.Create(ctx, revision, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(createErr) {
		return created, createErr
	}
	existing, getErr := api.Get(ctx, revision.Name, metav1.GetOptions{})
	if getErr != nil {
		return nil, getErr
	}
	if done, matchErr := recordsTemplate(ds, existing); matchErr != nil || done {
		return existing, matchErr
	}
	// A true collision: raise collisionCount, unless ours was stale.
	fresh, getErr := c.client.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
	if getErr != nil {
		return nil, getErr
	}
	if !reflect.DeepEqual(fresh.Status.CollisionCount, ds.Status.CollisionCount) {
		return nil, fmt.Errorf("found a stale collision count (%v, expected %v) of DaemonSet %q while processing; will retry until it is updated",
			ds.Status.CollisionCount, fresh.Status.CollisionCount, ds.Name)
	}
	if fresh.Status.CollisionCount == nil {
		fresh.Status.CollisionCount = new(int32)
	}
	*fresh.Status.CollisionCount++
	if _, err := c.client.AppsV1().DaemonSets(ds.Namespace).UpdateStatus(ctx, fresh, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	c.log.Info("hash collision; bumped collisionCount", "daemonset", ds.Namespace+"/"+ds.Name, "collisionCount", *fresh.Status.CollisionCount)
	return nil, createErr
}

// dedupCurrent keeps the highest-numbered of several revisions recording
// the current template: it relabels the pods of the others to its hash and
// deletes them.
func (c *Controller) dedupCurrent(ctx context.Context, ds *appsv1.DaemonSet, current []*appsv1.ControllerRevision) (*appsv1.ControllerRevision, error) {
	if len(current) == 1 {
		return current[0], nil
	}
	keep := current[0]
	for _, r := range current {
		if r.Revision >= keep.Revision {
			keep = r
		}
	}
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return nil, err
	}
	for _, pod := range pods {
		if pod.Labels[hashLabel] == keep.Labels[hashLabel] {
			continue
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{hashLabel: keep.Labels[hashLabel]}}})
		if err != nil {
			return nil, err
		}
		if _, err := c.client.CoreV1().Pods(ds.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return nil, err
		}
	}
	for _, r := range current {
		if r.Name == keep.Name {
			continue
		}
		if err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil {
			return nil, err
		}
	}
	return keep, nil
}

// cleanupHistory deletes the oldest old revisions that no pod (terminated
// ones included) uses, until at most revisionHistoryLimit old ones remain.
func (c *Controller) cleanupHistory(ctx context.Context, ds *appsv1.DaemonSet, old []*appsv1.ControllerRevision) error {
	limit := int(*ds.Spec.RevisionHistoryLimit)
	if len(old) <= limit {
		return nil
	}
	byNode, err := c.nodesToDaemonPods(ctx, ds, true)
	if err != nil {
		return fmt.Errorf("couldn't get node to daemon pod mapping for daemon set %q: %v", ds.Name, err)
	}
	liveHashes := map[string]bool{}
	for _, pods := range byNode {
		for _, pod := range pods {
			if h := pod.Labels[hashLabel]; h != "" {
				liveHashes[h] = true
			}
		}
	}
	live := func(r *appsv1.ControllerRevision) bool { return liveHashes[r.Labels[hashLabel]] }
	liveCount := 0
	for _, r := range old {
		if live(r) {
			liveCount++
		}
	}
	for _, r := range history.Prunable(old, limit-liveCount, live) {
		if err := c.client.AppsV1().ControllerRevisions(ds.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// hasHash says whether the pod runs the revision with hash (upstream's
// IsPodUpdated, whose template-generation half needs the apiserver's
// deprecated.daemonset.template.generation annotation).
func hasHash(pod *corev1.Pod, hash string, generation *int64) bool {
	generationMatches := generation != nil && pod.Labels[templateGenerationLabel] == fmt.Sprint(*generation)
	return hash != "" && pod.Labels[hashLabel] == hash || generationMatches
}
