package replicaset

import (
	"sync"
	"time"
)

// expectationsTimeout is how long an owner waits for the informer to show
// the creates and deletes it made before it syncs anyway (upstream's
// ExpectationsTimeout): a lost watch event must not stall it for ever.
const expectationsTimeout = 5 * time.Minute

// expectations are upstream's UIDTrackingControllerExpectations: per owner,
// how many of the pods it created and which of the pods it deleted the
// informer has not shown yet. An owner does not create or delete pods while
// it still expects some, so that a sync never acts twice on a cache that
// lags behind its own writes.
type expectations struct {
	mu     sync.Mutex
	owners map[string]*expected
	now    func() time.Time
}

type expected struct {
	creates int
	deletes map[string]bool // pod keys
	since   time.Time
}

func newExpectations() *expectations {
	return &expectations{owners: map[string]*expected{}, now: time.Now}
}

// satisfied tells whether the owner may act: it expects nothing, or has
// waited past the timeout.
func (e *expectations) satisfied(owner string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.owners[owner]
	if !ok {
		return true
	}
	return (x.creates <= 0 && len(x.deletes) == 0) || e.now().Sub(x.since) > expectationsTimeout
}

// expectCreations replaces the owner's expectations with n creates.
func (e *expectations) expectCreations(owner string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.owners[owner] = &expected{creates: n, since: e.now()}
}

// expectDeletions replaces the owner's expectations with the deletion of
// the pods of these keys.
func (e *expectations) expectDeletions(owner string, podKeys []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &expected{deletes: make(map[string]bool, len(podKeys)), since: e.now()}
	for _, k := range podKeys {
		x.deletes[k] = true
	}
	e.owners[owner] = x
}

// creationObserved lowers the creates the owner expects by one: the informer
// showed one, or a create was not made after all.
func (e *expectations) creationObserved(owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.owners[owner]; ok {
		x.creates--
	}
}

// deletionObserved marks the deletion of a pod the owner deleted as seen.
func (e *expectations) deletionObserved(owner, podKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.owners[owner]; ok {
		delete(x.deletes, podKey)
	}
}

// forget drops the owner's expectations (it was deleted; one of the same
// name starts clean).
func (e *expectations) forget(owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.owners, owner)
}
