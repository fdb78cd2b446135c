package printers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Container status builders.

func running(name string, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Ready: ready, Started: ptr(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: ago(time.Hour)}}}
}

func waiting(name, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func terminated(name, reason string, code, signal int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Reason: reason, ExitCode: code, Signal: signal, FinishedAt: ago(time.Minute)}}}
}

// restarted records n restarts, the last one ending d ago.
func restarted(cs corev1.ContainerStatus, n int32, d time.Duration) corev1.ContainerStatus {
	cs.RestartCount = n
	cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: ago(d)}}
	return cs
}

type podOpt func(*corev1.Pod)

// pod builds a pod with one spec container per status (same names) and the
// given phase.
func pod(phase corev1.PodPhase, statuses []corev1.ContainerStatus, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: om("p"), Status: corev1.PodStatus{Phase: phase, ContainerStatuses: statuses}}
	for _, cs := range statuses {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: cs.Name})
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// withInit adds init containers (sidecars when their name starts with "sc")
// and their statuses.
func withInit(statuses ...corev1.ContainerStatus) podOpt {
	return func(p *corev1.Pod) {
		for _, cs := range statuses {
			c := corev1.Container{Name: cs.Name}
			if cs.Name[:2] == "sc" {
				c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
			}
			p.Spec.InitContainers = append(p.Spec.InitContainers, c)
		}
		p.Status.InitContainerStatuses = statuses
	}
}

func withCondition(t corev1.PodConditionType, s corev1.ConditionStatus, reason string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason})
	}
}

func deleting(reason string) podOpt {
	return func(p *corev1.Pod) {
		ts := ago(time.Second)
		p.DeletionTimestamp = &ts
		p.Status.Reason = reason
	}
}

func withReason(reason string) podOpt {
	return func(p *corev1.Pod) { p.Status.Reason = reason }
}

