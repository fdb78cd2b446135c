package scheduler_test

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/scheduler"
)

// Upstream's preemption endings, for the common cases.
const (
	notHelpful1 = " preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
	notHelpful2 = " preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
	notHelpful3 = " preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
	noVictims1  = " preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
	noVictims2  = " preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
	noVictims3  = " preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
)

type scheduleCase struct {
	name string
	pod  podB
	snap *scheduler.Snapshot
	node string // the node chosen, or
	err  string // the exact error message
}

func runScheduleCases(t *testing.T, cases []scheduleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := scheduler.Schedule(tc.pod.Pod, tc.snap)
			switch {
			case tc.err != "" && err == nil:
				t.Fatalf("placed on %q, want error\n%s", d.Node, tc.err)
			case tc.err != "" && err.Error() != tc.err:
				t.Fatalf("error\n got: %s\nwant: %s", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err == "" && d.Node != tc.node:
				t.Fatalf("placed on %q, want %q", d.Node, tc.node)
			}
		})
	}
}

func TestScheduleNodes(t *testing.T) {
	a, b, c := newNode("node-a"), newNode("node-b"), newNode("node-c")
	runScheduleCases(t, []scheduleCase{
		{name: "no nodes", pod: newPod("web"), snap: snap(), err: "no nodes available to schedule pods"},
		{name: "ties go to the first name", pod: newPod("web"), snap: snap(newNode("node-c"), newNode("node-a"), newNode("node-b")), node: "node-a"},
		{name: "least allocated wins", pod: newPod("web").req("1", ""),
			snap: snap(newNode("node-a"), newNode("node-b"), newPod("big").req("2", "1Gi").on("node-a")), node: "node-b"},
		{name: "containers without requests count 100m and 200Mi when scoring", pod: newPod("web"),
			snap: snap(newNode("node-a"), newNode("node-b"), newPod("idle").on("node-a")), node: "node-b"},
		{name: "cordoned", pod: newPod("web"), snap: snap(newNode("node-a").cordon()),
			err: "0/1 nodes are available: 1 node(s) were unschedulable." + notHelpful1},
		{name: "cordoned but tolerated", pod: newPod("web").tolerate(corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule),
			snap: snap(newNode("node-a").cordon()), node: "node-a"},
		{name: "untolerated NoSchedule taint", pod: newPod("web"), snap: snap(newNode("node-a").taint("dedicated", "gpu", corev1.TaintEffectNoSchedule)),
			err: "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}." + notHelpful1},
		{name: "untolerated NoExecute taint", pod: newPod("web"), snap: snap(newNode("node-a").taint("maint", "", corev1.TaintEffectNoExecute)),
			err: "0/1 nodes are available: 1 node(s) had untolerated taint {maint: }." + notHelpful1},
		{name: "tolerated taint", pod: newPod("web").tolerate("dedicated", corev1.TaintEffectNoSchedule),
			snap: snap(newNode("node-a").taint("dedicated", "gpu", corev1.TaintEffectNoSchedule)), node: "node-a"},
		{name: "PreferNoSchedule does not filter", pod: newPod("web"),
			snap: snap(newNode("node-a").taint("soft", "x", corev1.TaintEffectPreferNoSchedule)), node: "node-a"},
		{name: "not ready", pod: newPod("web"), snap: snap(newNode("node-a").ready(corev1.ConditionFalse)),
			err: "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }." + notHelpful1},
		{name: "ready unknown", pod: newPod("web"), snap: snap(newNode("node-a").ready(corev1.ConditionUnknown)),
			err: "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }." + notHelpful1},
		{name: "not ready but tolerated", pod: newPod("web").tolerate(corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule),
			snap: snap(newNode("node-a").ready(corev1.ConditionFalse)), node: "node-a"},
		{name: "node selector", pod: newPod("web").nodeSelector("zone", "z2"),
			snap: snap(newNode("node-a").label("zone", "z1"), newNode("node-b").label("zone", "z2")), node: "node-b"},
		{name: "node selector matches nothing", pod: newPod("web").nodeSelector("zone", "z3"),
			snap: snap(newNode("node-a").label("zone", "z1"), newNode("node-b").label("zone", "z2")),
			err:  "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector." + notHelpful2},
		{name: "node affinity terms are ORed", pod: newPod("web").nodeAffinity(
			corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"z9"}}}},
			corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}}}}),
			snap: snap(newNode("node-a").label("zone", "z1"), newNode("node-b").label("disk", "ssd")), node: "node-b"},
		{name: "node affinity requirements are ANDed", pod: newPod("web").nodeAffinity(
			corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"z1"}},
				{Key: "disk", Operator: corev1.NodeSelectorOpExists}}}),
			snap: snap(newNode("node-a").label("zone", "z1"), newNode("node-b").label("disk", "ssd")),
			err:  "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector." + notHelpful2},
		{name: "node affinity matchFields", pod: newPod("web").nodeAffinity(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-b"}}}}),
			snap: snap(a, b, c), node: "node-b"},
		{name: "matchFields on node names narrows the nodes first", pod: newPod("web").nodeAffinity(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-b"}}}}),
			snap: snap(newNode("node-a"), newNode("node-b").cordon(), newNode("node-c")),
			err:  "0/3 nodes are available: 1 node(s) were unschedulable, 2 node is filtered out by the prefilter result." + notHelpful3},
		{name: "terminated pods hold nothing", pod: newPod("web"),
			snap: snap(newNode("node-a").alloc(corev1.ResourcePods, "1"), newPod("done").on("node-a").phase(corev1.PodSucceeded)), node: "node-a"},
		{name: "too many pods", pod: newPod("web"),
			snap: snap(newNode("node-a").alloc(corev1.ResourcePods, "1"), newPod("other").on("node-a")),
			err:  "0/1 nodes are available: 1 Too many pods." + noVictims1},
		{name: "insufficient cpu", pod: newPod("web").req("5", ""), snap: snap(newNode("node-a")),
			err: "0/1 nodes are available: 1 Insufficient cpu." + noVictims1},
		{name: "insufficient cpu after the pods on the node", pod: newPod("web").req("2", ""),
			snap: snap(newNode("node-a"), newPod("other").req("3", "").on("node-a")),
			err:  "0/1 nodes are available: 1 Insufficient cpu." + noVictims1},
		{name: "every shortfall is a reason", pod: newPod("web").req("5", "9Gi"),
			snap: snap(newNode("node-a").alloc(corev1.ResourcePods, "0")),
			err:  "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods." + noVictims1},
		{name: "init containers: the largest counts when above the sum", pod: newPod("web").req("1", "").initReq("3.5"),
			snap: snap(newNode("node-a"), newPod("other").req("1", "").on("node-a")),
			err:  "0/1 nodes are available: 1 Insufficient cpu." + noVictims1},
		{name: "init containers: fits when the largest fits", pod: newPod("web").req("1", "").initReq("3"),
			snap: snap(newNode("node-a"), newPod("other").req("1", "").on("node-a")), node: "node-a"},
		{name: "pod overhead counts", pod: newPod("web").req("3.5", "").overhead("1"), snap: snap(newNode("node-a")),
			err: "0/1 nodes are available: 1 Insufficient cpu." + noVictims1},
		{name: "extended resources", pod: func() podB {
			p := newPod("web")
			p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"example.com/gpu": resourceQty("1")}
			return p
		}(), snap: snap(newNode("node-a"), newNode("node-b").alloc("example.com/gpu", "2")), node: "node-b"},
		{name: "missing extended resource", pod: func() podB {
			p := newPod("web")
			p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"example.com/gpu": resourceQty("1")}
			return p
		}(), snap: snap(newNode("node-a")), err: "0/1 nodes are available: 1 Insufficient example.com/gpu." + noVictims1},
		{name: "host port taken", pod: newPod("web").hostPort(8080),
			snap: snap(newNode("node-a"), newNode("node-b"), newPod("other").hostPort(8080).on("node-a")), node: "node-b"},
		{name: "host port taken everywhere", pod: newPod("web").hostPort(8080),
			snap: snap(newNode("node-a"), newPod("other").hostPort(8080).on("node-a")),
			err:  "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports." + noVictims1},
		{name: "other host ports are free", pod: newPod("web").hostPort(8080),
			snap: snap(newNode("node-a"), newPod("other").hostPort(9090).on("node-a")), node: "node-a"},
	})
}

