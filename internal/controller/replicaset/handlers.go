package replicaset

import (
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// This file holds the informer handlers: which owners a change of an owner
// or a pod wakes up, and which expectations it fulfils.

func (c *Controller) ownerAdded(obj any) {
	if rs, ok := c.kind.view(obj); ok {
		c.enqueue(rs)
	}
}

func (c *Controller) ownerUpdated(oldObj, curObj any) {
	old, ok1 := c.kind.view(oldObj)
	cur, ok2 := c.kind.view(curObj)
	if !ok1 || !ok2 {
		return
	}
	if old.UID != cur.UID {
		// Deleted and created again between two events.
		c.ownerDeleted(cache.DeletedFinalStateUnknown{Key: keyOf(old), Obj: oldObj})
	}
	// Every update syncs, so that a resync retries owners whose creates
	// failed.
	c.enqueue(cur)
}

func (c *Controller) ownerDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	rs, ok := c.kind.view(obj)
	if !ok {
		return
	}
	key := keyOf(rs)
	c.expectations.forget(key)
	c.queue.Add(key)
}

func (c *Controller) podAdded(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.DeletionTimestamp != nil {
		// Seen for the first time already terminating (after a restart):
		// a deletion, not a creation.
		c.podDeleted(pod)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		if rs := c.kind.resolve(pod.Namespace, ref); rs != nil {
			key := keyOf(rs)
			c.expectations.creationObserved(key)
			c.queue.Add(key)
		}
		return
	}
	// An orphan: the owners that select it may adopt it. No owner waits
	// for an orphan, so no expectation is fulfilled.
	for _, rs := range c.kind.selecting(pod) {
		c.enqueue(rs)
	}
}

func (c *Controller) podUpdated(oldObj, curObj any) {
	old, ok1 := oldObj.(*corev1.Pod)
	cur, ok2 := curObj.(*corev1.Pod)
	if !ok1 || !ok2 || old.ResourceVersion == cur.ResourceVersion {
		return
	}
	labelsChanged := !reflect.DeepEqual(old.Labels, cur.Labels)
	if cur.DeletionTimestamp != nil {
		// A graceful deletion has begun: replace the pod now rather than
		// when it is gone.
		c.podDeleted(cur)
		if labelsChanged {
			c.podDeleted(old)
		}
		return
	}
	curRef, oldRef := metav1.GetControllerOfNoCopy(cur), metav1.GetControllerOfNoCopy(old)
	refChanged := !reflect.DeepEqual(curRef, oldRef)
	if refChanged && oldRef != nil {
		if rs := c.kind.resolve(old.Namespace, oldRef); rs != nil {
			c.enqueue(rs)
		}
	}
	if curRef != nil {
		rs := c.kind.resolve(cur.Namespace, curRef)
		if rs == nil {
			return
		}
		c.enqueue(rs)
		// The pod becomes available minReadySeconds after it became
		// ready, which no event announces: look again then.
		if !podReady(old) && podReady(cur) && rs.Spec.MinReadySeconds > 0 {
			c.queue.AddAfter(keyOf(rs), time.Duration(rs.Spec.MinReadySeconds)*time.Second+time.Second)
		}
		return
	}
	if labelsChanged || refChanged {
		for _, rs := range c.kind.selecting(cur) {
			c.enqueue(rs)
		}
	}
}

func (c *Controller) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil {
		return
	}
	rs := c.kind.resolve(pod.Namespace, ref)
	if rs == nil {
		return
	}
	key := keyOf(rs)
	c.expectations.deletionObserved(key, podKey(pod))
	c.queue.Add(key)
}

func podKey(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }
