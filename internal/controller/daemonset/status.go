package daemonset

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubectl/pkg/util/podutils"
)

// statusUpdateRetries is how many times a failed status write is retried
// after re-reading the daemon set.
const statusUpdateRetries = 1

// updateStatus computes and writes the status, as upstream:
//   - desiredNumberScheduled: nodes that should run a pod;
//   - currentNumberScheduled: of those, nodes with a pod;
//   - numberMisscheduled: other nodes with a pod;
//   - numberReady, numberAvailable: nodes whose oldest pod is Ready, and
//     Ready for minReadySeconds;
//   - updatedNumberScheduled: nodes whose oldest pod has the current hash;
//   - numberUnavailable: desired minus available.
//
// observedGeneration is raised only when the sync acted on this generation.
func (c *Controller) updateStatus(ctx context.Context, ds *appsv1.DaemonSet, nodes []*corev1.Node, hash string, observed bool) error {
	byNode, err := c.nodesToDaemonPods(ctx, ds, false)
	if err != nil {
		return fmt.Errorf("couldn't get node to daemon pod mapping for daemon set %q: %v", ds.Name, err)
	}
	var s appsv1.DaemonSetStatus
	now := metav1.NewTime(c.now())
	generation := templateGeneration(ds)
	for _, node := range nodes {
		run, _ := shouldRun(node, ds)
		pods := byNode[node.Name]
		if !run {
			if len(pods) > 0 {
				s.NumberMisscheduled++
			}
			continue
		}
		s.DesiredNumberScheduled++
		if len(pods) == 0 {
			continue
		}
		s.CurrentNumberScheduled++
		sortOldestFirst(pods)
		pod := pods[0]
		if podutils.IsPodReady(pod) {
			s.NumberReady++
			if podutils.IsPodAvailable(pod, ds.Spec.MinReadySeconds, now) {
				s.NumberAvailable++
			}
		}
		if hasHash(pod, hash, generation) {
			s.UpdatedNumberScheduled++
		}
	}
	s.NumberUnavailable = s.DesiredNumberScheduled - s.NumberAvailable

	if err := c.storeStatus(ctx, ds, s, observed); err != nil {
		return fmt.Errorf("error storing status for daemon set %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	// A last line of defence against clock skew, as upstream.
	if ds.Spec.MinReadySeconds > 0 && s.NumberReady != s.NumberAvailable {
		c.enqueueAfter(ds, time.Duration(ds.Spec.MinReadySeconds)*time.Second)
	}
	return nil
}

// storeStatus writes the counts (and observedGeneration when observed) if
// they changed, re-reading the daemon set once on failure.
func (c *Controller) storeStatus(ctx context.Context, ds *appsv1.DaemonSet, s appsv1.DaemonSetStatus, observed bool) error {
	old := ds.Status
	if old.DesiredNumberScheduled == s.DesiredNumberScheduled && old.CurrentNumberScheduled == s.CurrentNumberScheduled &&
		old.NumberMisscheduled == s.NumberMisscheduled && old.NumberReady == s.NumberReady &&
		old.UpdatedNumberScheduled == s.UpdatedNumberScheduled && old.NumberAvailable == s.NumberAvailable &&
		old.NumberUnavailable == s.NumberUnavailable && old.ObservedGeneration >= ds.Generation {
		return nil
	}
	api := c.client.AppsV1().DaemonSets(ds.Namespace)
	toUpdate := ds.DeepCopy()
	for i := 0; ; i++ {
		if observed {
			toUpdate.Status.ObservedGeneration = ds.Generation
		}
		toUpdate.Status.DesiredNumberScheduled = s.DesiredNumberScheduled
		toUpdate.Status.CurrentNumberScheduled = s.CurrentNumberScheduled
		toUpdate.Status.NumberMisscheduled = s.NumberMisscheduled
		toUpdate.Status.NumberReady = s.NumberReady
		toUpdate.Status.UpdatedNumberScheduled = s.UpdatedNumberScheduled
		toUpdate.Status.NumberAvailable = s.NumberAvailable
		toUpdate.Status.NumberUnavailable = s.NumberUnavailable
		_, err := api.UpdateStatus(ctx, toUpdate, metav1.UpdateOptions{})
		if err == nil || i >= statusUpdateRetries {
			return err
		}
		if toUpdate, err = api.Get(ctx, ds.Name, metav1.GetOptions{}); err != nil {
			return err
		}
	}
}
