package provisioner

import (
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

const nodeKey = "topology.fake/node"

// twoNodes runs a node-local provisioner, with its own driver, on n1 and n2.
func twoNodes(t *testing.T, e *env, delay time.Duration) map[string]*fakeDriver {
	e.create(node("n1", map[string]string{nodeKey: "n1"}), node("n2", map[string]string{nodeKey: "n2"}))
	drivers := map[string]*fakeDriver{}
	for _, n := range []string{"n1", "n2"} {
		d := &fakeDriver{topology: true}
		drivers[n] = d
		e.run(d.serve(t), Options{Mode: NodeLocal, NodeName: n, TopologyKeys: []string{nodeKey}, ImmediateDelay: delay}, nil)
	}
	return drivers
}

func creates(drivers map[string]*fakeDriver) map[string]int {
	out := map[string]int{}
	for n, d := range drivers {
		out[n] = len(d.createRequests())
	}
	return out
}

// Both nodes try at once: the conditional write of selected-node lets one
// win, and only the winner provisions.
func TestNodeLocalImmediateClaimHasOneOwner(t *testing.T) {
	e := newEnv(t)
	drivers := twoNodes(t, e, time.Nanosecond)
	e.create(class("local", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil))
	for _, name := range []string{"a", "b", "c"} {
		e.create(claim(name, "local", "1Gi"))
	}
	for _, name := range []string{"a", "b", "c"} {
		c, pv := e.waitBound(name)
		owner := c.Annotations[annSelectedNode]
		req := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0]
		if owner == "" || req.Key != nodeKey || req.Values[0] != owner {
			t.Errorf("claim %s owned by %q, PV affinity %+v", name, owner, req)
		}
		// Strict topology: the owner's topology only.
		last := drivers[owner].createRequests()
		var r *csipb.CreateVolumeRequest
		for _, x := range last {
			if x.Name == pv.Name {
				r = x
			}
		}
		if r == nil || len(r.AccessibilityRequirements.Requisite) != 1 || r.AccessibilityRequirements.Requisite[0].Segments[nodeKey] != owner {
			t.Errorf("claim %s: owner's CreateVolume = %v", name, r)
		}
	}
	if got := creates(drivers); got["n1"]+got["n2"] != 3 {
		t.Errorf("CreateVolume calls per node = %v, want 3 in all", got)
	}
}

// With a real delay, the node ranked first by the claim's hash takes it at
// once and the other never tries; deletion happens on the owner only.
func TestNodeLocalImmediateClaimGoesToTheFirstRankedNode(t *testing.T) {
	e := newEnv(t)
	drivers := twoNodes(t, e, time.Minute)
	e.create(class("local", storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete, nil))
	pvc := claim("data", "local", "1Gi")
	e.create(pvc)
	c, pv := e.waitBound("data")
	want := "n1"
	if rankOf(pvc.UID, "n2", []string{"n1", "n2"}) == 0 {
		want = "n2"
	}
	if got := c.Annotations[annSelectedNode]; got != want {
		t.Errorf("claim owned by %s, want %s (rank 0)", got, want)
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}[want]
	if got := creates(drivers); got[want] != 1 || got[other] != 0 {
		t.Errorf("CreateVolume calls per node = %v, want 1 on %s only", got, want)
	}

	e.deleteClaim("data")
	e.eventually("PV gone", func() bool { return e.pv(pv.Name) == nil })
	if a, b := len(drivers[want].deleteRequests()), len(drivers[other].deleteRequests()); a != 1 || b != 0 {
		t.Errorf("DeleteVolume calls: owner %d, other %d; want 1 and 0", a, b)
	}
}
