package scheduler

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
)

// code is a filter's verdict on a node, as upstream's framework status codes.
type code int

const (
	// unschedulable: the node does not fit, but evicting pods might help.
	unschedulable code = iota + 1
	// unresolvable: the node does not fit whatever is evicted
	// (UnschedulableAndUnresolvable).
	unresolvable
)

// status is one node's verdict: why it does not fit.
type status struct {
	code    code
	reasons []string
}

func reject(c code, reasons ...string) *status { return &status{code: c, reasons: reasons} }

// message joins the reasons as upstream's Status.Message does.
func (s *status) message() string { return strings.Join(s.reasons, ", ") }

// diagnosis collects the verdicts of one attempt (upstream's Diagnosis with
// its NodeToStatus).
type diagnosis struct {
	numAll       int
	statuses     map[string]*status // nodes that were filtered and failed
	absent       *status            // the verdict of every node not in statuses (nil: none)
	preFilterMsg string
}

// status of one node: its own, or the one of nodes never filtered.
func (d *diagnosis) status(node string) *status {
	if st, ok := d.statuses[node]; ok {
		return st
	}
	return d.absent
}

func (d *diagnosis) fitError(postFilterMsg string) *FitError {
	e := &FitError{NumAllNodes: d.numAll, PreFilterMsg: d.preFilterMsg, PostFilterMsg: postFilterMsg}
	if d.preFilterMsg == "" {
		e.Reasons = d.histogram()
	}
	return e
}

func (d *diagnosis) histogram() map[string]int {
	h := map[string]int{}
	for _, st := range d.statuses {
		for _, r := range st.reasons {
			h[r]++
		}
	}
	if d.absent != nil && len(d.statuses) < d.numAll {
		for _, r := range d.absent.reasons {
			h[r] += d.numAll - len(d.statuses)
		}
	}
	return h
}

// FitError says why no node fits the pod. Its message is upstream's
// FailedScheduling event and PodScheduled condition text:
//
//	0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.
type FitError struct {
	NumAllNodes int
	// PreFilterMsg is set when a pre-filter rejected the pod on every node
	// (e.g. a missing claim); Reasons is then empty.
	PreFilterMsg string
	// Reasons counts, per reason, the nodes that gave it.
	Reasons map[string]int
	// PostFilterMsg is the preemption part ("preemption: ..."), or empty
	// when evicting lower-priority pods would make room.
	PostFilterMsg string
}

// Error is "0/N nodes are available: <pre-filter message or reasons>.
// <post-filter message>", reasons as "<count> <reason>" sorted as strings, as
// upstream prints them.
func (e *FitError) Error() string {
	msg := fmt.Sprintf("0/%d nodes are available:", e.NumAllNodes)
	if e.PreFilterMsg != "" {
		msg += " " + e.PreFilterMsg + "."
	} else if len(e.Reasons) > 0 {
		parts := make([]string, 0, len(e.Reasons))
		for r, n := range e.Reasons {
			parts = append(parts, fmt.Sprintf("%d %s", n, r))
		}
		sort.Strings(parts)
		msg += " " + strings.Join(parts, ", ") + "."
	}
	if e.PostFilterMsg != "" {
		msg += " " + e.PostFilterMsg
	}
	return msg
}

// Upstream's preemption (DefaultPreemption) verdicts.
const (
	preemptionNotHelpful = "Preemption is not helpful for scheduling"
	noVictims            = "No preemption victims found for incoming pod"
	preemptNever         = "not eligible due to preemptionPolicy=Never."
)

// preemption is the message upstream's DefaultPreemption PostFilter adds:
// which nodes evicting lower-priority pods could free. moorage does not
// evict; when eviction would help, the message is the one upstream gives
// after nominating a node (none), and the pod waits.
func preemption(pod *corev1.Pod, c *cluster, d *diagnosis) string {
	if p := pod.Spec.PreemptionPolicy; p != nil && *p == corev1.PreemptNever {
		return "preemption: " + preemptNever
	}
	pd := &diagnosis{numAll: d.numAll, statuses: map[string]*status{}, absent: reject(unresolvable, preemptionNotHelpful)}
	priority := corev1helpers.PodPriority(pod)
	for _, node := range c.nodes {
		if st := d.status(node.Name); st == nil || st.code != unschedulable {
			continue // only nodes where removing pods might help
		}
		var victims []*corev1.Pod
		for _, p := range c.podsOn[node.Name] {
			if corev1helpers.PodPriority(p) < priority {
				victims = append(victims, p)
			}
		}
		if len(victims) == 0 {
			pd.statuses[node.Name] = reject(unresolvable, noVictims)
			continue
		}
		// Would the pod fit with every lower-priority pod gone?
		cy, st, err := preFilter(pod, c.without(victims))
		if err == nil && st == nil {
			_, st, err = cy.filter(node)
		}
		if err != nil {
			st = reject(unresolvable, err.Error())
		}
		if st == nil {
			return "" // upstream would preempt here
		}
		pd.statuses[node.Name] = st
	}
	return "preemption: " + pd.fitError("").Error()
}
