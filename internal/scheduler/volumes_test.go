package scheduler_test

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/pvmatch"
	"github.com/moorage/moorage/internal/scheduler"
)

func TestScheduleVolumes(t *testing.T) {
	a, b, c := newNode("node-a").label("zone", "z1"), newNode("node-b").label("zone", "z2"), newNode("node-c").label("zone", "z2")
	local := newClass("local").wffc()
	fast := newClass("fast") // Immediate
	withData := func() podB { return newPod("web").claim("data") }
	runScheduleCases(t, []scheduleCase{
		{name: "claim not found", pod: withData(), snap: snap(a, b),
			err: `0/2 nodes are available: persistentvolumeclaim "data" not found.` + notHelpful2},
		{name: "claim being deleted", pod: withData(), snap: snap(a, b, newClaim("data", "1Gi").bound("pv-1").deleting(), newPV("pv-1", "1Gi")),
			err: `0/2 nodes are available: persistentvolumeclaim "data" is being deleted.` + notHelpful2},
		{name: "claim lost", pod: withData(), snap: snap(a, b, newClaim("data", "1Gi").lost("pv-1")),
			err: `0/2 nodes are available: persistentvolumeclaim "data" bound to non-existent persistentvolume "pv-1".` + notHelpful2},
		{name: "unbound Immediate claim", pod: withData(), snap: snap(a, b, fast, newClaim("data", "1Gi").class("fast")),
			err: "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims." + notHelpful2},
		{name: "unbound claim without class", pod: withData(), snap: snap(a, b, newClaim("data", "1Gi")),
			err: "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims." + notHelpful2},
		{name: "WaitForFirstConsumer claim that names its volume waits for the binder", pod: withData(),
			snap: snap(a, b, local, func() pvcB { p := newClaim("data", "1Gi").class("local"); p.Spec.VolumeName = "pv-1"; return p }()),
			err:  "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims." + notHelpful2},
		{name: "bound volume's node affinity", pod: withData(),
			snap: snap(a, b, newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi").affinity("zone", "z2")), node: "node-b"},
		{name: "bound volume's node affinity conflict", pod: withData(),
			snap: snap(a, newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi").affinity("zone", "z2")),
			err:  "0/1 nodes are available: 1 node(s) had volume node affinity conflict." + notHelpful1},
		{name: "bound local volume narrows the nodes to its host", pod: withData(),
			snap: snap(a, b, c, newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi").onHost("node-c")), node: "node-c"},
		{name: "bound local volume's host unavailable", pod: withData(),
			snap: snap(a, b, newNode("node-c").label("zone", "z2").cordon(), newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi").onHost("node-c")),
			err:  "0/3 nodes are available: 1 node(s) were unschedulable, 2 node is filtered out by the prefilter result." + notHelpful3},
		{name: "two local volumes on different hosts", pod: withData().claim("logs"),
			snap: snap(newNode("node-a"), newNode("node-b"), newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi").onHost("node-a"),
				newClaim("logs", "1Gi").bound("pv-2"), newPV("pv-2", "1Gi").onHost("node-b")),
			err: "0/2 nodes are available: node(s) didn't satisfy plugin VolumeBinding." + notHelpful2},
		{name: "bound volume missing", pod: withData(), snap: snap(newNode("node-a"), newClaim("data", "1Gi").bound("pv-1")),
			err: "0/1 nodes are available: 1 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)." + notHelpful1},
		{name: "WaitForFirstConsumer without volume or provisioner", pod: withData(),
			snap: snap(a, b, local, newClaim("data", "5Gi").class("local"), newPV("small", "1Gi").class("local").onHost("node-a")),
			err:  "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind." + notHelpful2},
		{name: "WaitForFirstConsumer provisioned where the class allows", pod: withData(),
			snap: snap(a, b, newClass("csi").wffc().provisioner("csi.example.com").topology("zone", "z2"), newClaim("data", "5Gi").class("csi")),
			node: "node-b"},
		{name: "WaitForFirstConsumer provisioned by a CSI driver only where its CSINode lists it", pod: withData(),
			snap: snap(a, b, c, newClass("csi").wffc().provisioner("csi.example.com"), newClaim("data", "5Gi").class("csi"),
				csiNode("node-a"), csiNode("node-b", "other.example.com"), csiNode("node-c", "csi.example.com")),
			node: "node-c"},
		{name: "WaitForFirstConsumer provisioned by a CSI driver registered on no node", pod: withData(),
			snap: snap(a, b, newClass("csi").wffc().provisioner("csi.example.com"), newClaim("data", "5Gi").class("csi"),
				csiDriver("csi.example.com"), csiNode("node-a")),
			err: "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind." + notHelpful2},
		{name: "WaitForFirstConsumer provisioned by a CSI driver on a node the class does not allow", pod: withData(),
			snap: snap(a, b, newClass("csi").wffc().provisioner("csi.example.com").topology("zone", "z1"), newClaim("data", "5Gi").class("csi"),
				csiNode("node-b", "csi.example.com")),
			err: "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind." + notHelpful2},
		{name: "WaitForFirstConsumer provisioned by an external provisioner no CSINode names goes anywhere", pod: withData(),
			snap: snap(a, newClass("nfs").wffc().provisioner("example.com/nfs"), newClaim("data", "5Gi").class("nfs"),
				csiNode("node-a", "csi.example.com")),
			node: "node-a"},
		{name: "WaitForFirstConsumer claim selected for a node goes there", pod: withData(),
			snap: snap(a, b, c, newClass("csi").wffc().provisioner("csi.example.com"), newClaim("data", "5Gi").class("csi").selected("node-c")),
			node: "node-c"},
		{name: "WaitForFirstConsumer claim selected for a node that is gone", pod: withData(),
			snap: snap(a, b, newClass("csi").wffc().provisioner("csi.example.com"), newClaim("data", "5Gi").class("csi").selected("node-z")),
			err:  "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind." + notHelpful2},
		{name: "ReadWriteOncePod claim in use", pod: withData(),
			snap: snap(a, b, newClaim("data", "1Gi").modes(corev1.ReadWriteOncePod).bound("pv-1"), newPV("pv-1", "1Gi"),
				newPod("other").claim("data").on("node-a")),
			err: "0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode." + noVictims2},
		{name: "ReadWriteOncePod claim used by a finished pod", pod: withData(),
			snap: snap(a, newClaim("data", "1Gi").modes(corev1.ReadWriteOncePod).bound("pv-1"), newPV("pv-1", "1Gi"),
				newPod("other").claim("data").on("node-a").phase(corev1.PodFailed)), node: "node-a"},
		{name: "ReadWriteOnce claim may be shared", pod: withData(),
			snap: snap(a, newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi"), newPod("other").claim("data").on("node-a")), node: "node-a"},
		{name: "ephemeral volume's claim not created yet", pod: newPod("web").ephemeral("scratch"), snap: snap(a),
			err: `0/1 nodes are available: waiting for ephemeral volume controller to create the persistentvolumeclaim "web-scratch".` + notHelpful1},
		{name: "ephemeral volume's claim of another pod", pod: newPod("web").ephemeral("scratch"),
			snap: snap(a, newClaim("web-scratch", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi")),
			err:  "0/1 nodes are available: PVC default/web-scratch was not created for pod default/web (pod is not owner)." + notHelpful1},
		{name: "ephemeral volume's own claim", pod: newPod("web").ephemeral("scratch"),
			snap: snap(a, newClaim("web-scratch", "1Gi").bound("pv-1").ownedBy(newPod("web")), newPV("pv-1", "1Gi")), node: "node-a"},
	})
}

// A WaitForFirstConsumer claim goes where pvmatch finds a fitting Available
// volume: here only node-b has one (node-a's is too small, node-c's is of
// another class).
func TestScheduleChoosesNodeWithFittingLocalVolume(t *testing.T) {
	s := snap(
		newNode("node-a"), newNode("node-b"), newNode("node-c"),
		newClass("local").wffc(),
		newClaim("data", "5Gi").class("local"),
		newPV("pv-a", "1Gi").class("local").onHost("node-a"),
		newPV("pv-b", "10Gi").class("local").onHost("node-b"),
		newPV("pv-b-huge", "100Gi").class("local").onHost("node-b"),
		newPV("pv-c", "10Gi").class("other").onHost("node-c"),
	)
	s.Index = pvmatch.NewIndex()
	for _, pv := range s.Volumes {
		s.Index.Upsert(pv)
	}
	d, err := scheduler.Schedule(newPod("web").claim("data").Pod, s)
	if err != nil {
		t.Fatal(err)
	}
	want := scheduler.Decision{Node: "node-b", Bindings: []scheduler.VolumeBinding{{Claim: "data", Volume: "pv-b"}}}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("decision = %+v, want %+v", d, want)
	}
	if got := d.UnboundClaims(); !reflect.DeepEqual(got, []string{"data"}) {
		t.Fatalf("UnboundClaims = %v", got)
	}
}

func TestScheduleVolumeDecisions(t *testing.T) {
	csi := newClass("csi").wffc().provisioner("csi.example.com")
	tests := []struct {
		name string
		pod  podB
		snap *scheduler.Snapshot
		want scheduler.Decision
	}{{
		name: "an existing volume is preferred over provisioning",
		pod:  newPod("web").claim("data"),
		snap: snap(newNode("node-a"), newNode("node-b"), newNode("node-c"), csi, newClaim("data", "1Gi").class("csi"),
			newPV("pv-c", "1Gi").class("csi").onHost("node-c")),
		want: scheduler.Decision{Node: "node-c", Bindings: []scheduler.VolumeBinding{{Claim: "data", Volume: "pv-c"}}},
	}, {
		name: "provisioned when nothing fits",
		pod:  newPod("web").claim("data"),
		snap: snap(newNode("node-a"), csi, newClaim("data", "1Gi").class("csi")),
		want: scheduler.Decision{Node: "node-a", Provisions: []string{"data"}},
	}, {
		name: "a volume serves one claim of the pod; the smaller claim chooses first",
		pod:  newPod("web").claim("big").claim("small"),
		snap: snap(newNode("node-a"), csi, newClaim("big", "5Gi").class("csi"), newClaim("small", "1Gi").class("csi"),
			newPV("pv-10", "10Gi").class("csi").onHost("node-a")),
		want: scheduler.Decision{Node: "node-a", Bindings: []scheduler.VolumeBinding{{Claim: "small", Volume: "pv-10"}}, Provisions: []string{"big"}},
	}, {
		name: "a volume assumed for another pod's claim is not offered",
		pod:  newPod("web").claim("data"),
		snap: func() *scheduler.Snapshot {
			s := snap(newNode("node-a"), newNode("node-b"), newClass("local").wffc(), newClaim("data", "1Gi").class("local"),
				newPV("pv-a", "1Gi").class("local").onHost("node-a"), newPV("pv-b", "1Gi").class("local").onHost("node-b"))
			s.AssumedVolumes = map[string]string{"pv-a": "default/other"}
			return s
		}(),
		want: scheduler.Decision{Node: "node-b", Bindings: []scheduler.VolumeBinding{{Claim: "data", Volume: "pv-b"}}},
	}, {
		name: "a volume assumed for this very claim is offered",
		pod:  newPod("web").claim("data"),
		snap: func() *scheduler.Snapshot {
			s := snap(newNode("node-a"), newClass("local").wffc(), newClaim("data", "1Gi").class("local"),
				newPV("pv-a", "1Gi").class("local").onHost("node-a"))
			s.AssumedVolumes = map[string]string{"pv-a": "default/data"}
			return s
		}(),
		want: scheduler.Decision{Node: "node-a", Bindings: []scheduler.VolumeBinding{{Claim: "data", Volume: "pv-a"}}},
	}, {
		name: "bound claims need nothing",
		pod:  newPod("web").claim("data"),
		snap: snap(newNode("node-a"), newClaim("data", "1Gi").bound("pv-1"), newPV("pv-1", "1Gi").boundTo(newClaim("data", "1Gi"))),
		want: scheduler.Decision{Node: "node-a"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := scheduler.Schedule(tc.pod.Pod, tc.snap)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d, tc.want) {
				t.Fatalf("decision = %+v\n     want %+v", d, tc.want)
			}
		})
	}
}
