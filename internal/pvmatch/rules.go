package pvmatch

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
)

// vacEnabled mirrors the VolumeAttributesClass feature gate, off by default in
// Kubernetes 1.33. With the gate off upstream refuses claims that name a VAC
// and never binds volumes that carry one; with it on the names must be equal.
// Volumes are grouped by VAC name (see groupKey), so enabling it only needs
// the claim side of query.group to use the claim's VAC name.
const vacEnabled = false

// modeSet is a set of the access modes upstream knows, as a bit mask. An
// upstream access-mode bucket (GetAccessModesAsString: "RWO,ROX,RWX,RWOP"
// order, duplicates and unknown modes dropped) is exactly one modeSet.
type modeSet uint8

const (
	modeRWO modeSet = 1 << iota
	modeROX
	modeRWX
	modeRWOP
	allModeSets = 16
)

var modeBits = []struct {
	mode  corev1.PersistentVolumeAccessMode
	bit   modeSet
	short string
}{
	{corev1.ReadWriteOnce, modeRWO, "RWO"},
	{corev1.ReadOnlyMany, modeROX, "ROX"},
	{corev1.ReadWriteMany, modeRWX, "RWX"},
	{corev1.ReadWriteOncePod, modeRWOP, "RWOP"},
}

// modesOf returns the known modes in modes and whether any mode was unknown.
func modesOf(modes []corev1.PersistentVolumeAccessMode) (set modeSet, unknown bool) {
next:
	for _, m := range modes {
		for _, b := range modeBits {
			if m == b.mode {
				set |= b.bit
				continue next
			}
		}
		unknown = true
	}
	return set, unknown
}

func (m modeSet) count() int              { return bits.OnesCount8(uint8(m)) }
func (m modeSet) contains(o modeSet) bool { return m&o == o }

