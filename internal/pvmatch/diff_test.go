package pvmatch

import (
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var (
	diffSeed  = flag.Int64("pvmatch.seed", 0, "seed of TestDifferential (0: time-based)")
	diffCases = flag.Int("pvmatch.cases", 20000, "random cases in TestDifferential")
)

// randomCase draws a claim, its options and a set of volumes built so that
// every rule is exercised and ties are common: few classes, capacities from
// a small set (5Gi and 5120Mi are equal), labels and node zones from small
// sets, some volumes pre-bound, bound elsewhere, deleting, not Available.
func randomCase(r *rand.Rand) (*corev1.PersistentVolumeClaim, []*corev1.PersistentVolume, Options) {
	pick := func(s ...string) string { return s[r.Intn(len(s))] }
	chance := func(p float64) bool { return r.Float64() < p }
	modes := func() []corev1.PersistentVolumeAccessMode {
		if chance(0.01) {
			return nil // invalid, but upstream's bucket order handles it: key "" first
		}
		if chance(0.05) {
			return []corev1.PersistentVolumeAccessMode{RWOP}
		}
		var m []corev1.PersistentVolumeAccessMode
		for len(m) == 0 {
			for _, x := range []corev1.PersistentVolumeAccessMode{RWO, ROX, RWX} {
				if chance(0.45) {
					m = append(m, x)
				}
			}
		}
		if chance(0.05) {
			m = append(m, m[0]) // duplicate
		}
		if chance(0.02) {
			m = append(m, "ReadWriteSometimes") // unknown to upstream's bucket keys
		}
		r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		return m
	}
	vmode := func() *corev1.PersistentVolumeMode {
		switch r.Intn(8) {
		case 0:
			m := corev1.PersistentVolumeBlock
			return &m
		case 1, 2:
			m := corev1.PersistentVolumeFilesystem
			return &m
		}
		return nil
	}

	c := newPVC(pick("c1", "c2")).req(pick("500Mi", "1Gi", "2Gi", "5Gi", "8Gi"))
	if c.c.Spec.AccessModes = modes(); chance(0.5) {
		c.c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{RWO}
	}
	c.c.Spec.VolumeMode = vmode()
	switch r.Intn(6) {
	case 0: // unset
	case 1:
		c.class("")
	case 2:
		c.class("silver")
	default:
		c.class("gold")
	}
	if chance(0.1) {
		c.betaClass(pick("", "gold", "silver"))
	}
	if chance(0.3) {
		if chance(0.5) {
			c.matchLabels("tier", pick("ssd", "hdd"))
		}
		ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
		for n := r.Intn(3); n > 0; n-- {
			switch op := ops[r.Intn(len(ops))]; op {
			case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
				c.expr(pick("zone", "tier"), op, pick("z1", "ssd"), pick("z2", "hdd"))
			default:
				c.expr(pick("zone", "tier", "fast"), op)
			}
		}
		if chance(0.02) {
			c.expr("zone", "Near", "z1") // invalid: an error
		}
	}
	if chance(0.02) {
		c.vac("fast") // gate off: an error
	}
	c.c.UID = types.UID(pick("uid-c1", "uid-c2"))

	var vols []*corev1.PersistentVolume
	for i, n := 0, r.Intn(30); i < n; i++ {
		b := newPV(fmt.Sprintf("pv%02d", i)).cap(pick("1Gi", "2Gi", "5Gi", "5120Mi", "10Gi"))
		b.pv.Spec.AccessModes = modes()
		b.pv.Spec.VolumeMode = vmode()
		b.class(pick("", "gold", "gold", "silver"))
		if chance(0.08) {
			b.betaClass(pick("", "gold", "silver"))
		}
		if chance(0.6) {
			b.labels("tier", pick("ssd", "hdd"))
		}
		if chance(0.4) {
			b.labels("zone", pick("z1", "z2", "z3"))
		}
		if chance(0.2) {
			b.labels("fast", "")
		}
		switch x := r.Float64(); {
		case x < 0.12:
			b.claimRef("ns", c.c.Name, types.UID(pick("", string(c.c.UID), "uid-old")))
		case x < 0.25:
			b.claimRef(pick("ns", "ns2"), pick("c1", "c2", "other"), types.UID(pick("", "uid-x")))
		}
		if chance(0.12) {
			b.phase(corev1.PersistentVolumePhase(pick("Pending", "Bound", "Released", "Failed", "")))
		}
		if chance(0.05) {
			b.deleting()
		}
		if chance(0.03) {
			b.vac("fast")
		}
		if chance(0.35) {
			ops := []corev1.NodeSelectorOperator{corev1.NodeSelectorOpIn, corev1.NodeSelectorOpNotIn, corev1.NodeSelectorOpExists, corev1.NodeSelectorOpGt, "fields"}
			for n := 1 + r.Intn(2); n > 0; n-- {
				switch op := ops[r.Intn(len(ops))]; op {
				case "fields": // a matchFields-only term: never compared upstream
					b.affinity("zone", corev1.NodeSelectorOpIn, "z9")
					terms := b.pv.Spec.NodeAffinity.Required.NodeSelectorTerms
					terms[len(terms)-1] = corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
						{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{pick("n1", "n2")}}}}
				case corev1.NodeSelectorOpIn, corev1.NodeSelectorOpNotIn:
					b.affinity("zone", op, pick("z1", "z2"))
				case corev1.NodeSelectorOpGt:
					b.affinity("rack", op, pick("3", "8", "x")) // "x" spoils the term
				default:
					b.affinity(pick("zone", "ssd"), op)
				}
			}
		}
		vols = append(vols, b.pv)
	}

	var opts Options
	if chance(0.5) {
		opts.Node = node(pick("n1", "n2"), "zone", pick("z1", "z2"), "rack", pick("5", "9"))
	}
	opts.DelayBinding = chance(0.2)
	if chance(0.3) {
		ex := map[string]bool{}
		for _, v := range vols {
			if chance(0.15) {
				ex[v.Name] = true
			}
		}
		opts.Exclude = func(n string) bool { return ex[n] }
	}
	return c.c, vols, opts
}

