package daemonset

import (
	"reflect"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubectl/pkg/util/podutils"
)

func (c *Controller) daemonSetAdded(obj any) { c.enqueue(obj.(*appsv1.DaemonSet)) }

func (c *Controller) daemonSetUpdated(oldObj, newObj any) {
	old, cur := oldObj.(*appsv1.DaemonSet), newObj.(*appsv1.DaemonSet)
	if old.UID != cur.UID {
		// Replaced under the same name: the old one's expectations go.
		c.daemonSetDeleted(old)
	}
	c.enqueue(cur)
}

func (c *Controller) daemonSetDeleted(obj any) {
	ds, ok := unwrap[*appsv1.DaemonSet](obj)
	if !ok {
		return
	}
	c.expectations.forget(keyOf(ds))
	c.enqueue(ds)
}

// unwrap returns the object of a delete notification, tombstone or not.
func unwrap[T any](obj any) (T, bool) {
	if t, ok := obj.(T); ok {
		return t, true
	}
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		t, ok := tombstone.Obj.(T)
		return t, ok
	}
	var zero T
	return zero, false
}

// resolve returns the daemon set a controllerRef names, if it is that one.
func (c *Controller) resolve(namespace string, ref *metav1.OwnerReference) *appsv1.DaemonSet {
	if ref == nil || ref.Kind != dsKind.Kind {
		return nil
	}
	ds, err := c.daemonSets.DaemonSets(namespace).Get(ref.Name)
	if err != nil || ds.UID != ref.UID {
		return nil
	}
	return ds
}

