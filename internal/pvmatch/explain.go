package pvmatch

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Verdict says why one volume does or does not fit a claim.
type Verdict struct {
	Volume string
	// Fits is true when the volume passes every rule; only the first verdict
	// (Rule "chosen") is the one Find returns.
	Fits bool
	// Rule is a short id: the first rule that rejects the volume
	// ("accessModes", "class", "excluded", "boundToOther",
	// "preBoundElsewhere", "capacity", "volumeMode", "volumeAttributesClass",
	// "deleting", "delayBinding", "phase", "selector", "nodeAffinity",
	// "claimInvalid"), or "chosen" / "notChosen" for volumes that fit.
	Rule string
	// Reason is a sentence saying what failed and what would make it fit.
	Reason string
}

// Explain evaluates every volume against claim, applying upstream's checks in
// upstream's order, and returns one Verdict per volume: the one Find chooses
// first, then the other volumes that fit in order of preference, then the
// rejected ones, those that passed more checks first.
func Explain(claim *corev1.PersistentVolumeClaim, volumes []*corev1.PersistentVolume, opts Options) []Verdict {
	ix := NewIndex()
	for _, pv := range volumes {
		ix.Upsert(pv)
	}
	chosenPV, _ := ix.Find(claim, opts)
	q := newQuery(claim, opts)
	var chosen *entry
	if chosenPV != nil {
		chosen = newEntry(chosenPV)
	}

	type row struct {
		v  Verdict
		e  *entry
		ev evaluation
	}
	rows := make([]row, 0, len(volumes))
	for _, pv := range volumes {
		if pv == nil {
			continue
		}
		e := newEntry(pv)
		r := row{e: e, v: Verdict{Volume: e.name}}
		switch {
		case q.err != nil:
			r.v.Rule, r.v.Reason = "claimInvalid", q.err.Error()
		default:
			r.ev = evaluate(&q, e)
			r.v.Rule, r.v.Reason = r.ev.rule, r.ev.reason
			if r.ev.rule == "" {
				r.v.Fits = true
				if pv == chosenPV {
					r.v.Rule, r.v.Reason = "chosen", chosenReason(&q, e, r.ev.preBound)
				} else {
					r.v.Rule, r.v.Reason = "notChosen", notChosenReason(&q, e, r.ev.preBound, chosen)
				}
			}
		}
		rows = append(rows, r)
	}

	sched := q.node != nil
	rank := func(r row) int {
		switch {
		case r.v.Rule == "chosen":
			return 0
		case r.v.Fits:
			return 1
		}
		return 2
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		if a.v.Fits {
			if !sched && a.e.modes.count() != b.e.modes.count() {
				return a.e.modes.count() < b.e.modes.count()
			}
			if a.ev.preBound != b.ev.preBound {
				return a.ev.preBound
			}
			return less(a.e, b.e)
		}
		if a.ev.stage != b.ev.stage {
			return a.ev.stage > b.ev.stage
		}
		return a.e.name < b.e.name
	})
	out := make([]Verdict, len(rows))
	for i, r := range rows {
		out[i] = r.v
	}
	return out
}

// evaluation is the outcome of evaluate: the rejecting rule ("" when the
// volume fits), how many checks ran, and whether the volume is pre-bound.
type evaluation struct {
	stage        int
	rule, reason string
	preBound     bool
}

