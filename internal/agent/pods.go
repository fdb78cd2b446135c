package agent

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/container"
)

// podWorker owns one pod on this node: everything the agent knows and does
// for it happens on its goroutine, woken by kick.
type podWorker struct {
	uid  types.UID
	kick chan struct{}

	mu   sync.Mutex
	pod  *corev1.Pod // the latest seen; nil once the object is gone
	gone bool

	// The rest is touched by the worker goroutine only (and, under mu, by
	// status readers).
	containers map[string]*containerState
	startTime  *metav1.Time
	sandbox    bool
	mounted    bool
	volumeErr  string
	lastStatus *corev1.PodStatus
	// evicted is why the agent evicted the pod ("" if it did not); the pod
	// is then Failed with reason Evicted, as upstream.
	evicted     string
	lastUsageAt time.Time
	// watchUntil: a container started a moment ago; sync often until then.
	watchUntil time.Time
	events     map[string]bool // once-only events already sent
}

// containerState is the agent's memory of one container of a pod.
type containerState struct {
	name    string
	init    bool
	id      string // current runtime container ("" before the first)
	attempt int    // restarts so far; the ID's suffix

	// waiting is why the container is not running, when it is not.
	waitingReason, waitingMessage string
	// lastTerminated is how the current container ended (once it has);
	// previous is how the one before it ended (the API's lastState).
	lastTerminated, previous *corev1.ContainerStateTerminated
	backoff                  time.Duration // restart back-off (CrashLoopBackOff)
	// startBackoff delays attempts after a failed pull or creation.
	startBackoff      time.Duration
	startBackoffUntil time.Time
	imageID           string

	probes *probeSet
	// Set by probe goroutines, read by the worker.
	ready, started atomic.Bool
	liveFails      atomic.Bool // liveness asked for a restart
}

func (w *podWorker) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *podWorker) latest() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.gone
}

// podChanged routes informer events to the pod's worker, starting one for
// a pod seen the first time.
func (a *Agent) podChanged(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != a.opts.NodeName {
		return
	}
	a.podsMu.Lock()
	w, ok := a.workers[pod.UID]
	if !ok {
		w = &podWorker{uid: pod.UID, kick: make(chan struct{}, 1), containers: map[string]*containerState{}, events: map[string]bool{}}
		a.workers[pod.UID] = w
		a.wg.Go(func() { a.runWorker(ctx, w) })
	}
	a.podsMu.Unlock()
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	w.wake()
}

func (a *Agent) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.podsMu.Lock()
	w := a.workers[pod.UID]
	a.podsMu.Unlock()
	if w != nil {
		w.mu.Lock()
		w.gone = true
		w.mu.Unlock()
		w.wake()
	}
}

// runWorker syncs its pod when kicked, and every second while it lives
// (container exits and probe results are polled), until the pod is gone
// and cleaned up.
func (a *Agent) runWorker(ctx context.Context, w *podWorker) {
	defer func() {
		a.podsMu.Lock()
		delete(a.workers, w.uid)
		a.podsMu.Unlock()
	}()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		if done := a.syncPod(ctx, w); done {
			return
		}
		// A pod on its way up is looked at again soon (a container just
		// started shows as running a moment later); a settled one each second.
		next := time.Second
		if time.Now().Before(w.watchUntil) {
			next = 50 * time.Millisecond
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			a.stopProbes(w)
			return
		case <-w.kick:
		case <-t.C:
		}
	}
}

// containerID is the runtime ID of a pod's container at one attempt; the
// agent finds its containers again by it after a restart.
func containerID(uid types.UID, name string, attempt int) string {
	return fmt.Sprintf("%s_%s_%d", uid, name, attempt)
}

func parseContainerID(id string) (uid types.UID, name string, attempt int, ok bool) {
	parts := strings.Split(id, "_")
	if len(parts) != 3 {
		return "", "", 0, false
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil {
		return "", "", 0, false
	}
	return types.UID(parts[0]), parts[1], n, true
}

// adopt fills a new worker's memory from the runtime's containers of the
// pod (after an agent restart): the newest attempt of each is current.
func (a *Agent) adopt(w *podWorker, pod *corev1.Pod) {
	ids, err := a.runtime.List()
	if err != nil {
		return
	}
	sort.Strings(ids)
	for _, id := range ids {
		uid, name, attempt, ok := parseContainerID(id)
		if !ok || uid != pod.UID {
			continue
		}
		cs := w.state(pod, name)
		if cs == nil || attempt < cs.attempt || (cs.id != "" && attempt == cs.attempt) {
			continue
		}
		if cs.id != "" {
			if st, err := a.runtime.State(cs.id); err == nil && st.Status == container.StatusExited {
				cs.previous = terminatedState(cs.id, st, "")
			}
		}
		cs.id, cs.attempt, cs.waitingReason = id, attempt, ""
		if st, err := a.runtime.State(id); err == nil && st.Status == container.StatusExited {
			cs.lastTerminated = terminatedState(id, st, "")
		}
		if c := regularContainer(pod, name); c != nil {
			if st, err := a.runtime.State(id); err == nil && st.Status == container.StatusRunning {
				a.startProbes(w, pod, c, cs) // readiness is found again
			}
		}
		if pod.Status.StartTime != nil {
			w.startTime = pod.Status.StartTime
		}
	}
	for _, sb := range mustList(a.runtime.ListSandboxes()) {
		if sb == string(pod.UID) {
			w.sandbox = true
		}
	}
}

func regularContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

func mustList(ids []string, err error) []string {
	if err != nil {
		return nil
	}
	return ids
}

// state returns the memory of the pod's container name (init or regular),
// making it on first use; nil if the pod has no such container.
func (w *podWorker) state(pod *corev1.Pod, name string) *containerState {
	if cs, ok := w.containers[name]; ok {
		return cs
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			cs := &containerState{name: name, init: true, waitingReason: "PodInitializing"}
			w.containers[name] = cs
			return cs
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			cs := &containerState{name: name, waitingReason: "ContainerCreating"}
			w.containers[name] = cs
			return cs
		}
	}
	return nil
}

// eventOnce records an event the first time key is seen for this pod.
func (a *Agent) eventOnce(w *podWorker, pod *corev1.Pod, key, typ, reason, format string, args ...any) {
	if w.events[key] {
		return
	}
	w.events[key] = true
	a.recorder.Eventf(pod, typ, reason, format, args...)
}

// forget lets a once-only event be sent again (the condition cleared).
func (w *podWorker) forget(prefix string) {
	for k := range w.events {
		if strings.HasPrefix(k, prefix) {
			delete(w.events, k)
		}
	}
}