func TestPodStatus(t *testing.T) {
	tests := []struct {
		name                    string
		pod                     *corev1.Pod
		ready, status, restarts string
	}{
		{"running", pod(corev1.PodRunning, []corev1.ContainerStatus{running("a", true), running("b", false)}),
			"1/2", "Running", "0"},
		{"pending without statuses", pod(corev1.PodPending, nil, func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{{Name: "a"}}
		}), "0/1", "Pending", "0"},
		{"container creating", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "ContainerCreating")}),
			"0/1", "ContainerCreating", "0"},
		{"crash loop with last restart", pod(corev1.PodRunning,
			[]corev1.ContainerStatus{restarted(waiting("a", "CrashLoopBackOff"), 3, 2*time.Minute)}),
			"0/1", "CrashLoopBackOff", "3 (2m ago)"},
		{"restarts summed, latest restart time wins", pod(corev1.PodRunning, []corev1.ContainerStatus{
			restarted(running("a", true), 2, 3*time.Hour), restarted(running("b", true), 1, 10*time.Minute)}),
			"2/2", "Running", "3 (10m ago)"},
		{"restarts without termination time", pod(corev1.PodRunning, []corev1.ContainerStatus{func() corev1.ContainerStatus {
			cs := running("a", true)
			cs.RestartCount = 4
			return cs
		}()}), "1/1", "Running", "4"},
		{"completed", pod(corev1.PodSucceeded, []corev1.ContainerStatus{terminated("a", "Completed", 0, 0)}),
			"0/1", "Completed", "0"},
		{"error", pod(corev1.PodFailed, []corev1.ContainerStatus{terminated("a", "Error", 1, 0)}),
			"0/1", "Error", "0"},
		{"exit code without reason", pod(corev1.PodFailed, []corev1.ContainerStatus{terminated("a", "", 2, 0)}),
			"0/1", "ExitCode:2", "0"},
		{"signal without reason", pod(corev1.PodFailed, []corev1.ContainerStatus{terminated("a", "", 137, 9)}),
			"0/1", "Signal:9", "0"},
		{"first container's reason wins", pod(corev1.PodRunning, []corev1.ContainerStatus{
			waiting("a", "ImagePullBackOff"), waiting("b", "ContainerCreating")}),
			"0/2", "ImagePullBackOff", "0"},
		{"completed beside running, pod ready", pod(corev1.PodRunning,
			[]corev1.ContainerStatus{terminated("a", "Completed", 0, 0), running("b", true)},
			withCondition(corev1.PodReady, corev1.ConditionTrue, "")),
			"1/2", "Running", "0"},
		{"completed beside running, pod not ready", pod(corev1.PodRunning,
			[]corev1.ContainerStatus{terminated("a", "Completed", 0, 0), running("b", true)}),
			"1/2", "NotReady", "0"},
		{"evicted", pod(corev1.PodFailed, nil, withReason("Evicted")), "0/0", "Evicted", "0"},
		{"scheduling gated", pod(corev1.PodPending, nil,
			withCondition(corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonSchedulingGated)),
			"0/0", "SchedulingGated", "0"},
		{"init running", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(running("init", false))),
			"0/1", "Init:0/1", "0"},
		{"second init running", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(terminated("i1", "Completed", 0, 0), waiting("i2", "PodInitializing"))),
			"0/1", "Init:1/2", "0"},
		{"init crash loop counts init restarts", pod(corev1.PodPending, []corev1.ContainerStatus{
			restarted(waiting("a", "PodInitializing"), 7, time.Second)},
			withInit(restarted(waiting("init", "CrashLoopBackOff"), 2, 5*time.Minute))),
			"0/1", "Init:CrashLoopBackOff", "2 (5m ago)"},
		{"init error", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(terminated("init", "Error", 1, 0))),
			"0/1", "Init:Error", "0"},
		{"init exit code", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(terminated("init", "", 3, 0))),
			"0/1", "Init:ExitCode:3", "0"},
		{"init signal", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(terminated("init", "", 137, 9))),
			"0/1", "Init:Signal:9", "0"},
		{"pod initializing", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(terminated("init", "Completed", 0, 0))),
			"0/1", "PodInitializing", "0"},
		{"init done, old init restarts dropped", pod(corev1.PodRunning, []corev1.ContainerStatus{running("a", true)},
			withInit(restarted(terminated("init", "Completed", 0, 0), 2, time.Hour))),
			"1/1", "Running", "0"},
		{"sidecar counts toward ready and restarts", pod(corev1.PodRunning,
			[]corev1.ContainerStatus{running("a", true)},
			withInit(restarted(running("sc-proxy", true), 1, 4*time.Minute)),
			withCondition(corev1.PodInitialized, corev1.ConditionTrue, "")),
			"2/2", "Running", "1 (4m ago)"},
		{"sidecar not started blocks init", pod(corev1.PodPending, []corev1.ContainerStatus{waiting("a", "PodInitializing")},
			withInit(waiting("sc-proxy", ""))),
			"0/2", "Init:0/1", "0"},
		{"terminating", pod(corev1.PodRunning, []corev1.ContainerStatus{running("a", true)}, deleting("")),
			"1/1", "Terminating", "0"},
		{"node lost", pod(corev1.PodRunning, []corev1.ContainerStatus{running("a", true)}, deleting("NodeLost")),
			"1/1", "Unknown", "0"},
		{"deleted after success stays completed", pod(corev1.PodSucceeded,
			[]corev1.ContainerStatus{terminated("a", "Completed", 0, 0)}, deleting("")),
			"0/1", "Completed", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cells(t, core("pods"), tt.pod)
			if c[1] != tt.ready || c[2] != tt.status || c[3] != tt.restarts {
				t.Errorf("ready/status/restarts = %q/%q/%q, want %q/%q/%q", c[1], c[2], c[3], tt.ready, tt.status, tt.restarts)
			}
		})
	}
}

func TestPodWideColumns(t *testing.T) {
	p := pod(corev1.PodRunning, []corev1.ContainerStatus{running("a", true)}, func(p *corev1.Pod) {
		p.Status.PodIP = "10.1.0.9" // podIPs unset: the apiserver derives it from podIP
		p.Status.NominatedNodeName = "n2"
		p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}, {ConditionType: "example.com/dns"}}
		p.Status.Conditions = []corev1.PodCondition{
			{Type: "example.com/lb", Status: corev1.ConditionTrue},
			{Type: "example.com/dns", Status: corev1.ConditionFalse},
		}
	})
	c := cells(t, core("pods"), p)
	want := []interface{}{"10.1.0.9", "<none>", "n2", "1/2"}
	for i, w := range want {
		if c[5+i] != w {
			t.Errorf("cell %d = %v, want %v", 5+i, c[5+i], w)
		}
	}
}

func TestPodRestartAgeUsesNow(t *testing.T) {
	p := pod(corev1.PodRunning, []corev1.ContainerStatus{restarted(running("a", true), 1, 0)})
	pr, _ := For(core("pods"))
	c, err := pr.Row(p, now.Add(26*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c[3] != "1 (26h ago)" {
		t.Errorf("restarts = %v", c[3])
	}
	if c[4] != "31h" {
		t.Errorf("age = %v", c[4])
	}
}
