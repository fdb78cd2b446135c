package daemonset

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/kubectl/pkg/util/podutils"
)

const (
	// burstReplicas caps the pods created or deleted in one sync.
	burstReplicas = 250
	// slowStartInitialBatch is the first batch of a slow-start creation.
	slowStartInitialBatch = 1
)

// daemonPods returns the pods the daemon set controls, adopting and
// releasing by selector among all pods of the namespace.
func (c *Controller) daemonPods(ctx context.Context, ds *appsv1.DaemonSet) ([]*corev1.Pod, error) {
	selector, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, err
	}
	pods, err := c.pods.Pods(ds.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return c.claimer(ds, selector).ClaimPods(ctx, pods)
}

// nodesToDaemonPods groups the daemon set's pods by target node. Terminated
// pods being deleted are left out unless includeDeletedTerminal.
func (c *Controller) nodesToDaemonPods(ctx context.Context, ds *appsv1.DaemonSet, includeDeletedTerminal bool) (map[string][]*corev1.Pod, error) {
	pods, err := c.daemonPods(ctx, ds)
	if err != nil {
		return nil, err
	}
	byNode := map[string][]*corev1.Pod{}
	for _, pod := range pods {
		if !includeDeletedTerminal && terminal(pod) && pod.DeletionTimestamp != nil {
			continue
		}
		node, err := targetNode(pod)
		if err != nil {
			continue
		}
		byNode[node] = append(byNode[node], pod)
	}
	return byNode, nil
}

func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

// podsShouldBeOnNode decides, for one node, whether a daemon pod must be
// created and which pods must go: pods that failed (with back-off) or
// succeeded, pods beyond one (two while surging), and all pods on a node
// the daemon set no longer runs on.
func (c *Controller) podsShouldBeOnNode(node *corev1.Node, byNode map[string][]*corev1.Pod, ds *appsv1.DaemonSet, hash string) (create bool, toDelete []string) {
	run, keep := shouldRun(node, ds)
	pods, exists := byNode[node.Name]
	switch {
	case run && !exists:
		return true, nil
	case keep:
		var running []*corev1.Pod
		for _, pod := range pods {
			if pod.DeletionTimestamp != nil {
				continue
			}
			switch pod.Status.Phase {
			case corev1.PodFailed:
				// Back off: this is where the controller fights a kubelet
				// that rejects the pod.
				key := fmt.Sprintf("%s/%d/%s", ds.UID, ds.Status.ObservedGeneration, node.Name)
				now := c.now()
				if c.failedBackoff.IsInBackOffSinceUpdate(key, now) {
					c.enqueueAfter(ds, c.failedBackoff.Get(key))
					continue
				}
				c.failedBackoff.Next(key, now)
				c.recorder.Eventf(ds, corev1.EventTypeWarning, "FailedDaemonPod", "Found failed daemon pod %s/%s on node %s, will try to kill it", pod.Namespace, pod.Name, node.Name)
				toDelete = append(toDelete, pod.Name)
			case corev1.PodSucceeded:
				c.recorder.Eventf(ds, corev1.EventTypeNormal, "SucceededDaemonPod", "Found succeeded daemon pod %s/%s on node %s, will try to delete it", pod.Namespace, pod.Name, node.Name)
				toDelete = append(toDelete, pod.Name)
			default:
				running = append(running, pod)
			}
		}
		sortOldestFirst(running)
		if !allowsSurge(ds) {
			// Keep the oldest.
			for _, pod := range running[min(1, len(running)):] {
				toDelete = append(toDelete, pod.Name)
			}
			return false, toDelete
		}
		if len(running) <= 1 {
			return len(running) == 0 && run, toDelete
		}
		// Surging: keep the oldest new pod and the oldest old pod; the old
		// one goes once it is not ready or the new one is available.
		var oldestNew, oldestOld *corev1.Pod
		for _, pod := range running {
			switch {
			case pod.Labels[hashLabel] == hash && oldestNew == nil:
				oldestNew = pod
			case pod.Labels[hashLabel] != hash && oldestOld == nil:
				oldestOld = pod
			default:
				toDelete = append(toDelete, pod.Name)
			}
		}
		if oldestNew != nil && oldestOld != nil &&
			(!podutils.IsPodReady(oldestOld) || podutils.IsPodAvailable(oldestNew, ds.Spec.MinReadySeconds, metav1.NewTime(c.now()))) {
			toDelete = append(toDelete, oldestOld.Name)
		}
		return false, toDelete
	case exists:
		for _, pod := range pods {
			if pod.DeletionTimestamp == nil {
				toDelete = append(toDelete, pod.Name)
			}
		}
	}
	return false, toDelete
}

// sortOldestFirst orders pods bound to a node first, then by creation time
// and name.
func sortOldestFirst(pods []*corev1.Pod) {
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if (a.Spec.NodeName != "") != (b.Spec.NodeName != "") {
			return a.Spec.NodeName != ""
		}
		if a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.Name < b.Name
		}
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	})
}

