package endpointslice

import (
	"errors"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// errStale: the informer does not show a write of this controller yet.
var errStale = errors.New("EndpointSlice informer cache is out of date")

// sliceTracker remembers the controller's writes, per Service, so that a
// sync does not act on a cache older than them and the controller's own
// writes do not cause syncs. It compares resourceVersions for equality
// only: the version a write replaced, or the one it produced.
//
// (Upstream compares metadata.generation, which grows; resourceVersions
// are opaque, so what a write replaced is tracked instead.)
type sliceTracker struct {
	mu        sync.Mutex
	byService map[string]map[types.UID]*expectation
}

// expectation is what the cache should show of one slice.
type expectation struct {
	// written is the resourceVersion of the controller's last write.
	written string
	// replaced is the resourceVersion that write replaced; the cache is
	// stale while it shows it. Empty once the cache has caught up.
	replaced string
	// created: the cache is stale until it shows the slice.
	created bool
	// deleted: the cache is stale while it shows the slice.
	deleted bool
}

func newSliceTracker() *sliceTracker {
	return &sliceTracker{byService: map[string]map[types.UID]*expectation{}}
}

func serviceKey(s *discoveryv1.EndpointSlice) string {
	return s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]
}

func (t *sliceTracker) entries(key string) map[types.UID]*expectation {
	m := t.byService[key]
	if m == nil {
		m = map[types.UID]*expectation{}
		t.byService[key] = m
	}
	return m
}

// wrote records a create (replaced is empty) or an update of replaced.
func (t *sliceTracker) wrote(s *discoveryv1.EndpointSlice, replaced string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries(serviceKey(s))[s.UID] = &expectation{written: s.ResourceVersion, replaced: replaced, created: replaced == ""}
}

// deleted records a delete.
func (t *sliceTracker) deleted(s *discoveryv1.EndpointSlice) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries(serviceKey(s))[s.UID] = &expectation{deleted: true}
}

// stale reports whether the listed slices of the Service at key miss one of
// the controller's writes. Expectations the list meets are cleared.
func (t *sliceTracker) stale(key string, listed []*discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.byService[key]
	if len(m) == 0 {
		return false
	}
	shown := make(map[types.UID]string, len(listed))
	for _, s := range listed {
		shown[s.UID] = s.ResourceVersion
	}
	stale := false
	for uid, e := range m {
		rv, ok := shown[uid]
		switch {
		case e.deleted && ok, e.created && !ok, ok && e.replaced != "" && rv == e.replaced:
			stale = true
		case e.deleted:
			delete(m, uid)
		default:
			e.created, e.replaced = false, ""
		}
	}
	return stale
}

// observe is told of an added or updated slice; it reports whether the
// Service needs a sync, that is, whether the slice is not the controller's
// own last write.
func (t *sliceTracker) observe(s *discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byService[serviceKey(s)][s.UID]
	return e == nil || (!e.deleted && s.ResourceVersion != e.written)
}

// observeDeletion is told of a deleted slice; it reports whether the
// Service needs a sync, that is, whether someone else deleted it.
func (t *sliceTracker) observeDeletion(s *discoveryv1.EndpointSlice) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.byService[serviceKey(s)]
	e := m[s.UID]
	delete(m, s.UID)
	return e == nil || !e.deleted
}

// forget drops what is known of a deleted Service.
func (t *sliceTracker) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byService, key)
}