// The mixed case: each node fails for its own reason; reasons are counted
// and sorted as strings, and preemption reports per node whether evicting
// could help.
func TestScheduleMixedMessage(t *testing.T) {
	runScheduleCases(t, []scheduleCase{{
		name: "selector on one node, cpu on two",
		pod:  newPod("web").req("3", "").nodeSelector("disk", "ssd"),
		snap: snap(
			newNode("node-a"),
			newNode("node-b").label("disk", "ssd"), newPod("b1").req("2", "").on("node-b"),
			newNode("node-c").label("disk", "ssd"), newPod("c1").req("2", "").on("node-c"),
		),
		err: "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu. " +
			"preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
	}, {
		name: "taint, cordon and memory",
		pod:  newPod("web").req("", "6Gi"),
		snap: snap(
			newNode("node-a").taint("dedicated", "db", corev1.TaintEffectNoSchedule),
			newNode("node-b").cordon(),
			newNode("node-c"), newPod("c1").req("", "4Gi").on("node-c"),
		),
		err: "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable. " +
			"preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
	}})
}

func TestSchedulePreemptionMessage(t *testing.T) {
	runScheduleCases(t, []scheduleCase{
		{name: "preemptionPolicy Never", pod: newPod("web").req("3", "").never(),
			snap: snap(newNode("node-a"), newPod("other").req("2", "").on("node-a")),
			err:  "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."},
		{name: "evicting lower-priority pods would help: upstream nominates, so no preemption part",
			pod:  newPod("web").req("3", "").priority(100),
			snap: snap(newNode("node-a"), newPod("other").req("2", "").on("node-a")),
			err:  "0/1 nodes are available: 1 Insufficient cpu."},
		{name: "evicting lower-priority pods would not help",
			pod:  newPod("web").req("5", "").priority(100),
			snap: snap(newNode("node-a"), newPod("other").req("2", "").on("node-a")),
			err:  "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Insufficient cpu."},
	})
}