// TestDifferential checks Find against upstream's matcher on random cases.
// Find must give one of the answers upstream can give: upstream's choice
// among equally good volumes depends on informer and map order ("ties": equal
// capacity, access-mode buckets with the same number of modes, several
// volumes pre-bound to one claim), and upstreamOutcomes lists them all. Errors
// must agree. Explain must put Find's answer first and call every answer
// upstream could give a fit.
func TestDifferential(t *testing.T) {
	defer func(n int) { blockMax = n }(blockMax)
	blockMax = 4 // small blocks: splits and merges happen even with 30 volumes
	seed := *diffSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -pvmatch.seed=%d)", seed, seed)
	r := rand.New(rand.NewSource(seed))
	stats := map[string]int{}
	for i := 0; i < *diffCases; i++ {
		claim, vols, opts := randomCase(r)
		ix := NewIndex()
		// Exercise replacement and deletion: stale versions first, ghosts removed.
		for _, v := range vols {
			if r.Intn(5) == 0 {
				stale := v.DeepCopy()
				stale.Spec.ClaimRef, stale.Status.Phase = nil, corev1.VolumeAvailable
				stale.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{RWO}
				ix.Upsert(stale)
			}
		}
		ix.Upsert(newPV("ghost").pv)
		for _, j := range r.Perm(len(vols)) {
			ix.Upsert(vols[j])
		}
		ix.Delete("ghost")

		got, err := ix.Find(claim, opts)
		outs, uerr := upstreamOutcomes(claim, vols, opts)
		fail := func(format string, args ...any) {
			t.Fatalf("seed %d case %d: %s\n%s", seed, i, fmt.Sprintf(format, args...), describe(claim, vols, opts))
		}
		if (err != nil) != (uerr != nil) {
			fail("error %v, upstream error %v", err, uerr)
		}
		if err != nil {
			stats["error"]++
			continue
		}
		if !outs[pvName(got)] {
			fail("Find = %q, upstream answers %s", pvName(got), setString(outs))
		}
		switch {
		case len(outs) > 1:
			stats["tie"]++
		case got == nil:
			stats["none"]++
		default:
			stats["match"]++
		}
		verdicts := Explain(claim, vols, opts)
		if len(verdicts) != len(vols) {
			fail("Explain gave %d verdicts for %d volumes", len(verdicts), len(vols))
		}
		if got != nil && (verdicts[0].Volume != got.Name || verdicts[0].Rule != "chosen" || !verdicts[0].Fits) {
			fail("Explain first = %+v, Find = %s", verdicts[0], got.Name)
		}
		fits := map[string]bool{}
		for _, v := range verdicts {
			if v.Fits {
				fits[v.Volume] = true
			}
			if v.Reason == "" || v.Rule == "" {
				fail("empty verdict %+v", v)
			}
		}
		for name := range outs {
			if name != "" && !fits[name] {
				fail("upstream may choose %s, Explain says it does not fit: %+v", name, verdicts)
			}
		}
	}
	t.Logf("%d cases: %v", *diffCases, stats)
	if stats["match"] < *diffCases/10 || stats["none"] < *diffCases/10 || stats["tie"] < *diffCases/50 {
		t.Errorf("random cases are too one-sided: %v", stats)
	}
}

func describe(c *corev1.PersistentVolumeClaim, vols []*corev1.PersistentVolume, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "claim %s/%s uid=%s class=%q modes=%v vmode=%v req=%s sel=%v vac=%v ann=%v\n", c.Namespace, c.Name, c.UID,
		ClaimClass(c), c.Spec.AccessModes, volumeMode(c.Spec.VolumeMode), qtyString(c.Spec.Resources.Requests[corev1.ResourceStorage]),
		metav1.FormatLabelSelector(c.Spec.Selector), deref(c.Spec.VolumeAttributesClassName), c.Annotations)
	if opts.Node != nil {
		fmt.Fprintf(&b, "node %s %v\n", opts.Node.Name, opts.Node.Labels)
	}
	fmt.Fprintf(&b, "delayBinding=%v\n", opts.DelayBinding)
	for _, v := range vols {
		ref := ""
		if v.Spec.ClaimRef != nil {
			ref = v.Spec.ClaimRef.Namespace + "/" + v.Spec.ClaimRef.Name + "@" + string(v.Spec.ClaimRef.UID)
		}
		aff := ""
		if v.Spec.NodeAffinity != nil {
			aff = fmt.Sprint(v.Spec.NodeAffinity.Required.NodeSelectorTerms)
		}
		fmt.Fprintf(&b, "  %s cap=%s modes=%v vmode=%s class=%q phase=%q ref=%s del=%v vac=%q excl=%v labels=%v aff=%s\n",
			v.Name, qtyString(v.Spec.Capacity[corev1.ResourceStorage]), v.Spec.AccessModes, volumeMode(v.Spec.VolumeMode),
			VolumeClass(v), v.Status.Phase, ref, v.DeletionTimestamp != nil, deref(v.Spec.VolumeAttributesClassName),
			opts.Exclude != nil && opts.Exclude(v.Name), v.Labels, aff)
	}
	return b.String()
}
