package pvmatch

import (
	"slices"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// Options are the inputs of a match besides the claim and the volumes.
type Options struct {
	// Node selects the scheduler's way of matching (WaitForFirstConsumer, a
	// pod being placed on Node): volumes of the claim's class only, node
	// affinity and access modes checked per volume, smallest overall wins.
	// nil selects the PV controller's way (access-mode groups, fewest modes
	// first).
	Node *corev1.Node
	// DelayBinding is true for claims whose StorageClass is
	// WaitForFirstConsumer. With Node nil only volumes pre-bound to the claim
	// can match, as in upstream's PV controller; with Node set it is ignored.
	DelayBinding bool
	// Exclude reports volumes that must not be chosen (for example ones
	// assumed by an in-flight bind). It may be nil. It is called with the
	// index read-locked and must not modify the index.
	Exclude func(pvName string) bool
}

// groupKey partitions candidate volumes by the attributes a claim must equal.
type groupKey struct {
	class      string
	volumeMode string
	vac        string // always "" while vacEnabled is false
}

// entry is one indexed volume with what matching needs, computed once.
type entry struct {
	pv         *corev1.PersistentVolume
	name       string
	qty        resource.Quantity
	modes      modeSet
	rawModes   []corev1.PersistentVolumeAccessMode
	class      string
	volumeMode string
	vac        string
	labels     map[string]string
	deleting   bool
	phase      corev1.PersistentVolumePhase
	affinity   nodeAffinity
	hasClaim   bool      // spec.claimRef is set
	claimRef   claimName // its namespace and name
	claimUID   types.UID
	sig        uint64  // labelSig(labels)
	bucket     *bucket // where the entry is stored as a candidate, or nil
}

func newEntry(pv *corev1.PersistentVolume) *entry {
	e := &entry{
		pv:         pv,
		name:       pv.Name,
		qty:        pv.Spec.Capacity[corev1.ResourceStorage],
		rawModes:   pv.Spec.AccessModes,
		class:      VolumeClass(pv),
		volumeMode: volumeMode(pv.Spec.VolumeMode),
		vac:        deref(pv.Spec.VolumeAttributesClassName),
		labels:     pv.Labels,
		deleting:   pv.DeletionTimestamp != nil,
		phase:      pv.Status.Phase,
		affinity:   parseNodeAffinity(pv),
		sig:        labelSig(pv.Labels),
	}
	e.modes, _ = modesOf(pv.Spec.AccessModes)
	if ref := pv.Spec.ClaimRef; ref != nil {
		e.hasClaim, e.claimRef, e.claimUID = true, claimName{ref.Namespace, ref.Name}, ref.UID
	}
	return e
}

// candidate reports whether the volume can be bound to a claim that it is not
// pre-bound to: no claimRef, Available, not being deleted, and (gate off) no
// VolumeAttributesClass. Only candidates live in the capacity-sorted buckets.
func (e *entry) candidate() bool {
	return !e.hasClaim && e.phase == corev1.VolumeAvailable && !e.deleting && (vacEnabled || e.vac == "")
}

func less(a, b *entry) bool {
	if c := cmpQty(a.qty, b.qty); c != 0 {
		return c < 0
	}
	return a.name < b.name
}

// bucket holds the candidates of one group and one access-mode set, sorted by
// capacity, then name, in blocks of at most blockMax slots: a two-level
// B-tree. Insert and remove move at most one block's slots and one block
// header list, so they stay in the microseconds at 100k volumes, while walks
// still read contiguous memory.
type bucket struct {
	blocks [][]slot // non-empty, each sorted, concatenation sorted
	n      int
}

// blockMax bounds a block; a variable so tests can force splits and merges.
var blockMax = 512

// slot keeps an entry's label signature inline, so that walking past volumes
// a selector rejects mostly reads one contiguous slice.
type slot struct {
	e   *entry
	sig uint64
}

// blockFor is the first block whose last slot satisfies atOrAfter, a
// predicate that is false before some position in the order and true after.
func (b *bucket) blockFor(atOrAfter func(*entry) bool) int {
	return sort.Search(len(b.blocks), func(i int) bool { blk := b.blocks[i]; return atOrAfter(blk[len(blk)-1].e) })
}

// lowerBound is the position (block, index) of the first volume of at least qty.
func (b *bucket) lowerBound(qty resource.Quantity) (int, int) {
	atLeast := func(e *entry) bool { return cmpQty(e.qty, qty) >= 0 }
	bi := b.blockFor(atLeast)
	if bi == len(b.blocks) {
		return bi, 0
	}
	blk := b.blocks[bi]
	return bi, sort.Search(len(blk), func(i int) bool { return atLeast(blk[i].e) })
}

func (b *bucket) insert(e *entry) {
	e.bucket = b
	b.n++
	notBefore := func(x *entry) bool { return !less(x, e) }
	bi := b.blockFor(notBefore)
	if bi == len(b.blocks) { // after every slot: append to the last block
		if bi == 0 {
			b.blocks = append(b.blocks, make([]slot, 0, 8))
		} else {
			bi--
		}
	}
	blk := b.blocks[bi]
	i := sort.Search(len(blk), func(i int) bool { return notBefore(blk[i].e) })
	blk = slices.Insert(blk, i, slot{e: e, sig: e.sig})
	if len(blk) <= blockMax {
		b.blocks[bi] = blk
		return
	}
	half := len(blk) / 2
	right := append(make([]slot, 0, blockMax), blk[half:]...)
	b.blocks[bi] = slices.Clip(blk[:half])
	b.blocks = slices.Insert(b.blocks, bi+1, right)
}

func (b *bucket) remove(e *entry) {
	e.bucket = nil
	notBefore := func(x *entry) bool { return !less(x, e) }
	bi := b.blockFor(notBefore)
	if bi == len(b.blocks) {
		return
	}
	blk := b.blocks[bi]
	i := sort.Search(len(blk), func(i int) bool { return notBefore(blk[i].e) })
	if i == len(blk) || blk[i].e != e {
		return
	}
	b.n--
	blk = slices.Delete(blk, i, i+1)
	switch {
	case len(blk) == 0:
		b.blocks = slices.Delete(b.blocks, bi, bi+1)
		return
	case len(blk) < blockMax/4 && bi+1 < len(b.blocks) && len(blk)+len(b.blocks[bi+1]) <= blockMax:
		blk = append(blk, b.blocks[bi+1]...) // merge a small block into its neighbour
		b.blocks = slices.Delete(b.blocks, bi+1, bi+2)
	}
	b.blocks[bi] = blk
}

// first is the smallest (then first-named) volume of at least the requested
// size that passes the claim's per-volume checks. It walks upward from the
// lower bound, so its cost is O(log n) plus the volumes it has to skip.
func (b *bucket) first(q *query) *entry {
	if b == nil {
		return nil
	}
	bi, i := b.lowerBound(q.req)
	for ; bi < len(b.blocks); bi, i = bi+1, 0 {
		for _, s := range b.blocks[bi][i:] {
			if q.sigOK(s.sig) && q.unboundOK(s.e) {
				return s.e
			}
		}
	}
	return nil
}

type group struct {
	buckets [allModeSets]*bucket
	n       int
}

// Index holds the volumes a claim may bind to, by class, volume mode and
// access-mode set, sorted by capacity, so that a match costs O(log N) plus
// the volumes of equal or larger size that a selector, an exclusion or node
// affinity rejects before the answer. It is safe for concurrent use: Find
// and Len share a read lock, Upsert and Delete take the write lock.
type Index struct {
	mu       sync.RWMutex
	byName   map[string]*entry
	preBound map[claimName][]*entry // by spec.claimRef namespace/name
	groups   map[groupKey]*group
	// modeCount counts all volumes by access-mode set, candidates or not:
	// upstream's index lists a bucket key as long as any volume has it.
	modeCount [allModeSets]int
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{
		byName:   map[string]*entry{},
		preBound: map[claimName][]*entry{},
		groups:   map[groupKey]*group{},
	}
}

// Upsert adds pv or replaces the volume of the same name. The index keeps
// the pointer and reads it later (Find returns it): do not modify pv
// afterwards, Upsert a new object instead.
func (ix *Index) Upsert(pv *corev1.PersistentVolume) {
	if pv == nil {
		return
	}
	e := newEntry(pv)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old := ix.byName[e.name]; old != nil {
		ix.remove(old)
	}
	ix.byName[e.name] = e
	ix.modeCount[e.modes]++
	switch {
	case e.hasClaim:
		ix.preBound[e.claimRef] = append(ix.preBound[e.claimRef], e)
	case e.candidate():
		k := groupKey{class: e.class, volumeMode: e.volumeMode, vac: e.vac}
		g := ix.groups[k]
		if g == nil {
			g = &group{}
			ix.groups[k] = g
		}
		if g.buckets[e.modes] == nil {
			g.buckets[e.modes] = &bucket{}
		}
		g.buckets[e.modes].insert(e)
		g.n++
	}
}

// Delete removes the volume of that name, if present.
func (ix *Index) Delete(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e := ix.byName[name]; e != nil {
		ix.remove(e)
	}
}

func (ix *Index) remove(e *entry) {
	delete(ix.byName, e.name)
	ix.modeCount[e.modes]--
	if e.hasClaim {
		list := slices.DeleteFunc(ix.preBound[e.claimRef], func(x *entry) bool { return x == e })
		if len(list) == 0 {
			delete(ix.preBound, e.claimRef)
		} else {
			ix.preBound[e.claimRef] = list
		}
	}
	if b := e.bucket; b != nil {
		b.remove(e)
		k := groupKey{class: e.class, volumeMode: e.volumeMode, vac: e.vac}
		if g := ix.groups[k]; g != nil {
			if b.n == 0 {
				g.buckets[e.modes] = nil
			}
			if g.n--; g.n == 0 {
				delete(ix.groups, k)
			}
		}
	}
}

// Len is the number of volumes in the index.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byName)
}

