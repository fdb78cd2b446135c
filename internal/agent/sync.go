package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/volume"
)

// Upstream's container restart back-off: 10 s doubling to 5 min, reset
// after a container ran for 10 minutes.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// nextBackoff is the delay after d in upstream's series: 10 s, doubling,
// at most 5 min (container restarts and image pulls alike).
func nextBackoff(d time.Duration) time.Duration {
	if d < backoffInitial {
		return backoffInitial
	}
	return min(2*d, backoffMax)
}

// syncPod brings the node in line with one pod and reports its status. It
// returns true when the worker is done (the pod is gone and cleaned up).
func (a *Agent) syncPod(ctx context.Context, w *podWorker) bool {
	pod, gone := w.latest()
	if pod == nil {
		return true
	}
	if len(w.containers) == 0 {
		a.adopt(w, pod)
	}
	if gone || pod.DeletionTimestamp != nil {
		return a.terminatePod(ctx, w, pod, gone)
	}
	if w.evicted != "" || (w.lastStatus != nil && (w.lastStatus.Phase == corev1.PodSucceeded || w.lastStatus.Phase == corev1.PodFailed)) {
		a.stopProbes(w)
		a.reportStatus(ctx, w, pod)
		return false // terminal: containers stay as they ended until deletion
	}
	if w.startTime == nil {
		w.startTime = ptr.To(metav1.NewTime(time.Now().Truncate(time.Second)))
	}
	if err := a.ensureSandbox(ctx, w, pod); err != nil {
		a.eventOnce(w, pod, "sandbox:"+err.Error(), corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
		a.reportStatus(ctx, w, pod)
		return false
	}
	mounts, err := a.volumes.SetUp(ctx, pod)
	if err != nil {
		w.volumeErr = err.Error()
		var verrs []error
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			verrs = joined.Unwrap()
		} else {
			verrs = []error{err}
		}
		for _, e := range verrs {
			a.eventOnce(w, pod, "mount:"+e.Error(), corev1.EventTypeWarning, volume.EventReason(e), "%v", e)
		}
		a.reportStatus(ctx, w, pod)
		return false
	}
	w.volumeErr, w.mounted = "", true
	_ = a.volumes.Update(ctx, pod) // configMap/secret changes reach running pods

	if !a.syncInitContainers(ctx, w, pod, mounts) {
		a.reportStatus(ctx, w, pod)
		return false
	}
	for i := range pod.Spec.Containers {
		a.syncContainer(ctx, w, pod, &pod.Spec.Containers[i], mounts)
	}
	if msg := a.emptyDirOverLimit(w, pod); msg != "" {
		a.evict(ctx, w, pod, msg)
	}
	a.reportStatus(ctx, w, pod)
	return false
}

// usageInterval is how often emptyDir usage is measured, as the kubelet's
// eviction manager does (every 10 s).
const usageInterval = 10 * time.Second

// emptyDirOverLimit measures the pod's disk-backed emptyDirs that have a
// sizeLimit and says which one is over it, in the kubelet's words.
func (a *Agent) emptyDirOverLimit(w *podWorker, pod *corev1.Pod) string {
	if time.Since(w.lastUsageAt) < usageInterval {
		return ""
	}
	w.lastUsageAt = time.Now()
	for _, v := range pod.Spec.Volumes {
		ed := v.EmptyDir
		if ed == nil || ed.SizeLimit == nil || ed.Medium == corev1.StorageMediumMemory {
			continue
		}
		used, err := a.volumes.Usage(pod.UID, v.Name)
		if err == nil && used > ed.SizeLimit.Value() {
			return fmt.Sprintf("Usage of EmptyDir volume %q exceeds the limit %q. ", v.Name, ed.SizeLimit.String())
		}
	}
	return ""
}