// evaluate runs upstream's checks on one volume in upstream's order: on the
// controller path the access-mode bucket first, then FindMatchingVolume's
// sequence; on the scheduler path the class list first, then the same
// sequence with node affinity and access modes at the end.
func evaluate(q *query, e *entry) evaluation {
	sched := q.node != nil
	ev := evaluation{}
	fail := func(rule, reason string) evaluation {
		ev.rule, ev.reason = rule, reason
		return ev
	}
	ev.stage++
	if sched {
		if e.class != q.class {
			return fail("class", classReason(q, e))
		}
	} else if q.unknownModes || !e.modes.contains(q.modes) {
		return fail("accessModes", modesReason(q, e))
	}
	if ev.stage++; q.excluded(e.name) {
		return fail("excluded", "excluded from this match (for example already assumed for another claim of the pod)")
	}
	if ev.stage++; e.hasClaim && !(e.claimRef == q.claim && q.boundToClaim(e)) {
		switch {
		case e.claimRef == q.claim:
			return fail("boundToOther", fmt.Sprintf("bound to an earlier claim %s (uid %s, this claim's uid is %q); it must be released and its claimRef cleared before it can bind again", e.claimRef, e.claimUID, q.uid))
		case e.claimUID == "":
			return fail("preBoundElsewhere", fmt.Sprintf("reserved for claim %s by spec.claimRef; clear or change the claimRef to bind it here", e.claimRef))
		}
		return fail("boundToOther", fmt.Sprintf("bound to claim %s", e.claimRef))
	}
	if ev.stage++; cmpQty(e.qty, q.req) < 0 {
		return fail("capacity", fmt.Sprintf("capacity %s is less than the claim's request %s; it needs at least %s", qtyString(e.qty), qtyString(q.req), qtyString(q.req)))
	}
	if ev.stage++; e.volumeMode != q.group.volumeMode {
		return fail("volumeMode", fmt.Sprintf("volumeMode %s does not match the claim's %s (unset means Filesystem on both)", e.volumeMode, q.group.volumeMode))
	}
	if ev.stage++; !vacFits(e.vac, q.group.vac) {
		return fail("volumeAttributesClass", fmt.Sprintf("volumeAttributesClassName %q is set while the VolumeAttributesClass feature is disabled, so it is never bound; clear it", e.vac))
	}
	if ev.stage++; e.deleting {
		return fail("deleting", "being deleted (deletionTimestamp is set)")
	}
	if ev.stage++; e.hasClaim {
		ev.preBound = true
		if sched && !e.affinity.matches(q.nodeLabels) {
			return fail("nodeAffinity", fmt.Sprintf("pre-bound to this claim, but its node affinity does not match node %s, so nothing is matched for the claim on this node", q.node.Name))
		}
		return ev
	}
	if ev.stage++; !sched && q.delay {
		return fail("delayBinding", "the claim's StorageClass is WaitForFirstConsumer: the PV controller binds only volumes pre-bound to it, the scheduler picks an unbound one when a pod using the claim is scheduled")
	}
	if ev.stage++; e.phase != corev1.VolumeAvailable {
		phase := string(e.phase)
		if phase == "" {
			phase = "unset"
		}
		return fail("phase", fmt.Sprintf("phase is %s, not Available; the PV controller makes a volume without claimRef Available on its next sync", phase))
	}
	if ev.stage++; q.selector != nil && !q.selector.Matches(labels.Set(e.labels)) {
		have := labels.Set(e.labels).String()
		if have == "" {
			have = "(none)"
		}
		return fail("selector", fmt.Sprintf("labels %s do not match the claim's selector %s", have, q.selector.String()))
	}
	if ev.stage++; e.class != q.class {
		return fail("class", classReason(q, e))
	}
	if ev.stage++; sched && !e.affinity.matches(q.nodeLabels) {
		return fail("nodeAffinity", fmt.Sprintf("node affinity does not match the labels of node %s", q.node.Name))
	}
	if ev.stage++; sched && (!e.modes.contains(q.modes) || (q.unknownModes && !hasAllModes(e.rawModes, q.rawModes))) {
		return fail("accessModes", modesReason(q, e))
	}
	return ev
}

func classReason(q *query, e *entry) string {
	return fmt.Sprintf("storage class %q differs from the claim's %q (a claim binds only volumes of its own class; \"\" matches only \"\")", e.class, q.class)
}

func modesReason(q *query, e *entry) string {
	want := q.modes.String()
	if q.unknownModes {
		want = fmt.Sprint(q.rawModes)
	}
	return fmt.Sprintf("access modes %s do not include every mode the claim requests (%s)", e.modes, want)
}

func chosenReason(q *query, e *entry, preBound bool) string {
	switch {
	case preBound:
		return "pre-bound to this claim by spec.claimRef; a pre-bound volume wins over unbound ones"
	case q.node != nil:
		return fmt.Sprintf("smallest Available volume of class %q holding the request %s that fits node %s", q.class, qtyString(q.req), q.node.Name)
	}
	return fmt.Sprintf("smallest Available volume holding the request %s in the first access-mode group (%s) with a match", qtyString(q.req), e.modes)
}

func notChosenReason(q *query, e *entry, preBound bool, c *entry) string {
	switch {
	case c == nil:
		return "fits, but a volume pre-bound to this claim does not fit the node, and then nothing is matched on this node"
	case q.node == nil && e.modes.count() > c.modes.count():
		return fmt.Sprintf("fits, but %s has fewer access modes (%s vs %s) and groups with fewer modes are searched first", c.name, c.modes, e.modes)
	case c.hasClaim && !preBound:
		return fmt.Sprintf("fits, but %s is pre-bound to this claim and is taken first", c.name)
	case preBound:
		return fmt.Sprintf("also pre-bound to this claim; %s was taken because its name sorts first (upstream takes whichever it meets first)", c.name)
	case cmpQty(e.qty, c.qty) > 0:
		return fmt.Sprintf("fits, but %s is smaller (%s vs %s) and the smallest fitting volume wins", c.name, qtyString(c.qty), qtyString(e.qty))
	}
	return fmt.Sprintf("fits with the same capacity as %s; the tie goes to the name that sorts first (upstream's order is unspecified)", c.name)
}
