package protection

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// batches gathers claim names by namespace, each namespace queued once
// while it has a pending batch.
type batches struct {
	mu         sync.Mutex
	pending    map[string][]string
	namespaces workqueue.TypedInterface[string]
}

func newBatches() *batches {
	return &batches{pending: map[string][]string{}, namespaces: workqueue.NewTyped[string]()}
}

func (b *batches) add(namespace, name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.pending[namespace]; !ok {
		b.namespaces.Add(namespace)
	}
	b.pending[namespace] = append(b.pending[namespace], name)
}

// next waits for a namespace and takes its whole batch; false on shutdown.
func (b *batches) next() (string, []string, bool) {
	namespace, quit := b.namespaces.Get()
	if quit {
		return "", nil, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	names := b.pending[namespace]
	delete(b.pending, namespace)
	b.namespaces.Done(namespace)
	return namespace, names, true
}

// batchNextClaim moves a key off the claim queue into its namespace's
// batch; the key stays in processing (no Done) until the batch is handled.
func (c *Controller) batchNextClaim() bool {
	key, quit := c.claimQueue.Get()
	if quit {
		return false
	}
	namespace, name, ok := strings.Cut(key, "/")
	if !ok {
		c.claimQueue.Forget(key)
		c.claimQueue.Done(key)
		return true
	}
	c.batches.add(namespace, name)
	return true
}

// processNextNamespace handles the claims of one namespace's batch.
func (c *Controller) processNextNamespace(ctx context.Context) bool {
	namespace, names, ok := c.batches.next()
	if !ok {
		return false
	}
	errs := c.syncClaims(ctx, namespace, names)
	for _, name := range names {
		key := namespace + "/" + name
		if err := errs[name]; err != nil {
			logFailure(ctx, c.pvcLog, "protecting claim failed", "claim", key, err)
			c.claimQueue.AddRateLimited(key)
		} else {
			c.claimQueue.Forget(key)
		}
		c.claimQueue.Done(key)
	}
	return true
}

// syncClaims removes the finalizer of the namespace's named claims being
// deleted that no pod uses, and adds it to claims that lack it. It returns
// the failures by claim name.
func (c *Controller) syncClaims(ctx context.Context, namespace string, names []string) map[string]error {
	errs := map[string]error{}
	var unsure []*corev1.PersistentVolumeClaim // being deleted, unused as far as the cache knows
	for _, name := range names {
		pvc, err := c.claims.PersistentVolumeClaims(namespace).Get(name)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs[name] = err
			continue
		}
		switch {
		case isDeletionCandidate(pvc, PVCFinalizer):
			if c.usedInCache(pvc) {
				c.pvcLog.Debug("keeping claim: a pod uses it", "claim", namespace+"/"+name)
				continue
			}
			unsure = append(unsure, pvc)
		case needsFinalizer(pvc, PVCFinalizer):
			pvc = pvc.DeepCopy()
			pvc.Finalizers = append(pvc.Finalizers, PVCFinalizer)
			errs[name] = c.updateClaim(ctx, pvc)
		}
	}
	if len(unsure) == 0 {
		return errs
	}
	// The cache may lag: only a live list, taken after every claim above was
	// read, is trusted to show that no pod uses a claim.
	pods, err := c.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	for _, pvc := range unsure {
		switch {
		case err != nil:
			errs[pvc.Name] = fmt.Errorf("live list of pods failed: %w", err)
		case anyPodUses(pods.Items, pvc):
			c.pvcLog.Debug("keeping claim: a pod uses it", "claim", namespace+"/"+pvc.Name)
		default:
			pvc = pvc.DeepCopy()
			pvc.Finalizers = without(pvc.Finalizers, PVCFinalizer)
			errs[pvc.Name] = c.updateClaim(ctx, pvc)
		}
	}
	return errs
}

// updateClaim writes pvc's finalizers; a claim gone meanwhile is no error.
func (c *Controller) updateClaim(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	_, err := c.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).Update(ctx, pvc, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		c.pvcLog.Debug("claim finalizers updated", "claim", pvc.Namespace+"/"+pvc.Name, "finalizers", pvc.Finalizers)
	}
	return err
}

