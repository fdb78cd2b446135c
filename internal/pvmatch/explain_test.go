package pvmatch

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

type wantVerdict struct {
	volume, rule string
	fits         bool
	reason       string // a substring of Reason
}

func checkVerdicts(t *testing.T, got []Verdict, want []wantVerdict) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d verdicts, want %d:\n%s", len(got), len(want), verdictsString(got))
	}
	for i, w := range want {
		g := got[i]
		if g.Volume != w.volume || g.Rule != w.rule || g.Fits != w.fits || !strings.Contains(g.Reason, w.reason) {
			t.Errorf("verdict %d = %+v\nwant %s %s fits=%v reason containing %q\nall:\n%s", i, g, w.volume, w.rule, w.fits, w.reason, verdictsString(got))
		}
	}
}

func verdictsString(vs []Verdict) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString("  " + v.Volume + " " + v.Rule + ": " + v.Reason + "\n")
	}
	return b.String()
}

// A Pending claim on the PV controller path: every volume fails a different
// rule, in upstream's order of checks.
func TestExplainController(t *testing.T) {
	claim := newPVC("c").class("gold").req("5Gi").matchLabels("tier", "ssd").c
	gold := func(name string) *pvB { return newPV(name).class("gold").cap("10Gi").labels("tier", "ssd") }
	vols := pvs(
		gold("rox").modes(ROX),
		gold("bigger").cap("20Gi"),
		gold("small").cap("1Gi"),
		gold("silver").class("silver"),
		gold("hdd").labels("tier", "hdd"),
		gold("block").mode(corev1.PersistentVolumeBlock),
		gold("taken").claimRef("ns", "other", "u1"),
		gold("reserved").claimRef("ns", "other", ""),
		gold("dying").deleting(),
		gold("released").phase(corev1.VolumeReleased),
		gold("vac").vac("fast"),
		gold("wide").modes(RWO, ROX).cap("6Gi"),
		gold("chosen"),
	)
	checkVerdicts(t, Explain(claim, vols, Options{}), []wantVerdict{
		{"chosen", "chosen", true, "smallest Available volume holding the request 5Gi in the first access-mode group (RWO)"},
		{"bigger", "notChosen", true, "chosen is smaller (10Gi vs 20Gi)"},
		{"wide", "notChosen", true, "chosen has fewer access modes (RWO vs RWO,ROX)"},
		{"silver", "class", false, `storage class "silver" differs from the claim's "gold"`},
		{"hdd", "selector", false, "labels tier=hdd do not match the claim's selector tier=ssd"},
		{"released", "phase", false, "phase is Released, not Available"},
		{"dying", "deleting", false, "deletionTimestamp"},
		{"vac", "volumeAttributesClass", false, `volumeAttributesClassName "fast"`},
		{"block", "volumeMode", false, "volumeMode Block does not match the claim's Filesystem"},
		{"small", "capacity", false, "capacity 1Gi is less than the claim's request 5Gi; it needs at least 5Gi"},
		{"reserved", "preBoundElsewhere", false, "reserved for claim ns/other"},
		{"taken", "boundToOther", false, "bound to claim ns/other"},
		{"rox", "accessModes", false, "access modes ROX do not include every mode the claim requests (RWO)"},
	})
}

func TestExplainPreBound(t *testing.T) {
	claim := newPVC("c").class("gold").c
	vols := pvs(
		newPV("plain").class("gold"),
		newPV("mine").class("silver").cap("50Gi").claimRef("ns", "c", ""),
		newPV("old").claimRef("ns", "c", "uid-previous"),
	)
	checkVerdicts(t, Explain(claim, vols, Options{}), []wantVerdict{
		{"mine", "chosen", true, "pre-bound to this claim"},
		{"plain", "notChosen", true, "mine is pre-bound to this claim"},
		{"old", "boundToOther", false, "bound to an earlier claim ns/c"},
	})
}

// WaitForFirstConsumer: without a node only pre-bound volumes count; with a
// node the scheduler's rules apply (smallest over all access-mode sets).
func TestExplainDelayBinding(t *testing.T) {
	claim := newPVC("c").req("5Gi").c
	vols := pvs(
		newPV("near").cap("10Gi").affinity("zone", corev1.NodeSelectorOpIn, "z1"),
		newPV("far").cap("6Gi").affinity("zone", corev1.NodeSelectorOpIn, "z2"),
		newPV("wide").modes(RWO, ROX).cap("8Gi"),
		newPV("gold").class("gold").cap("8Gi"),
	)
	checkVerdicts(t, Explain(claim, vols, Options{DelayBinding: true}), []wantVerdict{
		{"far", "delayBinding", false, "WaitForFirstConsumer"},
		{"gold", "delayBinding", false, "WaitForFirstConsumer"}, // checked before class, as upstream
		{"near", "delayBinding", false, "WaitForFirstConsumer"},
		{"wide", "delayBinding", false, "WaitForFirstConsumer"},
	})
	checkVerdicts(t, Explain(claim, vols, Options{DelayBinding: true, Node: zone1}), []wantVerdict{
		{"wide", "chosen", true, "fits node n1"},
		{"near", "notChosen", true, "wide is smaller (8Gi vs 10Gi)"},
		{"far", "nodeAffinity", false, "node affinity does not match the labels of node n1"},
		{"gold", "class", false, `storage class "gold" differs from the claim's ""`},
	})
}

func TestExplainInvalidClaim(t *testing.T) {
	claim := newPVC("c").expr("tier", "Near", "ssd").c
	checkVerdicts(t, Explain(claim, pvs(newPV("a")), Options{}), []wantVerdict{
		{"a", "claimInvalid", false, "error creating internal label selector for claim: ns/c"},
	})
}

func TestExplainMatchesFind(t *testing.T) {
	for _, tc := range findCases() {
		if tc.wantErr {
			continue
		}
		vs := Explain(tc.claim.c, pvs(tc.vols...), tc.opts)
		if tc.want == "" {
			if len(vs) > 0 && vs[0].Rule == "chosen" {
				t.Errorf("%s: Explain chose %s, Find chooses none", tc.name, vs[0].Volume)
			}
			continue
		}
		if vs[0].Volume != tc.want || vs[0].Rule != "chosen" {
			t.Errorf("%s: Explain first %+v, want %s chosen", tc.name, vs[0], tc.want)
		}
	}
}