// manage creates the missing daemon pods and deletes the ones that should
// not run, including unscheduled pods for nodes that no longer exist.
func (c *Controller) manage(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash string) error {
	byNode, err := c.nodesToDaemonPods(ctx, ds, false)
	if err != nil {
		return fmt.Errorf("couldn't get node to daemon pod mapping for daemon set %q: %v", ds.Name, err)
	}
	var create, toDelete []string
	existing := map[string]bool{}
	for _, node := range nodes {
		existing[node.Name] = true
		need, del := c.podsShouldBeOnNode(node, byNode, ds, hash)
		if need {
			create = append(create, node.Name)
		}
		toDelete = append(toDelete, del...)
	}
	for node, pods := range byNode {
		if existing[node] {
			continue
		}
		for _, pod := range pods {
			if pod.Spec.NodeName == "" {
				toDelete = append(toDelete, pod.Name)
			}
		}
	}
	return c.syncNodes(ctx, ds, toDelete, create, hash)
}

// syncNodes deletes pods and creates one pod per node (each at most 250),
// creations in slow-start batches, with expectations set first.
func (c *Controller) syncNodes(ctx context.Context, ds *appsv1.DaemonSet, toDelete, nodes []string, hash string) error {
	key := keyOf(ds)
	createN, deleteN := min(len(nodes), burstReplicas), min(len(toDelete), burstReplicas)
	c.expectations.set(key, createN, deleteN)

	errs := make(chan error, createN+deleteN)
	template := c.podTemplate(ds, hash)
	for pos, batch := 0, min(createN, slowStartInitialBatch); pos < createN; pos, batch = pos+batch, min(2*batch, createN-(pos+batch)) {
		before := len(errs)
		var wg sync.WaitGroup
		for _, node := range nodes[pos : pos+batch] {
			wg.Go(func() {
				t := template.DeepCopy()
				t.Spec.Affinity = pinToNode(t.Spec.Affinity, node)
				err := c.createPod(ctx, ds, t)
				if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
					return // every further creation would fail too
				}
				if err != nil {
					c.expectations.creationObserved(key)
					errs <- err
				}
			})
		}
		wg.Wait()
		if skipped := createN - (pos + batch); len(errs) > before && skipped > 0 {
			// Stop after a failing batch; the skipped pods are not expected.
			c.expectations.lower(key, skipped, 0)
			break
		}
	}

	var wg sync.WaitGroup
	for _, name := range toDelete[:deleteN] {
		wg.Go(func() {
			if err := c.deletePod(ctx, ds, name); err != nil {
				c.expectations.deletionObserved(key)
				if !apierrors.IsNotFound(err) {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return utilerrors.NewAggregate(all)
}

// podTemplate is the template of new daemon pods: the daemon set's with
// the daemon tolerations, the template-generation label (when the daemon
// set has the annotation) and the revision hash label.
func (c *Controller) podTemplate(ds *appsv1.DaemonSet, hash string) *corev1.PodTemplateSpec {
	t := ds.Spec.Template.DeepCopy()
	addDaemonTolerations(&t.Spec)
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	if g := templateGeneration(ds); g != nil {
		t.Labels[templateGenerationLabel] = strconv.FormatInt(*g, 10)
	}
	if hash != "" {
		t.Labels[hashLabel] = hash
	}
	return t
}

// templateGeneration is the daemon set's deprecated template generation
// annotation, if set and valid.
func templateGeneration(ds *appsv1.DaemonSet) *int64 {
	v, ok := ds.Annotations[appsv1.DeprecatedTemplateGeneration]
	if !ok {
		return nil
	}
	g, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil
	}
	return &g
}

// createPod creates a pod from template, controlled by ds, and records
// upstream's event ("Created pod: x" or "Error creating: ...").
func (c *Controller) createPod(ctx context.Context, ds *appsv1.DaemonSet, template *corev1.PodTemplateSpec) error {
	if labels.Set(template.Labels).AsSelectorPreValidated().Empty() {
		return fmt.Errorf("unable to create pods, no labels")
	}
	prefix := ds.Name + "-"
	if len(validation.NameIsDNSSubdomain(prefix, true)) != 0 {
		prefix = ds.Name
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    prefix,
			Labels:          template.Labels,
			Annotations:     template.Annotations,
			Finalizers:      template.Finalizers,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, dsKind)},
		},
		Spec: template.Spec,
	}
	created, err := c.client.CoreV1().Pods(ds.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		if !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			c.recorder.Eventf(ds, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		}
		return err
	}
	c.recorder.Eventf(ds, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %v", created.Name)
	return nil
}

// deletePod deletes a pod and records upstream's event.
func (c *Controller) deletePod(ctx context.Context, ds *appsv1.DaemonSet, name string) error {
	err := c.client.CoreV1().Pods(ds.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return err
	case err != nil:
		c.recorder.Eventf(ds, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
		return fmt.Errorf("unable to delete pods: %w", err)
	}
	c.recorder.Eventf(ds, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %v", name)
	return nil
}