// String is upstream's bucket key, e.g. "RWO,ROX"; "none" for the empty set.
func (m modeSet) String() string {
	var parts []string
	for _, b := range modeBits {
		if m&b.bit != 0 {
			parts = append(parts, b.short)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// ClaimClass is upstream's GetPersistentVolumeClaimClass: the beta annotation
// wins, then spec.storageClassName; unset and "" are both "".
func ClaimClass(c *corev1.PersistentVolumeClaim) string {
	if class, ok := c.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		return class
	}
	if c.Spec.StorageClassName != nil {
		return *c.Spec.StorageClassName
	}
	return ""
}

// VolumeClass is upstream's GetPersistentVolumeClass: the beta annotation
// wins over spec.storageClassName.
func VolumeClass(pv *corev1.PersistentVolume) string {
	if class, ok := pv.Annotations[corev1.BetaStorageClassAnnotation]; ok {
		return class
	}
	return pv.Spec.StorageClassName
}

// volumeMode defaults nil to Filesystem, as CheckVolumeModeMismatches does on
// both sides.
func volumeMode(m *corev1.PersistentVolumeMode) string {
	if m == nil {
		return string(corev1.PersistentVolumeFilesystem)
	}
	return string(*m)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// cmpQty compares copies: Quantity.Cmp may rewrite its receiver into decimal
// form, which must never happen to a quantity shared under a read lock.
func cmpQty(a, b resource.Quantity) int { return a.Cmp(b) }

func qtyString(q resource.Quantity) string { return q.String() }

// nodeAffinity is a PV's spec.nodeAffinity.required, parsed once, evaluated
// like component-helpers' CheckNodeAffinity: a nil affinity or nil required
// matches every node; otherwise some non-empty term must match. Upstream
// evaluates against a Node carrying only the labels (no name), so matchFields
// are parsed (a malformed one spoils its term) but never compared, and a term
// that parses and has only matchFields matches any node.
type nodeAffinity struct {
	always bool
	terms  []labels.Selector
}

var nodeOps = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn:           selection.In,
	corev1.NodeSelectorOpNotIn:        selection.NotIn,
	corev1.NodeSelectorOpExists:       selection.Exists,
	corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt:           selection.GreaterThan,
	corev1.NodeSelectorOpLt:           selection.LessThan,
}

func parseNodeAffinity(pv *corev1.PersistentVolume) nodeAffinity {
	na := pv.Spec.NodeAffinity
	if na == nil || na.Required == nil {
		return nodeAffinity{always: true}
	}
	var a nodeAffinity
	for _, t := range na.Required.NodeSelectorTerms {
		if len(t.MatchExpressions) == 0 && len(t.MatchFields) == 0 {
			continue // an empty term selects nothing
		}
		if sel, ok := parseTerm(t); ok {
			a.terms = append(a.terms, sel)
		}
	}
	return a
}

func parseTerm(t corev1.NodeSelectorTerm) (labels.Selector, bool) {
	sel := labels.Everything()
	if len(t.MatchExpressions) > 0 {
		sel = labels.NewSelector()
		for _, e := range t.MatchExpressions {
			op, ok := nodeOps[e.Operator]
			if !ok {
				return nil, false
			}
			r, err := labels.NewRequirement(e.Key, op, e.Values)
			if err != nil {
				return nil, false
			}
			sel = sel.Add(*r)
		}
	}
	for _, f := range t.MatchFields {
		if (f.Operator != corev1.NodeSelectorOpIn && f.Operator != corev1.NodeSelectorOpNotIn) || len(f.Values) != 1 {
			return nil, false
		}
	}
	return sel, true
}

func (a *nodeAffinity) matches(nodeLabels labels.Set) bool {
	if a.always {
		return true
	}
	for _, t := range a.terms {
		if t.Matches(nodeLabels) {
			return true
		}
	}
	return false
}

// claimName is a claim's namespace and name.
type claimName struct{ namespace, name string }

func (c claimName) String() string { return c.namespace + "/" + c.name }

// A label signature is a 64-bit Bloom filter of a volume's labels: one bit
// per key=value pair and one per key. It is stored next to each entry in the
// buckets so that a selector's positive requirements (matchLabels, In,
// Exists) reject most non-matching volumes without touching them. A set bit
// proves nothing; a missing bit proves the requirement fails.
var sigSeed = maphash.MakeSeed()

func sigBit(key, value string, pair bool) uint64 {
	var h maphash.Hash
	h.SetSeed(sigSeed)
	h.WriteString(key)
	if pair {
		h.WriteByte(0)
		h.WriteString(value)
	}
	return 1 << (h.Sum64() & 63)
}

func labelSig(ls map[string]string) uint64 {
	var sig uint64
	for k, v := range ls {
		sig |= sigBit(k, v, true) | sigBit(k, "", false)
	}
	return sig
}

// selectorSig returns, for each positive requirement of sel (up to len(out)),
// the bits of which a matching volume's signature has at least one.
func selectorSig(sel labels.Selector, out *[8]uint64) int {
	reqs, _ := sel.Requirements()
	n := 0
	for i := range reqs {
		if n == len(out) {
			break
		}
		r := &reqs[i]
		var need uint64
		switch r.Operator() {
		case selection.In, selection.Equals, selection.DoubleEquals:
			for _, v := range r.ValuesUnsorted() {
				need |= sigBit(r.Key(), v, true)
			}
		case selection.Exists, selection.GreaterThan, selection.LessThan:
			need = sigBit(r.Key(), "", false)
		default:
			continue // negative requirements hold for volumes without the label
		}
		out[n] = need
		n++
	}
	return n
}

// query is a claim and the options of one match, with everything derived
// from them computed once.
type query struct {
	claim        claimName
	uid          types.UID
	class        string
	group        groupKey // class, volume mode and VAC of the wanted volumes
	req          resource.Quantity
	modes        modeSet
	unknownModes bool
	rawModes     []corev1.PersistentVolumeAccessMode
	selector     labels.Selector // nil: no selector
	need         [8]uint64       // selector signature (selectorSig)
	nNeed        int
	err          error // claim-level error upstream returns
	node         *corev1.Node
	nodeLabels   labels.Set
	delay        bool
	exclude      func(string) bool
}

func newQuery(c *corev1.PersistentVolumeClaim, opts Options) query {
	q := query{
		claim:    claimName{c.Namespace, c.Name},
		uid:      c.UID,
		class:    ClaimClass(c),
		req:      c.Spec.Resources.Requests[corev1.ResourceStorage],
		rawModes: c.Spec.AccessModes,
		node:     opts.Node,
		delay:    opts.DelayBinding,
		exclude:  opts.Exclude,
	}
	q.group = groupKey{class: q.class, volumeMode: volumeMode(c.Spec.VolumeMode)}
	q.modes, q.unknownModes = modesOf(c.Spec.AccessModes)
	if opts.Node != nil {
		q.nodeLabels = labels.Set(opts.Node.Labels)
	}
	if vac := deref(c.Spec.VolumeAttributesClassName); vac != "" {
		if !vacEnabled {
			q.err = fmt.Errorf("unsupported volumeAttributesClassName is set on claim %s when the feature-gate VolumeAttributesClass is disabled", q.claim)
			return q
		}
		q.group.vac = vac
	}
	if c.Spec.Selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(c.Spec.Selector)
		if err != nil {
			q.err = fmt.Errorf("error creating internal label selector for claim: %v: %v", q.claim, err)
			return q
		}
		q.selector = sel
		q.nNeed = selectorSig(sel, &q.need)
	}
	return q
}

func (q *query) excluded(name string) bool { return q.exclude != nil && q.exclude(name) }

// boundToClaim is IsVolumeBoundToClaim for an entry already known to carry a
// claimRef naming this claim's namespace/name.
func (q *query) boundToClaim(e *entry) bool { return e.claimUID == "" || e.claimUID == q.uid }

// preBoundOK applies the checks upstream makes before it returns a volume
// pre-bound to the claim: exclusion, size, volume mode, VAC, deletion.
// Class, phase and selector are not checked; node affinity is the caller's.
func (q *query) preBoundOK(e *entry) bool {
	return q.boundToClaim(e) && !q.excluded(e.name) && cmpQty(e.qty, q.req) >= 0 &&
		e.volumeMode == q.group.volumeMode && vacFits(e.vac, q.group.vac) && !e.deleting
}

func vacFits(volumeVAC, claimVAC string) bool {
	if !vacEnabled {
		return volumeVAC == ""
	}
	return volumeVAC == claimVAC
}

// sigOK is the cheap, inline part of the selector check: false only if the
// label signature proves the selector does not match.
func (q *query) sigOK(sig uint64) bool {
	for _, need := range q.need[:q.nNeed] {
		if sig&need == 0 {
			return false
		}
	}
	return true
}

// unboundOK applies the per-volume checks the index cannot answer by
// position: selector, exclusion, and on the scheduler path node affinity and
// (only for modes upstream does not know) raw access modes.
func (q *query) unboundOK(e *entry) bool {
	if q.selector != nil && !q.selector.Matches(labels.Set(e.labels)) {
		return false
	}
	if q.excluded(e.name) {
		return false
	}
	if q.node != nil {
		if !e.affinity.matches(q.nodeLabels) {
			return false
		}
		if q.unknownModes && !hasAllModes(e.rawModes, q.rawModes) {
			return false
		}
	}
	return true
}

// hasAllModes is CheckAccessModes: every wanted mode is among have.
func hasAllModes(have, want []corev1.PersistentVolumeAccessMode) bool {
next:
	for _, w := range want {
		for _, h := range have {
			if h == w {
				continue next
			}
		}
		return false
	}
	return true
}
