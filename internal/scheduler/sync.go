package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-helpers/storage/ephemeral"
)

// How often a pod waiting for its claims looks again (upstream polls every
// second); claim events wake it sooner.
const bindPoll = time.Second

// Condition reasons, as upstream.
const (
	reasonUnschedulable  = corev1.PodReasonUnschedulable
	reasonSchedulerError = corev1.PodReasonSchedulerError
)

// sync moves one pod on: a first (or new) decision, or the next step of
// the placement it is in.
func (s *Scheduler) sync(ctx context.Context, key string) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	pod, err := s.pods.Pods(ns).Get(name)
	if err != nil {
		s.forget(key) // gone: forget it
		return
	}
	if pod.Spec.NodeName != "" || !responsible(pod) || pod.DeletionTimestamp != nil || terminated(pod) {
		s.forget(key)
		return
	}
	if len(pod.Spec.SchedulingGates) > 0 {
		return // upstream waits for the gates to be removed (an update)
	}
	s.mu.Lock()
	f := s.inflight[key]
	if f != nil && f.uid != pod.UID {
		delete(s.inflight, key) // a new pod of the same name
		f = nil
	}
	moves := s.moves
	s.mu.Unlock()
	if f == nil {
		d, err := Schedule(pod, s.snapshot())
		if err != nil {
			s.failed(ctx, pod, err, moves)
			return
		}
		f = s.assume(pod, d)
	}
	s.proceed(ctx, pod, f)
}

// assume records the decision: from now on other pods see this one on its
// node, and its chosen volumes as taken.
func (s *Scheduler) assume(pod *corev1.Pod, d Decision) *inflight {
	assumed := pod.DeepCopy()
	assumed.Spec.NodeName = d.Node
	f := &inflight{uid: pod.UID, pod: assumed, decision: d, deadline: time.Now().Add(s.opts.BindTimeout), annotated: sets.New[string]()}
	s.mu.Lock()
	s.inflight[podKey(pod)] = f
	s.mu.Unlock()
	return f
}

func (s *Scheduler) forgetInflight(key string, f *inflight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[key] == f {
		delete(s.inflight, key)
	}
}

// proceed is upstream's binding cycle, one step per call: annotate the
// WaitForFirstConsumer claims, wait for every claim to be Bound, bind.
func (s *Scheduler) proceed(ctx context.Context, pod *corev1.Pod, f *inflight) {
	key := podKey(pod)
	s.mu.Lock()
	busy := f.bound || f.binding
	s.mu.Unlock()
	if busy {
		return // being bound, or bound and the informer has yet to show it
	}
	node := f.decision.Node
	for _, name := range f.decision.UnboundClaims() {
		if f.annotated.Has(name) {
			continue
		}
		if err := s.selectNode(ctx, pod.Namespace, name, node); err != nil {
			s.forgetInflight(key, f)
			s.failed(ctx, pod, fmt.Errorf("running PreBind plugin %q: %w", "VolumeBinding", err), -1)
			return
		}
		s.mu.Lock()
		f.annotated.Insert(name)
		s.mu.Unlock()
	}
	if !s.claimsBound(pod) {
		remaining := time.Until(f.deadline)
		if remaining <= 0 {
			// Upstream's PreBind times out the same way; the annotations stay.
			s.forgetInflight(key, f)
			s.failed(ctx, pod, fmt.Errorf("running PreBind plugin %q: binding volumes: %w", "VolumeBinding", context.DeadlineExceeded), -1)
			return
		}
		s.queue.AddAfter(key, min(bindPoll, remaining))
		return
	}
	// The binding is written in the background, as upstream's binding
	// cycle: the next pod is placed meanwhile (it sees this one assumed).
	s.mu.Lock()
	if f.binding {
		s.mu.Unlock()
		return
	}
	f.binding = true
	s.mu.Unlock()
	// With every slot taken, the worker waits: placing pods faster than
	// they are bound only piles up assumed pods, which every later
	// decision has to count.
	s.bindSlots <- struct{}{}
	s.binds.Go(func() {
		defer func() { <-s.bindSlots }()
		s.bind(ctx, pod, f)
	})
}

// bind writes the pod's binding to its chosen node; on failure the pod is
// forgotten and tried again after its back-off.
func (s *Scheduler) bind(ctx context.Context, pod *corev1.Pod, f *inflight) {
	key, node := podKey(pod), f.decision.Node
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	if err := s.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil {
		s.forgetInflight(key, f)
		if ctx.Err() != nil {
			return
		}
		s.failed(ctx, pod, fmt.Errorf("running Bind plugin %q: %w", "DefaultBinder", err), -1)
		return
	}
	s.mu.Lock()
	f.bound = true
	delete(s.backoff, key)
	s.mu.Unlock()
	s.log.Debug("pod bound", "pod", key, "node", node)
	s.recorder.Eventf(pod, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %v/%v to %v", pod.Namespace, pod.Name, node)
}

// selectNode sets the selected-node annotation on a claim (a merge patch, so
// no other field is touched). A claim already selected for another node is
// an error: someone else placed its first consumer.
func (s *Scheduler) selectNode(ctx context.Context, ns, name, node string) error {
	claim, err := s.claims.PersistentVolumeClaims(ns).Get(name)
	if err != nil {
		return err
	}
	if claimBound(claim) {
		return nil
	}
	switch sel, ok := claim.Annotations[AnnSelectedNode]; {
	case ok && sel == node:
		return nil
	case ok:
		return fmt.Errorf("persistentvolumeclaim %q is selected for node %q", name, sel)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnSelectedNode: node}}})
	if err != nil {
		return err
	}
	_, err = s.client.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// podClaimNames are the claims a pod uses: named ones and its ephemeral