// modeLevels lists every access-mode set by number of modes.
var modeLevels = func() (l [5][]modeSet) {
	for m := modeSet(0); m < allModeSets; m++ {
		l[m.count()] = append(l[m.count()], m)
	}
	return l
}()

// Find returns the volume upstream's matcher would bind claim to, or nil.
// Where upstream's answer depends on map or informer order, Find picks the
// one documented in the package comment. claim.spec.volumeName is not looked
// at: a claim that names its volume is bound by the binder, not matched.
func (ix *Index) Find(claim *corev1.PersistentVolumeClaim, opts Options) (*corev1.PersistentVolume, error) {
	q := newQuery(claim, opts)
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var e *entry
	var err error
	if q.node != nil {
		e, err = ix.findScheduler(&q)
	} else {
		e, err = ix.findController(&q)
	}
	if e == nil {
		return nil, err
	}
	return e.pv, err
}

// findController is the PV controller's findByClaim: access-mode buckets that
// hold every requested mode, fewest modes first, each searched with
// FindMatchingVolume(node=nil) until one yields a volume.
func (ix *Index) findController(q *query) (*entry, error) {
	if q.unknownModes {
		return nil, nil // no bucket key holds a mode upstream does not know
	}
	if q.err != nil {
		// Upstream reports claim errors from FindMatchingVolume, which it only
		// calls for buckets that exist.
		for m := modeSet(0); m < allModeSets; m++ {
			if ix.modeCount[m] > 0 && m.contains(q.modes) {
				return nil, q.err
			}
		}
		return nil, nil
	}
	g := ix.groups[q.group]
	pre := ix.preBound[q.claim]
	for level := q.modes.count(); level < len(modeLevels); level++ {
		var best *entry
		for _, e := range pre {
			if e.modes.count() == level && e.modes.contains(q.modes) && q.preBoundOK(e) &&
				(best == nil || e.name < best.name) {
				best = e
			}
		}
		if best != nil {
			return best, nil
		}
		if g == nil || q.delay {
			continue // WaitForFirstConsumer: unbound volumes are the scheduler's
		}
		for _, m := range modeLevels[level] {
			if !m.contains(q.modes) {
				continue
			}
			if e := g.buckets[m].first(q); e != nil && (best == nil || less(e, best)) {
				best = e
			}
		}
		if best != nil {
			return best, nil
		}
	}
	return nil, nil
}

// findScheduler is the volume binder's findMatchingVolumes for one claim:
// FindMatchingVolume(node, delayBinding=true) over the volumes of the claim's
// class, with node affinity and access modes checked per volume.
func (ix *Index) findScheduler(q *query) (*entry, error) {
	if q.err != nil {
		return nil, q.err
	}
	var pre *entry
	blocked := false
	for _, e := range ix.preBound[q.claim] {
		if e.class != q.class || !q.preBoundOK(e) {
			continue
		}
		if !e.affinity.matches(q.nodeLabels) {
			blocked = true // upstream returns "no match" when it meets this one first
			continue
		}
		if pre == nil || e.name < pre.name {
			pre = e
		}
	}
	if pre != nil || blocked {
		return pre, nil
	}
	g := ix.groups[q.group]
	if g == nil {
		return nil, nil
	}
	var best *entry
	for m := modeSet(0); m < allModeSets; m++ {
		if !m.contains(q.modes) {
			continue
		}
		if e := g.buckets[m].first(q); e != nil && (best == nil || less(e, best)) {
			best = e
		}
	}
	return best, nil
}
