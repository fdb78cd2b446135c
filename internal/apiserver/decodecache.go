package apiserver

import (
	"sync"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
)

// decodeCache shares the decoding of recent revisions between watches. Every
// watch on a resource receives every change under its prefix and must
// decode it to apply its selectors; a hundred kubelets watching the pods
// bound to them would otherwise decode each pod change a hundred times (and
// its previous revision as many times again). Upstream's watch cache decodes
// each event once for the same reason.
//
// Objects from the cache are shared: readers must not modify them (the
// watch path copies the one object it changes).
type decodeCache struct {
	mu      sync.Mutex
	entries map[decodeKey]*decoded
	ring    []decodeKey // insertion order; the oldest is evicted
	next    int
}

type decodeKey struct {
	res *registry.Resource
	key string
	rev int64
}

// decoded is one revision's object, decoded by the first reader, with its
// fields for field selectors, computed by the first that needs them.
type decoded struct {
	res  *registry.Resource
	once sync.Once
	obj  runtime.Object
	err  error

	fieldsOnce sync.Once
	fields     fields.Set
}

// fieldSet is fieldSet(res, obj), computed once.
func (d *decoded) fieldSet() fields.Set {
	d.fieldsOnce.Do(func() { d.fields = fieldSet(d.res, d.obj) })
	return d.fields
}

// matches is sel.matches for a shared object.
func (d *decoded) matches(sel selectors) bool { return sel.matchesWith(d.obj, d.fieldSet) }

// decodeCacheSize bounds the revisions kept: enough for a burst of writes
// fanned out to watchers a little behind one another.
const decodeCacheSize = 2048

func newDecodeCache(size int) *decodeCache {
	return &decodeCache{entries: make(map[decodeKey]*decoded, size), ring: make([]decodeKey, size)}
}

// decode returns the shared object for kv as res, decoding it once.
func (c *decodeCache) decode(o *objects, res *registry.Resource, kv store.KeyValue) (*decoded, error) {
	k := decodeKey{res: res, key: kv.Key, rev: kv.ModRevision}
	c.mu.Lock()
	d, ok := c.entries[k]
	if !ok {
		d = &decoded{res: res}
		if old := c.ring[c.next]; old.res != nil {
			delete(c.entries, old)
		}
		c.ring[c.next] = k
		c.next = (c.next + 1) % len(c.ring)
		c.entries[k] = d
	}
	c.mu.Unlock()
	d.once.Do(func() { d.obj, d.err = o.decode(res, kv) })
	return d, d.err
}
