package daemonset

import (
	"sync"
	"time"
)

// expectationsTTL is how long unobserved creations and deletions hold a
// daemon set back before it syncs anyway, as upstream.
const expectationsTTL = 5 * time.Minute

// expectations count, per daemon set, the pod creations and deletions it
// made that the informer has not shown yet (upstream's
// ControllerExpectations): pods are created with generated names, so
// syncing before they show would create them twice.
type expectations struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[string]*expected
}

type expected struct {
	add, del int
	at       time.Time
}

func newExpectations(now func() time.Time) *expectations {
	return &expectations{now: now, m: map[string]*expected{}}
}

// set replaces what key expects.
func (e *expectations) set(key string, add, del int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[key] = &expected{add: add, del: del, at: e.now()}
}

// lower decreases what key expects (an observation, or a request that
// failed or was skipped).
func (e *expectations) lower(key string, add, del int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		x.add -= add
		x.del -= del
	}
}

func (e *expectations) creationObserved(key string) { e.lower(key, 1, 0) }
func (e *expectations) deletionObserved(key string) { e.lower(key, 0, 1) }

// satisfied says whether key may sync pods: nothing expected, everything
// observed, or the expectations expired.
func (e *expectations) satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	return !ok || x.add <= 0 && x.del <= 0 || e.now().Sub(x.at) > expectationsTTL
}

// forget drops key (its daemon set was deleted).
func (e *expectations) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