func TestScheduleInterPodAffinity(t *testing.T) {
	zoned := func(name, zone string) nodeB { return newNode(name).label("zone", zone) }
	a, b, c := zoned("node-a", "z1"), zoned("node-b", "z1"), zoned("node-c", "z2")
	db := func(name, node string) podB { return newPod(name).label("app", "db").on(node) }
	web := func(name, node string) podB { return newPod(name).label("app", "web").on(node) }
	runScheduleCases(t, []scheduleCase{
		{name: "affinity: the zone of the matching pod", pod: newPod("web").podAffinity(podTerm("db", "zone")),
			snap: snap(a, b, c, db("db-0", "node-c")), node: "node-c"},
		{name: "affinity: any node of that zone, least allocated first", pod: newPod("web").podAffinity(podTerm("db", "zone")),
			snap: snap(a, b, c, db("db-0", "node-a")), node: "node-b"},
		{name: "affinity: no matching pod", pod: newPod("web").podAffinity(podTerm("db", "zone")),
			snap: snap(a, b, c),
			err:  "0/3 nodes are available: 3 node(s) didn't match pod affinity rules." + notHelpful3},
		{name: "affinity: the first pod of a group may go anywhere", pod: newPod("db-0").label("app", "db").podAffinity(podTerm("db", "zone")),
			snap: snap(a, b, c), node: "node-a"},
		{name: "affinity: nodes need the topology key", pod: newPod("db-0").label("app", "db").podAffinity(podTerm("db", "rack")),
			snap: snap(a, b, c),
			err:  "0/3 nodes are available: 3 node(s) didn't match pod affinity rules." + notHelpful3},
		{name: "affinity: other namespaces do not count", pod: newPod("web").podAffinity(podTerm("db", "zone")),
			snap: snap(a, b, c, db("db-0", "node-c").ns("other")),
			err:  "0/3 nodes are available: 3 node(s) didn't match pod affinity rules." + notHelpful3},
		{name: "anti-affinity by hostname", pod: newPod("web-2").label("app", "web").podAntiAffinity(podTerm("web", corev1.LabelHostname)),
			snap: snap(a, b, c, web("web-0", "node-a"), web("web-1", "node-b")), node: "node-c"},
		{name: "anti-affinity by zone", pod: newPod("web-1").podAntiAffinity(podTerm("web", "zone")),
			snap: snap(a, b, c, web("web-0", "node-a")), node: "node-c"},
		{name: "anti-affinity everywhere", pod: newPod("web-3").podAntiAffinity(podTerm("web", corev1.LabelHostname)),
			snap: snap(a, b, c, web("web-0", "node-a"), web("web-1", "node-b"), web("web-2", "node-c")),
			err:  "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules." + noVictims3},
		{name: "anti-affinity ignores other namespaces", pod: newPod("web-1").podAntiAffinity(podTerm("web", corev1.LabelHostname)),
			snap: snap(a, web("web-0", "node-a").ns("other")), node: "node-a"},
		{name: "anti-affinity with a namespace selector", pod: newPod("web-1").podAntiAffinity(func() corev1.PodAffinityTerm {
			t := podTerm("web", corev1.LabelHostname)
			t.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}
			return t
		}()),
			snap: snap(a, b, web("web-0", "node-a").ns("prod"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}}}),
			node: "node-b"},
		{name: "existing pods' anti-affinity", pod: newPod("web").label("app", "web"),
			snap: snap(a, newPod("loner").podAntiAffinity(podTerm("web", corev1.LabelHostname)).on("node-a")),
			err:  "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules." + noVictims1},
		{name: "existing pods' anti-affinity, another node", pod: newPod("web").label("app", "web"),
			snap: snap(a, c, newPod("loner").podAntiAffinity(podTerm("web", "zone")).on("node-a")), node: "node-c"},
		{name: "matchLabelKeys narrows the term to the pod's own value", pod: newPod("web-v2").label("app", "web").label("version", "v2").podAntiAffinity(func() corev1.PodAffinityTerm {
			t := podTerm("web", corev1.LabelHostname)
			t.MatchLabelKeys = []string{"version"}
			return t
		}()),
			snap: snap(a, web("web-v1", "node-a").label("version", "v1")), node: "node-a"},
	})
}

func TestScheduleAssigned(t *testing.T) {
	if _, err := scheduler.Schedule(newPod("web").on("node-a").Pod, snap(newNode("node-a"))); !errors.Is(err, scheduler.ErrAssigned) {
		t.Fatalf("err = %v, want ErrAssigned", err)
	}
}

func TestFitErrorSortsReasonsAsStrings(t *testing.T) {
	e := &scheduler.FitError{NumAllNodes: 12, Reasons: map[string]int{"Insufficient cpu": 10, "node(s) were unschedulable": 2}}
	if got, want := e.Error(), "0/12 nodes are available: 10 Insufficient cpu, 2 node(s) were unschedulable."; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
