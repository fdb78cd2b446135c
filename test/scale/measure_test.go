package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// newClient is a client of its own connection (see newHollowNode).
func newClient(cfg *rest.Config, agent string) (kubernetes.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = agent
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	cfg.Dial = dialer.DialContext
	return kubernetes.NewForConfig(cfg)
}

// tracker follows the workload's pods through one watch, as a separate
// client sees them: when each was first seen, first seen with a node, and
// first seen Running and Ready; and how many are gone.
type tracker struct {
	mu                    sync.Mutex
	added, bound, running map[string]time.Time
	gone                  int
	err                   error
}

// track lists the pods matching selector in ns and watches them until ctx
// is done, resuming the watch where it ended.
func track(ctx context.Context, c kubernetes.Interface, ns, selector string) (*tracker, error) {
	t := &tracker{added: map[string]time.Time{}, bound: map[string]time.Time{}, running: map[string]time.Time{}}
	l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	for i := range l.Items {
		t.observe(watch.Added, &l.Items[i], time.Now())
	}
	rv := l.ResourceVersion
	go func() {
		for ctx.Err() == nil {
			w, err := c.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				if ctx.Err() == nil {
					t.fail(fmt.Errorf("watching pods: %w", err))
				}
				return
			}
			for ev := range w.ResultChan() {
				now := time.Now()
				if ev.Type == watch.Error {
					t.fail(fmt.Errorf("pod watch: %v", ev.Object))
					w.Stop()
					return
				}
				pod, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				rv = pod.ResourceVersion
				if ev.Type != watch.Bookmark {
					t.observe(ev.Type, pod, now)
				}
			}
		}
	}()
	return t, nil
}

func (t *tracker) observe(typ watch.EventType, pod *corev1.Pod, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	name := pod.Name
	if typ == watch.Deleted {
		t.gone++
		return
	}
	if _, ok := t.added[name]; !ok {
		t.added[name] = now
	}
	if _, ok := t.bound[name]; !ok && pod.Spec.NodeName != "" {
		t.bound[name] = now
	}
	if _, ok := t.running[name]; !ok && pod.Status.Phase == corev1.PodRunning && podReady(pod) {
		t.running[name] = now
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (t *tracker) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
}

// counts returns how many pods were seen, bound, Running and gone.
func (t *tracker) counts() (added, bound, running, gone int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.added), len(t.bound), len(t.running), t.gone, t.err
}

// last returns the latest time in m.
func last(m map[string]time.Time) time.Time {
	var l time.Time
	for _, v := range m {
		if v.After(l) {
			l = v
		}
	}
	return l
}

// spans returns, for every pod in both maps, to[pod] - from[pod].
func spans(from, to map[string]time.Time) []time.Duration {
	var out []time.Duration
	for k, t := range to {
		if f, ok := from[k]; ok {
			out = append(out, t.Sub(f))
		}
	}
	return out
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// watchProbe measures watch latency under load: it patches a label of one
// pod (which no scheduler places) at a fixed interval from its own client,
// and a watcher of that pod on another client notes when each write's event
// arrives; the latency of a write is from its response to its event.
type watchProbe struct {
	mu       sync.Mutex
	sent     map[string]time.Time // resourceVersion -> request sent
	answered map[string]time.Time // resourceVersion -> response received
	arrived  map[string]time.Time // resourceVersion -> event received
	writes   int
	err      error
}

// startProbe creates the probe pod and runs writer and watcher until ctx is
// done or samples writes were made.
func startProbe(ctx context.Context, cfg *rest.Config, ns string, every time.Duration, samples int) (*watchProbe, error) {
	writer, err := newClient(cfg, "scale-probe-writer")
	if err != nil {
		return nil, err
	}
	watcher, err := newClient(cfg, "scale-probe-watcher")
	if err != nil {
		return nil, err
	}
	pod, err := writer.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: map[string]string{"role": "probe"}},
		Spec: corev1.PodSpec{
			SchedulerName: "no-scheduler", // stays Pending: only its label changes
			Containers:    []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	w, err := watcher.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector(metav1.ObjectNameField, "probe").String(), ResourceVersion: pod.ResourceVersion,
	})
	if err != nil {
		return nil, err
	}
	p := &watchProbe{sent: map[string]time.Time{}, answered: map[string]time.Time{}, arrived: map[string]time.Time{}}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			now := time.Now()
			if o, ok := ev.Object.(*corev1.Pod); ok {
				p.mu.Lock()
				p.arrived[o.ResourceVersion] = now
				p.mu.Unlock()
			}
		}
	}()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; i < samples; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{"seq": strconv.Itoa(i)}}})
			sent := time.Now()
			got, err := writer.CoreV1().Pods(ns).Patch(ctx, "probe", types.MergePatchType, patch, metav1.PatchOptions{})
			now := time.Now()
			p.mu.Lock()
			if err != nil {
				if ctx.Err() == nil && p.err == nil {
					p.err = err
				}
				p.mu.Unlock()
				return
			}
			p.sent[got.ResourceVersion], p.answered[got.ResourceVersion] = sent, now
			p.writes++
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// probeResult is what the probe measured: for each write whose event
// arrived, the time from its response to the event (an event that came
// first counts as 0: early says how many did) and from its request to the
// event.
type probeResult struct {
	afterResponse, afterRequest []time.Duration
	early, missing              int
	err                         error
}

func (p *watchProbe) result() probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := probeResult{err: p.err}
	for rv, answered := range p.answered {
		arrived, ok := p.arrived[rv]
		if !ok {
			r.missing++
			continue
		}
		if arrived.Before(answered) {
			r.early++
		}
		r.afterResponse = append(r.afterResponse, max(0, arrived.Sub(answered)))
		r.afterRequest = append(r.afterRequest, arrived.Sub(p.sent[rv]))
	}
	return r
}

// usage is CPU time and peak memory of this process, and of etcd when it
// runs.
type usage struct {
	cpu, etcdCPU   time.Duration
	maxRSS, etcdHW int64 // bytes
}

func readUsage(etcdPid int) usage {
	var u usage
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		u.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		u.maxRSS = ru.Maxrss * 1024
	}
	if etcdPid > 0 {
		u.etcdCPU, u.etcdHW = procUsage(etcdPid)
	}
	return u
}

// procUsage reads another process's CPU time (/proc/PID/stat, in clock
// ticks of 1/100 s) and peak RSS (VmHWM).
func procUsage(pid int) (time.Duration, int64) {
	var cpu time.Duration
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name, which is in parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * 10 * time.Millisecond
			}
		}
	}
	var hwm int64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				hwm = kb * 1024
			}
		}
	}
	return cpu, hwm
}