// evict stops the pod for good: its containers are killed, it is Failed
// with reason Evicted, and it stays so until deleted.
func (a *Agent) evict(ctx context.Context, w *podWorker, pod *corev1.Pod, msg string) {
	w.evicted = msg
	a.recorder.Eventf(pod, corev1.EventTypeWarning, "Evicted", "%s", msg)
	a.stopAll(ctx, w, pod, gracePeriod(pod, nil))
	for _, cs := range w.containers {
		if st, err := a.runtime.State(cs.id); cs.id != "" && err == nil && st.Status == container.StatusExited {
			cs.lastTerminated, cs.waitingReason = terminatedState(cs.id, st, ""), ""
		}
	}
}

// stopAll stops the pod's probes and every container still running, each
// within grace.
func (a *Agent) stopAll(ctx context.Context, w *podWorker, pod *corev1.Pod, grace time.Duration) {
	a.stopProbes(w)
	for _, cs := range w.containers {
		if cs.id == "" {
			continue
		}
		if st, err := a.runtime.State(cs.id); err == nil && st.Status != container.StatusExited {
			a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", cs.name)
			a.stopContainer(ctx, cs.id, grace)
		}
	}
}

func (a *Agent) ensureSandbox(ctx context.Context, w *podWorker, pod *corev1.Pod) error {
	if w.sandbox {
		return nil
	}
	net, err := a.podNetwork(pod)
	if err != nil {
		return err
	}
	spec := container.SandboxSpec{ID: string(pod.UID), Hostname: podHostname(pod)}
	ip := a.ip
	if net != nil {
		spec.NetNS, ip = net.NetNS, net.IP.String()
	}
	if err := a.writePodFiles(pod, ip); err != nil {
		return err
	}
	if err := a.runtime.CreateSandbox(ctx, spec); err != nil {
		return err
	}
	w.sandbox = true
	return nil
}

// syncInitContainers runs init containers one after another; it returns
// true once all have succeeded.
func (a *Agent) syncInitContainers(ctx context.Context, w *podWorker, pod *corev1.Pod, mounts map[string]volume.Mounted) bool {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := w.state(pod, c.Name)
		if cs.id != "" {
			st, err := a.runtime.State(cs.id)
			if err == nil && st.Status == container.StatusExited {
				cs.lastTerminated = terminatedState(cs.id, st, a.terminationMessage(pod, c, cs))
				if st.ExitCode == 0 {
					cs.waitingReason = ""
					continue
				}
				if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
					return false // the pod fails (see status)
				}
				if !a.restartDue(w, pod, c, cs, st) {
					return false
				}
			} else if err == nil {
				return false // still running
			}
		}
		a.startContainer(ctx, w, pod, c, cs, mounts)
		return false
	}
	return true
}

// syncContainer keeps one regular container as its restart policy says.
func (a *Agent) syncContainer(ctx context.Context, w *podWorker, pod *corev1.Pod, c *corev1.Container, mounts map[string]volume.Mounted) {
	cs := w.state(pod, c.Name)
	if cs.id == "" {
		a.startContainer(ctx, w, pod, c, cs, mounts) // image pull back-off inside
		return
	}
	st, err := a.runtime.State(cs.id)
	if err != nil {
		if errors.Is(err, container.ErrNotFound) {
			cs.id = ""
			a.startContainer(ctx, w, pod, c, cs, mounts)
		}
		return
	}
	if st.Status == container.StatusCreated {
		if err := a.runtime.Start(ctx, cs.id); err != nil {
			cs.waitingReason, cs.waitingMessage = "RunContainerError", err.Error()
		}
		return
	}
	if st.Status != container.StatusExited {
		if cs.liveFails.Swap(false) {
			a.recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Container %s failed liveness probe, will be restarted", c.Name)
			a.stopContainer(ctx, cs.id, gracePeriod(pod, nil))
		}
		return
	}
	a.stopProbesOf(cs)
	cs.ready.Store(false)
	if cs.lastTerminated == nil || cs.lastTerminated.ContainerID != "runc://"+cs.id {
		cs.lastTerminated = terminatedState(cs.id, st, a.terminationMessage(pod, c, cs))
	}
	restart := pod.Spec.RestartPolicy == corev1.RestartPolicyAlways ||
		(pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && st.ExitCode != 0)
	if !restart {
		cs.waitingReason = ""
		return
	}
	if a.restartDue(w, pod, c, cs, st) {
		a.startContainer(ctx, w, pod, c, cs, mounts)
	}
}