// usedInCache: a pod in the informer's cache uses pvc.
func (c *Controller) usedInCache(pvc *corev1.PersistentVolumeClaim) bool {
	objs, err := c.pods.ByIndex(podClaimIndex, pvc.Namespace+"/"+pvc.Name)
	if err != nil {
		return false // the live list decides
	}
	for _, obj := range objs {
		if pod, ok := obj.(*corev1.Pod); ok && podUses(pod, pvc) {
			return true
		}
	}
	return false
}

func anyPodUses(pods []corev1.Pod, pvc *corev1.PersistentVolumeClaim) bool {
	for i := range pods {
		if podUses(&pods[i], pvc) {
			return true
		}
	}
	return false
}

// podUses is upstream's definition: a scheduled pod (kubelets see only
// those, and refuse to start pods whose claim is being deleted) references
// the claim by name, whatever its phase, or has a generic ephemeral volume
// whose claim it is, unless the pod is shut down.
func podUses(pod *corev1.Pod, pvc *corev1.PersistentVolumeClaim) bool {
	if pod.Spec.NodeName == "" {
		return false
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name {
			return true
		}
		if v.Ephemeral != nil && !podShutDown(pod) && ephemeralClaimName(pod, v) == pvc.Name &&
			pvc.Namespace == pod.Namespace && metav1.IsControlledBy(pvc, pod) {
			return true
		}
	}
	return false
}

// podShutDown: the pod was deleted with a zero grace period, by its kubelet
// once its volumes were torn down or by force. Its ephemeral claims are
// free then, which also breaks a cycle of a pod finalizer waiting for the
// claim.
func podShutDown(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp != nil && pod.DeletionGracePeriodSeconds != nil && *pod.DeletionGracePeriodSeconds == 0
}

// ephemeralClaimName is the name of the claim of a generic ephemeral volume.
func ephemeralClaimName(pod *corev1.Pod, v *corev1.Volume) string {
	return pod.Name + "-" + v.Name
}

// podClaimKeys indexes a pod by the keys of the claims it references,
// ephemeral volumes' claims included.
func podClaimKeys(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	var keys []string
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.PersistentVolumeClaim != nil:
			keys = append(keys, pod.Namespace+"/"+v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			keys = append(keys, pod.Namespace+"/"+ephemeralClaimName(pod, v))
		}
	}
	return keys, nil
}

// claimChanged queues a claim that needs the finalizer or may lose it.
func (c *Controller) claimChanged(obj any) {
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	if needsFinalizer(pvc, PVCFinalizer) || isDeletionCandidate(pvc, PVCFinalizer) {
		c.claimQueue.Add(pvc.Namespace + "/" + pvc.Name)
	}
}

// podChanged queues the claims of a pod that may have stopped blocking
// them. An update may hide the deletion of a pod and the creation of
// another of the same name: the old one's claims are queued then too.
func (c *Controller) podChanged(old, obj any, deleted bool) {
	pod := asPod(obj)
	if pod == nil {
		return
	}
	c.queueClaimsOf(pod, deleted)
	if oldPod := asPod(old); oldPod != nil && oldPod.UID != pod.UID {
		c.queueClaimsOf(oldPod, true)
	}
}

// queueClaimsOf queues the claims of pod unless it still blocks them for
// sure: a scheduled pod, not deleted nor terminated.
func (c *Controller) queueClaimsOf(pod *corev1.Pod, deleted bool) {
	if !deleted && !podTerminated(pod) && pod.Spec.NodeName != "" {
		return
	}
	keys, _ := podClaimKeys(pod)
	for _, key := range keys {
		c.claimQueue.Add(key)
	}
}

// podTerminated is upstream's IsPodTerminated: Failed or Succeeded, or
// deleted with no container running.
func podTerminated(pod *corev1.Pod) bool {
	s := &pod.Status
	return s.Phase == corev1.PodFailed || s.Phase == corev1.PodSucceeded ||
		pod.DeletionTimestamp != nil && notRunning(s.InitContainerStatuses) && notRunning(s.ContainerStatuses) && notRunning(s.EphemeralContainerStatuses)
}

// notRunning: every container is terminated or waiting.
func notRunning(statuses []corev1.ContainerStatus) bool {
	for _, s := range statuses {
		if s.State.Terminated == nil && s.State.Waiting == nil {
			return false
		}
	}
	return true
}

func asPod(obj any) *corev1.Pod {
	switch o := obj.(type) {
	case *corev1.Pod:
		return o
	case cache.DeletedFinalStateUnknown:
		pod, _ := o.Obj.(*corev1.Pod)
		return pod
	}
	return nil
}
