package pvmatch

import (
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type findCase struct {
	name    string // "<rule>/<what>"
	vols    []*pvB
	claim   *pvcB
	opts    Options
	want    string // volume name, "" for none
	wantErr bool
}

var (
	zone1 = node("n1", "zone", "z1", "rack", "7")
	only  = func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, x := range names {
				if n == x {
					return true
				}
			}
			return false
		}
	}
)

func findCases() []findCase {
	const (
		block = corev1.PersistentVolumeBlock
		fs    = corev1.PersistentVolumeFilesystem
	)
	this := func(b *pvB) *pvB { return b.claimRef("ns", "c", "") }
	return []findCase{
		// Class.
		{name: "class/unset claim takes class-less volume", vols: []*pvB{newPV("a")}, claim: newPVC("c"), want: "a"},
		{name: "class/empty-string claim takes class-less volume", vols: []*pvB{newPV("a")}, claim: newPVC("c").class(""), want: "a"},
		{name: "class/unset claim ignores classed volume", vols: []*pvB{newPV("a").class("gold")}, claim: newPVC("c")},
		{name: "class/classed claim ignores class-less volume", vols: []*pvB{newPV("a")}, claim: newPVC("c").class("gold")},
		{name: "class/beta annotation on claim overrides field", vols: []*pvB{newPV("a").class("gold").cap("5Gi"), newPV("b").class("silver")},
			claim: newPVC("c").class("silver").betaClass("gold"), want: "a"},
		{name: "class/beta annotation on volume overrides field", vols: []*pvB{newPV("a").class("silver").betaClass("gold")},
			claim: newPVC("c").class("gold"), want: "a"},
		{name: "class/empty beta annotation means no class", vols: []*pvB{newPV("a"), newPV("b").class("gold")},
			claim: newPVC("c").class("gold").betaClass(""), want: "a"},

		// Access-mode buckets (controller path).
		{name: "accessModes/RWO bucket beats smaller RWO,ROX", vols: []*pvB{newPV("a").cap("100Gi"), newPV("b").modes(RWO, ROX)}, claim: newPVC("c"), want: "a"},
		{name: "accessModes/superset bucket when no exact one", vols: []*pvB{newPV("b").modes(RWO, ROX).cap("5Gi")}, claim: newPVC("c"), want: "b"},
		{name: "accessModes/subset never matches", vols: []*pvB{newPV("a")}, claim: newPVC("c").modes(RWO, RWX)},
		{name: "accessModes/order and duplicates ignored", vols: []*pvB{newPV("a").modes(ROX, RWO, RWO)}, claim: newPVC("c").modes(ROX, RWO), want: "a"},
		{name: "accessModes/RWOP claim needs RWOP", vols: []*pvB{newPV("a"), newPV("b").modes(RWOP).cap("9Gi")}, claim: newPVC("c").modes(RWOP), want: "b"},
		{name: "accessModes/fewer-modes bucket without fit is passed over", vols: []*pvB{newPV("a").cap("1Mi"), newPV("b").modes(RWO, ROX).cap("5Gi")},
			claim: newPVC("c"), want: "b"},
		{name: "accessModes/equal-count buckets: smallest (tie class)", vols: []*pvB{newPV("b").modes(RWO, ROX).cap("5Gi"), newPV("c2").modes(RWO, RWX).cap("2Gi")},
			claim: newPVC("c"), want: "c2"},

		// Volume mode.
		{name: "volumeMode/Block claim takes Block volume", vols: []*pvB{newPV("a").mode(block)}, claim: newPVC("c").mode(block), want: "a"},
		{name: "volumeMode/Block claim rejects Filesystem", vols: []*pvB{newPV("a").mode(fs)}, claim: newPVC("c").mode(block)},
		{name: "volumeMode/unset claim takes Filesystem", vols: []*pvB{newPV("a").mode(fs)}, claim: newPVC("c"), want: "a"},
		{name: "volumeMode/Filesystem claim takes unset", vols: []*pvB{newPV("a")}, claim: newPVC("c").mode(fs), want: "a"},
		{name: "volumeMode/unset claim rejects Block", vols: []*pvB{newPV("a").mode(block)}, claim: newPVC("c")},

		// Selector.
		{name: "selector/matchLabels", vols: []*pvB{newPV("a"), newPV("b").cap("2Gi").labels("tier", "ssd")}, claim: newPVC("c").matchLabels("tier", "ssd"), want: "b"},
		{name: "selector/matchLabels mismatch", vols: []*pvB{newPV("a").labels("tier", "hdd")}, claim: newPVC("c").matchLabels("tier", "ssd")},
		{name: "selector/In", vols: []*pvB{newPV("a").labels("zone", "z3"), newPV("b").cap("3Gi").labels("zone", "z2")},
			claim: newPVC("c").expr("zone", metav1.LabelSelectorOpIn, "z1", "z2"), want: "b"},
		{name: "selector/NotIn takes volume without the label", vols: []*pvB{newPV("a").labels("zone", "z1"), newPV("b").cap("3Gi")},
			claim: newPVC("c").expr("zone", metav1.LabelSelectorOpNotIn, "z1"), want: "b"},
		{name: "selector/Exists", vols: []*pvB{newPV("a"), newPV("b").cap("3Gi").labels("fast", "")},
			claim: newPVC("c").expr("fast", metav1.LabelSelectorOpExists), want: "b"},
		{name: "selector/DoesNotExist", vols: []*pvB{newPV("a").labels("fast", "1"), newPV("b").cap("3Gi")},
			claim: newPVC("c").expr("fast", metav1.LabelSelectorOpDoesNotExist), want: "b"},
		{name: "selector/matchLabels and matchExpressions together", vols: []*pvB{newPV("a").labels("tier", "ssd"), newPV("b").cap("3Gi").labels("tier", "ssd", "zone", "z1")},
			claim: newPVC("c").matchLabels("tier", "ssd").expr("zone", metav1.LabelSelectorOpIn, "z1"), want: "b"},
		{name: "selector/invalid selector is an error", vols: []*pvB{newPV("a")}, claim: newPVC("c").expr("zone", "Near", "z1"), wantErr: true},

		// Capacity.
		{name: "capacity/smallest that fits", vols: []*pvB{newPV("a").cap("1Gi"), newPV("b").cap("5Gi"), newPV("d").cap("3Gi")}, claim: newPVC("c").req("2Gi"), want: "d"},
		{name: "capacity/equal value in other units fits", vols: []*pvB{newPV("a").cap("5120Mi")}, claim: newPVC("c").req("5Gi"), want: "a"},
		{name: "capacity/none large enough", vols: []*pvB{newPV("a").cap("1Gi")}, claim: newPVC("c").req("2Gi")},
		{name: "capacity/equal sizes: first name (tie class)", vols: []*pvB{newPV("b").cap("5Gi"), newPV("a").cap("5120Mi")}, claim: newPVC("c").req("2Gi"), want: "a"},

		// Pre-bound volumes (spec.claimRef names the claim).
		{name: "preBound/wins over smaller unbound", vols: []*pvB{this(newPV("a").cap("10Gi")), newPV("b")}, claim: newPVC("c"), want: "a"},
		{name: "preBound/uid equal", vols: []*pvB{newPV("a").cap("10Gi").claimRef("ns", "c", "uid-c"), newPV("b")}, claim: newPVC("c"), want: "a"},
		{name: "preBound/uid of an earlier claim is bound elsewhere", vols: []*pvB{newPV("a").claimRef("ns", "c", "uid-old"), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBound/class not checked", vols: []*pvB{this(newPV("a").class("gold")), newPV("b")}, claim: newPVC("c"), want: "a"},
		{name: "preBound/selector and phase not checked", vols: []*pvB{this(newPV("a").phase(corev1.VolumeBound).cap("3Gi")), newPV("b").labels("x", "y")},
			claim: newPVC("c").matchLabels("x", "y"), want: "a"},
		{name: "preBound/too small is skipped", vols: []*pvB{this(newPV("a").cap("1Mi")), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBound/volume mode checked", vols: []*pvB{this(newPV("a").mode(block)), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBound/being deleted is skipped", vols: []*pvB{this(newPV("a").deleting()), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBound/in a later bucket loses to an earlier bucket", vols: []*pvB{this(newPV("a").modes(RWO, ROX)), newPV("b").cap("50Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBound/taken with delayBinding", vols: []*pvB{this(newPV("a")), newPV("b")}, claim: newPVC("c"), opts: Options{DelayBinding: true}, want: "a"},
		{name: "preBound/excluded is skipped", vols: []*pvB{this(newPV("a")), newPV("b").cap("2Gi")}, claim: newPVC("c"), opts: Options{Exclude: only("a")}, want: "b"},
		{name: "volumeName/ignored by the matcher", vols: []*pvB{newPV("a"), newPV("b").cap("2Gi")}, claim: newPVC("c").volumeName("b"), want: "a"},

		// Bound elsewhere, deleting, phase, VAC.
		{name: "boundToOther/bound to another claim", vols: []*pvB{newPV("a").claimRef("ns", "other", "u9"), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBoundElsewhere/reserved for another claim", vols: []*pvB{newPV("a").claimRef("ns", "other", ""), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "preBoundElsewhere/same name other namespace", vols: []*pvB{newPV("a").claimRef("ns2", "c", "")}, claim: newPVC("c")},
		{name: "deleting/skipped", vols: []*pvB{newPV("a").deleting(), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "phase/Released without claimRef skipped", vols: []*pvB{newPV("a").phase(corev1.VolumeReleased), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "phase/Pending skipped", vols: []*pvB{newPV("a").phase(corev1.VolumePending)}, claim: newPVC("c")},
		{name: "volumeAttributesClass/volume with VAC never binds", vols: []*pvB{newPV("a").vac("gold"), newPV("b").cap("2Gi")}, claim: newPVC("c"), want: "b"},
		{name: "volumeAttributesClass/claim with VAC is an error", vols: []*pvB{newPV("a")}, claim: newPVC("c").vac("gold"), wantErr: true},
		{name: "volumeAttributesClass/claim error needs a searched bucket", vols: []*pvB{newPV("a")}, claim: newPVC("c").vac("gold").modes(RWX)},

		// WaitForFirstConsumer.
		{name: "delayBinding/no node: unbound volumes left to the scheduler", vols: []*pvB{newPV("a")}, claim: newPVC("c"), opts: Options{DelayBinding: true}},
		{name: "nodeAffinity/matching node", vols: []*pvB{newPV("a").affinity("zone", corev1.NodeSelectorOpIn, "z1")}, claim: newPVC("c"),
			opts: Options{Node: zone1, DelayBinding: true}, want: "a"},
		{name: "nodeAffinity/other node", vols: []*pvB{newPV("a").affinity("zone", corev1.NodeSelectorOpIn, "z2")}, claim: newPVC("c"), opts: Options{Node: zone1}},
		{name: "nodeAffinity/smaller on other node skipped", vols: []*pvB{newPV("a").affinity("zone", corev1.NodeSelectorOpIn, "z2"),
			newPV("b").cap("5Gi").affinity("zone", corev1.NodeSelectorOpIn, "z1")}, claim: newPVC("c"), opts: Options{Node: zone1}, want: "b"},
		{name: "nodeAffinity/any term may match", vols: []*pvB{newPV("a").affinity("zone", corev1.NodeSelectorOpIn, "z2").affinity("rack", corev1.NodeSelectorOpGt, "5")},
			claim: newPVC("c"), opts: Options{Node: zone1}, want: "a"},
		{name: "nodeAffinity/not checked without a node", vols: []*pvB{newPV("a").affinity("zone", corev1.NodeSelectorOpIn, "z2")}, claim: newPVC("c"), want: "a"},
		{name: "nodeAffinity/scheduler: smallest over all access-mode sets", vols: []*pvB{newPV("a").cap("100Gi"), newPV("b").modes(RWO, ROX)},
			claim: newPVC("c"), opts: Options{Node: zone1}, want: "b"},
		{name: "nodeAffinity/scheduler: pre-bound on other node blocks the claim", vols: []*pvB{this(newPV("a").affinity("zone", corev1.NodeSelectorOpIn, "z2")), newPV("b")},
			claim: newPVC("c"), opts: Options{Node: zone1}},
		{name: "nodeAffinity/scheduler: pre-bound of another class not listed", vols: []*pvB{this(newPV("a").class("gold")), newPV("b").cap("2Gi")},
			claim: newPVC("c"), opts: Options{Node: zone1}, want: "b"},

		// Exclusions.
		{name: "excluded/smallest excluded", vols: []*pvB{newPV("a"), newPV("b").cap("2Gi")}, claim: newPVC("c"), opts: Options{Exclude: only("a")}, want: "b"},
	}
}

func TestFind(t *testing.T) {
	for _, tc := range findCases() {
		t.Run(tc.name, func(t *testing.T) {
			vols := pvs(tc.vols...)
			ix := NewIndex()
			for _, v := range vols {
				ix.Upsert(v)
			}
			got, err := ix.Find(tc.claim.c, tc.opts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if name := pvName(got); name != tc.want {
				t.Errorf("Find = %q, want %q", name, tc.want)
			}
			// The expectation itself must be one of upstream's answers.
			outs, uerr := upstreamOutcomes(tc.claim.c, vols, tc.opts)
			if (uerr != nil) != tc.wantErr {
				t.Fatalf("upstream error = %v, want error %v", uerr, tc.wantErr)
			}
			if uerr == nil && !outs[tc.want] {
				t.Errorf("want %q, but upstream answers %s", tc.want, setString(outs))
			}
		})
	}
}

func pvName(pv *corev1.PersistentVolume) string {
	if pv == nil {
		return ""
	}
	return pv.Name
}

func TestIndexUpdates(t *testing.T) {
	ix := NewIndex()
	claim := newPVC("c").req("2Gi").c
	ix.Upsert(newPV("a").cap("3Gi").pv)
	ix.Upsert(newPV("b").cap("5Gi").pv)
	check := func(want string, n int) {
		t.Helper()
		got, err := ix.Find(claim, Options{})
		if err != nil || pvName(got) != want || ix.Len() != n {
			t.Fatalf("Find = %q, %v, Len %d; want %q, Len %d", pvName(got), err, ix.Len(), want, n)
		}
	}
	check("a", 2)
	ix.Upsert(newPV("a").cap("3Gi").claimRef("ns", "other", "u").pv) // a gets bound elsewhere
	check("b", 2)
	ix.Upsert(newPV("a").cap("3Gi").claimRef("ns", "c", "").pv) // re-reserved for c
	check("a", 2)
	ix.Upsert(newPV("a").cap("1Gi").pv) // shrunk, unbound
	check("b", 2)
	ix.Delete("b")
	check("", 1)
	ix.Delete("b")
	ix.Delete("a")
	check("", 0)
	if len(ix.groups) != 0 || len(ix.preBound) != 0 || ix.modeCount != [allModeSets]int{} {
		t.Errorf("empty index keeps state: %d groups, %d pre-bound, counts %v", len(ix.groups), len(ix.preBound), ix.modeCount)
	}
}

// TestBucketBlocks drives one bucket through random inserts and removals with
// small blocks (many splits and merges) against a plain sorted list.
func TestBucketBlocks(t *testing.T) {
	defer func(n int) { blockMax = n }(blockMax)
	blockMax = 8
	r := rand.New(rand.NewSource(7))
	b := &bucket{}
	var model []*entry
	live := map[string]*entry{}
	sizes := []string{"1Gi", "2Gi", "3Gi", "3072Mi", "5Gi", "10Gi"}
	for step := 0; step < 20000; step++ {
		name := fmt.Sprintf("v%03d", r.Intn(400))
		if e := live[name]; e != nil {
			b.remove(e)
			delete(live, name)
			model = slices.DeleteFunc(model, func(x *entry) bool { return x == e })
		} else {
			e := newEntry(newPV(name).cap(sizes[r.Intn(len(sizes))]).pv)
			b.insert(e)
			live[name] = e
			i := sort.Search(len(model), func(i int) bool { return !less(model[i], e) })
			model = slices.Insert(model, i, e)
		}
		var flat []*entry
		for _, blk := range b.blocks {
			if len(blk) == 0 || len(blk) > blockMax {
				t.Fatalf("step %d: block of %d slots", step, len(blk))
			}
			for _, s := range blk {
				flat = append(flat, s.e)
			}
		}
		if !slices.Equal(flat, model) || b.n != len(model) {
			t.Fatalf("step %d: bucket holds %d (n=%d), want %d in order", step, len(flat), b.n, len(model))
		}
		req := resource.MustParse(sizes[r.Intn(len(sizes))])
		want := sort.Search(len(model), func(i int) bool { return cmpQty(model[i].qty, req) >= 0 })
		q := query{req: req}
		got := b.first(&q)
		if (want == len(model)) != (got == nil) || (got != nil && got != model[want]) {
			t.Fatalf("step %d: first(%s) = %v, want index %d of %d", step, qtyString(req), got, want, len(model))
		}
	}
}

// TestConcurrent runs Find and Explain against Upsert and Delete; run with
// -race. Decimal quantities exercise Quantity.Cmp's in-place conversion, which
// must only ever touch copies.
func TestConcurrent(t *testing.T) {
	ix := NewIndex()
	sizes := []string{"1Gi", "1.5Gi", "2500m", "3Gi", "0.1"}
	var vols []*corev1.PersistentVolume
	for i := 0; i < 200; i++ {
		b := newPV(fmt.Sprintf("v%03d", i)).cap(sizes[i%len(sizes)]).labels("tier", []string{"ssd", "hdd"}[i%2])
		if i%3 == 0 {
			b.affinity("zone", corev1.NodeSelectorOpIn, "z1")
		}
		vols = append(vols, b.pv)
		ix.Upsert(b.pv)
	}
	claims := []*corev1.PersistentVolumeClaim{newPVC("a").req("1.2Gi").c, newPVC("b").req("2").matchLabels("tier", "ssd").c}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				opts := Options{}
				if (i+w)%2 == 0 {
					opts.Node = zone1
				}
				if _, err := ix.Find(claims[i%2], opts); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					Explain(claims[i%2], vols[:20], opts)
				}
			}
		}(w)
	}
	for i := 0; i < 3000; i++ {
		v := vols[(i*31)%len(vols)]
		if i%4 == 0 {
			ix.Delete(v.Name)
		}
		ix.Upsert(v)
	}
	close(done)
	wg.Wait()
	if ix.Len() != len(vols) {
		t.Errorf("Len = %d, want %d", ix.Len(), len(vols))
	}
}
