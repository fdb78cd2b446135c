package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/container"
)

// reportStatus computes the pod's status from what runs and writes it when
// it changed.
func (a *Agent) reportStatus(ctx context.Context, w *podWorker, pod *corev1.Pod) {
	status := a.podStatus(w, pod)
	if w.lastStatus != nil && statusEqual(w.lastStatus, &status) {
		return
	}
	cur := pod.DeepCopy()
	for attempt := 0; attempt < 3; attempt++ {
		status.Conditions = mergeConditions(cur.Status.Conditions, status.Conditions)
		cur.Status = *status.DeepCopy()
		_, err := a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{FieldManager: a.manager})
		if err == nil {
			w.mu.Lock()
			w.lastStatus = &status
			w.mu.Unlock()
			return
		}
		fresh, gerr := a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if gerr != nil || fresh.UID != pod.UID {
			return
		}
		cur = fresh
	}
}

// statusEqual compares what matters of two statuses (not heartbeat times).
func statusEqual(a, b *corev1.PodStatus) bool {
	x, y := a.DeepCopy(), b.DeepCopy()
	for _, s := range []*corev1.PodStatus{x, y} {
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
			s.Conditions[i].LastProbeTime = metav1.Time{}
		}
	}
	return apiequality.Semantic.DeepEqual(x, y)
}

// mergeConditions keeps conditions others own (PodScheduled, custom
// readiness gates) and the transition time of those whose status held.
func mergeConditions(cur, ours []corev1.PodCondition) []corev1.PodCondition {
	mine := map[corev1.PodConditionType]bool{}
	for _, c := range ours {
		mine[c.Type] = true
	}
	var out []corev1.PodCondition
	for _, c := range cur {
		if !mine[c.Type] {
			out = append(out, c)
		}
	}
	for _, c := range ours {
		for _, old := range cur {
			if old.Type == c.Type && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	order := map[corev1.PodConditionType]int{"PodReadyToStartContainers": 0, corev1.PodInitialized: 1, corev1.PodReady: 2, corev1.ContainersReady: 3, corev1.PodScheduled: 4}
	sort.SliceStable(out, func(i, j int) bool { return rank(order, out[i].Type) < rank(order, out[j].Type) })
	return out
}

func rank(order map[corev1.PodConditionType]int, t corev1.PodConditionType) int {
	if r, ok := order[t]; ok {
		return r
	}
	return len(order)
}

// podStatus is the status upstream's kubelet would report.
func (a *Agent) podStatus(w *podWorker, pod *corev1.Pod) corev1.PodStatus {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	s := corev1.PodStatus{
		HostIP: a.ip, HostIPs: []corev1.HostIP{{IP: a.ip}},
		StartTime: w.startTime, QOSClass: pod.Status.QOSClass,
	}
	if ip := a.podIP(pod); ip != "" {
		s.PodIP, s.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	initDone := true
	var unready, uninitialized []string
	initFailed := false
	for _, c := range pod.Spec.InitContainers {
		cs := a.containerStatus(w, pod, c.Name, c.Image, true)
		s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			initDone = false
			uninitialized = append(uninitialized, c.Name)
			if cs.State.Terminated != nil && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				initFailed = true
			}
		}
	}
	running, waiting, stopped, succeeded := 0, 0, 0, 0
	for _, c := range pod.Spec.Containers {
		cs := a.containerStatus(w, pod, c.Name, c.Image, false)
		if !initDone && cs.State.Waiting != nil {
			cs.State.Waiting.Reason = "PodInitializing"
			cs.State.Waiting.Message = ""
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.LastTerminationState.Terminated != nil:
			stopped++
		default:
			waiting++
		}
		if !cs.Ready {
			unready = append(unready, c.Name)
		}
	}
	switch {
	case initFailed:
		s.Phase = corev1.PodFailed
	case !initDone:
		s.Phase = corev1.PodPending
	case waiting > 0:
		s.Phase = corev1.PodPending
	case running > 0:
		s.Phase = corev1.PodRunning
	case stopped > 0 && pod.Spec.RestartPolicy == corev1.RestartPolicyAlways:
		s.Phase = corev1.PodRunning
	case stopped > 0 && stopped == succeeded && allTerminated(s.ContainerStatuses):
		s.Phase = corev1.PodSucceeded
	case stopped > 0 && pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure:
		s.Phase = corev1.PodRunning
	case stopped > 0 && allTerminated(s.ContainerStatuses):
		s.Phase = corev1.PodFailed
	default:
		s.Phase = corev1.PodPending
	}
	if w.evicted != "" {
		s.Phase, s.Reason, s.Message = corev1.PodFailed, "Evicted", w.evicted
		for i := range s.ContainerStatuses {
			s.ContainerStatuses[i].Ready = false
		}
		unready = nil
		for _, c := range pod.Spec.Containers {
			unready = append(unready, c.Name)
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
		if !ok {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, reason, msg
		}
		return c
	}
	terminal := s.Phase == corev1.PodSucceeded || s.Phase == corev1.PodFailed
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	if terminal {
		readyReason, readyMsg = "PodCompleted", ""
	}
	initReason, initMsg := "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(uninitialized, " "))
	s.Conditions = []corev1.PodCondition{
		cond("PodReadyToStartContainers", w.sandbox && !terminal, "", ""),
		cond(corev1.PodInitialized, initDone || (terminal && !initFailed), initReason, initMsg),
		cond(corev1.PodReady, len(unready) == 0 && !terminal, readyReason, readyMsg),
		cond(corev1.ContainersReady, len(unready) == 0 && !terminal, readyReason, readyMsg),
	}
	return s
}

func allTerminated(statuses []corev1.ContainerStatus) bool {
	for _, cs := range statuses {
		if cs.State.Terminated == nil {
			return false
		}
	}
	return true
}

// containerStatus describes one container from the agent's memory and the
// runtime's state.
func (a *Agent) containerStatus(w *podWorker, pod *corev1.Pod, name, img string, init bool) corev1.ContainerStatus {
	cs := w.containers[name]
	out := corev1.ContainerStatus{Name: name, Image: img, Started: ptr.To(false)}
	if cs == nil {
		reason := "ContainerCreating"
		if init {
			reason = "PodInitializing"
		}
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
		return out
	}
	out.RestartCount = int32(cs.attempt)
	out.ImageID = cs.imageID
	if cs.id != "" {
		out.ContainerID = "runc://" + cs.id
	}
	if cs.previous != nil {
		out.LastTerminationState.Terminated = cs.previous
	}
	waiting := func() corev1.ContainerStatus {
		reason := cs.waitingReason
		if reason == "" {
			reason = "ContainerCreating"
		}
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: cs.waitingMessage}
		return out
	}
	if cs.id == "" {
		return waiting()
	}
	st, err := a.runtime.State(cs.id)
	if err != nil {
		return waiting()
	}
	switch st.Status {
	case container.StatusRunning:
		out.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt.Truncate(time.Second))}
		out.Started = ptr.To(cs.started.Load() || a.noStartupProbe(pod, name))
		out.Ready = cs.ready.Load()
	case container.StatusExited:
		term := cs.lastTerminated
		if term == nil {
			term = terminatedState(cs.id, st, "")
		}
		if cs.waitingReason != "" {
			// About to restart (or unable to): waiting, the exit as last state.
			out.LastTerminationState.Terminated = term
			return waiting()
		}
		out.State.Terminated = term
	default:
		return waiting()
	}
	return out
}