// volumes' "<pod>-<volume>".
func podClaimNames(pod *corev1.Pod) sets.Set[string] {
	out := sets.New[string]()
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.PersistentVolumeClaim != nil:
			out.Insert(v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			out.Insert(ephemeral.VolumeClaimName(pod, v))
		}
	}
	return out
}

func (s *Scheduler) claimsBound(pod *corev1.Pod) bool {
	for name := range podClaimNames(pod) {
		claim, err := s.claims.PersistentVolumeClaims(pod.Namespace).Get(name)
		if err != nil || !claimBound(claim) {
			return false
		}
	}
	return true
}

// failed reports a failed attempt as upstream does — a FailedScheduling
// event and the PodScheduled condition False — and schedules the retry:
// after the back-off for errors, and for a pod no node fits, when something
// changes (unless something already changed since the attempt began:
// moves is the move count then, -1 for no such wait).
func (s *Scheduler) failed(ctx context.Context, pod *corev1.Pod, err error, moves int) {
	var fit *FitError
	unfit := errors.As(err, &fit) || errors.Is(err, ErrNoNodesAvailable)
	reason := reasonSchedulerError
	if unfit {
		reason = reasonUnschedulable
	}
	msg := err.Error()
	s.log.Debug("pod not scheduled", "pod", podKey(pod), "reason", reason, "err", msg)
	s.recorder.Event(pod, corev1.EventTypeWarning, "FailedScheduling", truncate(msg))
	if err := s.setUnscheduled(ctx, pod, reason, msg); err != nil && ctx.Err() == nil {
		s.log.Debug("updating PodScheduled condition failed", "pod", podKey(pod), "err", err)
	}

	key := podKey(pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backoff[key]
	if b == nil {
		b = &backoff{}
		s.backoff[key] = b
	}
	b.attempts++
	wait := backoffDuration(b.attempts, s.opts.InitialBackoff, s.opts.MaxBackoff)
	b.until = time.Now().Add(wait)
	if unfit && moves >= 0 && moves == s.moves {
		s.parked[key] = time.Now()
		return
	}
	s.queue.AddAfter(key, wait)
}

// backoffDuration is upstream's pod back-off after the given number of
// failed attempts: initial, doubled each time, at most max.
func backoffDuration(attempts int, initial, max time.Duration) time.Duration {
	wait := initial
	for i := 1; i < attempts && wait < max; i++ {
		wait *= 2
	}
	return min(wait, max)
}

// truncate caps an event message at upstream's 1024 bytes.
func truncate(msg string) string {
	const limit = 1024
	if len(msg) <= limit {
		return msg
	}
	return msg[:limit-4] + " ..."
}

// setUnscheduled writes PodScheduled=False with the reason and message,
// unless the pod already says so.
func (s *Scheduler) setUnscheduled(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == reason && c.Message == msg {
			return nil
		}
	}
	updated := pod.DeepCopy()
	cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: metav1.Now()}
	replaced := false
	for i, c := range updated.Status.Conditions {
		if c.Type != corev1.PodScheduled {
			continue
		}
		if c.Status == corev1.ConditionFalse {
			cond.LastTransitionTime = c.LastTransitionTime
		}
		updated.Status.Conditions[i], replaced = cond, true
	}
	if !replaced {
		updated.Status.Conditions = append(updated.Status.Conditions, cond)
	}
	_, err := s.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer pod (or none): the next attempt writes it
	}
	return err
}

// requestCacheRotation is how many decisions the request cache keeps
// entries that none of them used.
const requestCacheRotation = 100

// snapshot is the cluster as the informers show it, with what this
// scheduler assumed and the API does not show yet: pods on their chosen
// nodes, claims' selected-node annotations, volumes chosen for claims.
func (s *Scheduler) snapshot() *Snapshot {
	snap := &Snapshot{Index: s.index, Requests: s.requests, AssumedVolumes: map[string]string{}}
	// Pods gone or replaced since fall out of the cache in two rotations.
	if s.decisions++; s.decisions%requestCacheRotation == 0 {
		s.requests.Rotate()
	}
	snap.Nodes, _ = s.nodes.List(everything)
	snap.Volumes, _ = s.volumes.List(everything)
	snap.Classes, _ = s.classes.List(everything)
	snap.Namespaces, _ = s.namespaces.List(everything)
	snap.CSINodes, _ = s.csiNodes.List(everything)
	snap.CSIDrivers, _ = s.csiDrivers.List(everything)
	claims, _ := s.claims.List(everything)
	annotate := map[string]string{} // claim key -> node
	s.mu.Lock()
	keys := make([]string, 0, len(s.inflight))
	for key := range s.inflight {
		keys = append(keys, key)
	}
	// The pods the API shows placed; an assumed pod counts until it is one
	// of them.
	var shown []bool
	snap.Placed, shown = s.placed.snapshot(keys)
	for i, key := range keys {
		f := s.inflight[key]
		if !shown[i] {
			snap.Pods = append(snap.Pods, f.pod)
		}
		if f.bound {
			continue
		}
		for _, b := range f.decision.Bindings {
			snap.AssumedVolumes[b.Volume] = f.pod.Namespace + "/" + b.Claim
		}
		for name := range f.annotated {
			annotate[f.pod.Namespace+"/"+name] = f.decision.Node
		}
	}
	s.mu.Unlock()
	for _, c := range claims {
		if node, ok := annotate[c.Namespace+"/"+c.Name]; ok && c.Annotations[AnnSelectedNode] != node && !claimBound(c) {
			c = c.DeepCopy()
			if c.Annotations == nil {
				c.Annotations = map[string]string{}
			}
			c.Annotations[AnnSelectedNode] = node
		}
		snap.Claims = append(snap.Claims, c)
	}
	return snap
}