// restartDue applies the restart back-off: the first restart is at once,
// later ones wait 10 s, 20 s, ... up to 5 min after the exit
// (CrashLoopBackOff); a container that ran for 10 minutes starts afresh.
func (a *Agent) restartDue(w *podWorker, pod *corev1.Pod, c *corev1.Container, cs *containerState, st container.State) bool {
	if !st.StartedAt.IsZero() && st.FinishedAt.Sub(st.StartedAt) > backoffReset {
		cs.backoff = 0
	}
	if !time.Now().Before(st.FinishedAt.Add(cs.backoff)) {
		cs.backoff = nextBackoff(cs.backoff)
		return true
	}
	if cs.waitingReason != "CrashLoopBackOff" {
		a.recorder.Eventf(pod, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", c.Name, pod.Name, pod.Namespace, pod.UID)
	}
	cs.waitingReason = "CrashLoopBackOff"
	cs.waitingMessage = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", cs.backoff, c.Name, pod.Name, pod.Namespace, pod.UID)
	return false
}

// terminatePod stops a deleted pod's containers within its grace period,
// tears its volumes and sandbox down, and completes the deletion.
func (a *Agent) terminatePod(ctx context.Context, w *podWorker, pod *corev1.Pod, gone bool) bool {
	a.stopAll(ctx, w, pod, gracePeriod(pod, pod.DeletionGracePeriodSeconds))
	ids, _ := a.runtime.List()
	for _, id := range ids {
		if uid, _, _, ok := parseContainerID(id); ok && uid == pod.UID {
			if err := a.runtime.Remove(ctx, id); err != nil {
				a.log.Warn("removing container", "id", id, "err", err)
				return false
			}
		}
	}
	if err := a.runtime.RemoveSandbox(ctx, string(pod.UID)); err != nil {
		a.log.Warn("removing sandbox", "pod", pod.Name, "err", err)
		return false
	}
	if err := a.detachNetwork(string(pod.UID)); err != nil {
		a.log.Warn("removing the pod's network", "pod", pod.Name, "err", err)
		return false
	}
	if err := a.volumes.TearDown(ctx, pod.UID); err != nil {
		a.log.Warn("tearing down volumes", "pod", pod.Name, "err", err)
		return false
	}
	a.removePodFiles(pod)
	if gone {
		return true
	}
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		a.log.Warn("completing pod deletion", "pod", pod.Name, "err", err)
		return false
	}
	return true
}

// stopContainer sends SIGTERM, then SIGKILL once grace has passed.
func (a *Agent) stopContainer(ctx context.Context, id string, grace time.Duration) {
	_ = a.runtime.Kill(ctx, id, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if st, err := a.runtime.State(id); err != nil || st.Status == container.StatusExited {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = a.runtime.Kill(ctx, id, syscall.SIGKILL)
	for i := 0; i < 40; i++ {
		if st, err := a.runtime.State(id); err != nil || st.Status == container.StatusExited {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func gracePeriod(pod *corev1.Pod, override *int64) time.Duration {
	if override != nil {
		return time.Duration(*override) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// terminatedState describes an exited container as the API shows it.
func terminatedState(id string, st container.State, message string) *corev1.ContainerStateTerminated {
	reason := "Completed"
	switch {
	case st.Reason == container.ReasonOOMKilled:
		reason = "OOMKilled"
	case st.ExitCode != 0:
		reason = "Error"
	}
	t := &corev1.ContainerStateTerminated{
		ExitCode: int32(st.ExitCode), Reason: reason, Message: message, ContainerID: "runc://" + id,
		StartedAt: metav1.NewTime(st.StartedAt.Truncate(time.Second)), FinishedAt: metav1.NewTime(st.FinishedAt.Truncate(time.Second)),
	}
	if st.ExitCode > 128 && st.ExitCode < 160 {
		t.Signal = int32(st.ExitCode - 128)
	}
	return t
}

func podHostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}