// selecting returns the daemon sets whose selector matches objLabels.
func (c *Controller) selecting(namespace string, objLabels map[string]string) []*appsv1.DaemonSet {
	all, err := c.daemonSets.DaemonSets(namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*appsv1.DaemonSet
	for _, ds := range all {
		selector, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err != nil || selector.Empty() || !selector.Matches(labels.Set(objLabels)) {
			continue
		}
		out = append(out, ds)
	}
	return out
}

func (c *Controller) revisionAdded(obj any) {
	r := obj.(*appsv1.ControllerRevision)
	if r.DeletionTimestamp != nil {
		c.revisionDeleted(r)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(r); ref != nil {
		// Nothing to do: our own revisions come from our syncs.
		return
	}
	for _, ds := range c.selecting(r.Namespace, r.Labels) {
		c.enqueue(ds)
	}
}

func (c *Controller) revisionUpdated(oldObj, newObj any) {
	old, cur := oldObj.(*appsv1.ControllerRevision), newObj.(*appsv1.ControllerRevision)
	if old.ResourceVersion == cur.ResourceVersion {
		return
	}
	c.ownerChanged(old.Namespace, metav1.GetControllerOfNoCopy(old), metav1.GetControllerOfNoCopy(cur), old.Labels, cur.Labels)
}

func (c *Controller) revisionDeleted(obj any) {
	r, ok := unwrap[*appsv1.ControllerRevision](obj)
	if !ok {
		return
	}
	if ds := c.resolve(r.Namespace, metav1.GetControllerOfNoCopy(r)); ds != nil {
		c.enqueue(ds)
	}
}

// ownerChanged wakes the controllers concerned by an updated pod or
// revision: the old one if the controllerRef changed, the current one, or
// for an orphan whose labels or ref changed, every daemon set selecting it.
// It returns the current controller.
func (c *Controller) ownerChanged(namespace string, oldRef, curRef *metav1.OwnerReference, oldLabels, curLabels map[string]string) *appsv1.DaemonSet {
	refChanged := !reflect.DeepEqual(oldRef, curRef)
	if refChanged && oldRef != nil {
		if ds := c.resolve(namespace, oldRef); ds != nil {
			c.enqueue(ds)
		}
	}
	if curRef != nil {
		ds := c.resolve(namespace, curRef)
		if ds != nil {
			c.enqueue(ds)
		}
		return ds
	}
	if refChanged || !reflect.DeepEqual(oldLabels, curLabels) {
		for _, ds := range c.selecting(namespace, curLabels) {
			c.enqueue(ds)
		}
	}
	return nil
}

// podAdded observes a creation by its controller; an orphan wakes the
// daemon sets that may adopt it.
func (c *Controller) podAdded(obj any) {
	pod := obj.(*corev1.Pod)
	if pod.DeletionTimestamp != nil {
		c.podDeleted(pod)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		if ds := c.resolve(pod.Namespace, ref); ds != nil {
			c.expectations.creationObserved(keyOf(ds))
			c.enqueue(ds)
		}
		return
	}
	for _, ds := range c.selecting(pod.Namespace, pod.Labels) {
		c.enqueue(ds)
	}
}

// podUpdated treats a pod being deleted as deleted (its replacement may be
// created at once); a pod that just became Ready wakes its daemon set
// again after minReadySeconds.
func (c *Controller) podUpdated(oldObj, newObj any) {
	old, cur := oldObj.(*corev1.Pod), newObj.(*corev1.Pod)
	if old.ResourceVersion == cur.ResourceVersion {
		return
	}
	if cur.DeletionTimestamp != nil {
		c.podDeleted(cur)
		return
	}
	ds := c.ownerChanged(cur.Namespace, metav1.GetControllerOfNoCopy(old), metav1.GetControllerOfNoCopy(cur), old.Labels, cur.Labels)
	if ds != nil && ds.Spec.MinReadySeconds > 0 && !podutils.IsPodReady(old) && podutils.IsPodReady(cur) {
		// A second more, for the sub-second skew of AddAfter.
		c.enqueueAfter(ds, time.Duration(ds.Spec.MinReadySeconds)*time.Second+time.Second)
	}
}

func (c *Controller) podDeleted(obj any) {
	pod, ok := unwrap[*corev1.Pod](obj)
	if !ok {
		return
	}
	if ds := c.resolve(pod.Namespace, metav1.GetControllerOfNoCopy(pod)); ds != nil {
		c.expectations.deletionObserved(keyOf(ds))
		c.enqueue(ds)
	}
}

// nodeAdded wakes the daemon sets that should run on the node.
func (c *Controller) nodeAdded(obj any) {
	node := obj.(*corev1.Node)
	all, err := c.daemonSets.List(labels.Everything())
	if err != nil {
		return
	}
	for _, ds := range all {
		if run, _ := shouldRun(node, ds); run {
			c.enqueue(ds)
		}
	}
}

// nodeUpdated wakes the daemon sets whose eligibility on the node changed;
// heartbeats alone are ignored.
func (c *Controller) nodeUpdated(oldObj, newObj any) {
	old, cur := oldObj.(*corev1.Node), newObj.(*corev1.Node)
	if onlyHeartbeat(old, cur) {
		return
	}
	all, err := c.daemonSets.List(labels.Everything())
	if err != nil {
		return
	}
	for _, ds := range all {
		oldRun, oldKeep := shouldRun(old, ds)
		curRun, curKeep := shouldRun(cur, ds)
		if oldRun != curRun || oldKeep != curKeep {
			c.enqueue(ds)
		}
	}
}

// onlyHeartbeat says whether two versions of a node differ only in
// resourceVersion and in conditions without changing which are True.
func onlyHeartbeat(old, cur *corev1.Node) bool {
	trueConditions := func(n *corev1.Node) map[corev1.NodeConditionType]bool {
		m := map[corev1.NodeConditionType]bool{}
		for _, c := range n.Status.Conditions {
			if c.Status == corev1.ConditionTrue {
				m[c.Type] = true
			}
		}
		return m
	}
	if !reflect.DeepEqual(trueConditions(old), trueConditions(cur)) {
		return false
	}
	a, b := old.DeepCopy(), cur.DeepCopy()
	a.ResourceVersion, a.Status.Conditions = b.ResourceVersion, b.Status.Conditions
	return equality.Semantic.DeepEqual(a, b)
}
