package apiserver

import (
	"context"
	"strings"
	"sync"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
)

// watchHub serves the API's watches on one resource from one store watch,
// as upstream's watch cache does: on etcd, every API watch being its own
// etcd watch made etcd send each change once per watcher (a hundred
// kubelets watching their pods: every pod change a hundred times); on the
// embedded store, one hub per resource also costs less than a store watcher
// per API watch (docs/benchmarks.md, "Scale"). The hub
// keeps the last hubHistory events, so a watch that starts at a revision
// the hub has seen since it began is served from memory and then live;
// older ones go to the store directly (which answers 410 Gone when
// compacted). A watcher that falls behind, and every watcher when the
// store watch ends, is closed with store.ErrSlowConsumer: the API watch
// then resumes from the last revision it sent, as it does with the store.
type watchHub struct {
	st     store.Store
	prefix string // the resource's, every namespace

	mu      sync.Mutex
	running bool
	covered int64         // the hub has every event after this revision
	ring    []store.Event // the latest events: a circular buffer
	head, n int           // the oldest event's index, and how many
	subs    map[*hubWatch]struct{}
}

const (
	hubHistory = 4096 // events kept for watches starting a little back
	hubBuffer  = 1024 // events a watcher may have unread before it is closed
)

type hubWatch struct {
	prefix string
	after  int64
	ch     chan store.Event
	once   sync.Once
	err    error // set before ch is closed
}

func (w *hubWatch) finish(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.ch)
	})
}

// watchHubs holds one hub per resource, made on first use.
type watchHubs struct {
	st   store.Store
	mu   sync.Mutex
	hubs map[*registry.Resource]*watchHub
}

// watch is store.Watch for res under prefix, through the resource's hub
// when it can serve afterRevision.
func (h *watchHubs) watch(ctx context.Context, res *registry.Resource, prefix string, afterRevision int64) (store.WatchResult, error) {
	if afterRevision == 0 {
		return h.st.Watch(ctx, prefix, afterRevision)
	}
	h.mu.Lock()
	hub := h.hubs[res]
	if hub == nil {
		hub = &watchHub{st: h.st, prefix: res.KeyPrefix(""), subs: map[*hubWatch]struct{}{}}
		h.hubs[res] = hub
	}
	h.mu.Unlock()
	if w := hub.subscribe(prefix, afterRevision); w != nil {
		go func() {
			<-ctx.Done()
			hub.unsubscribe(w)
		}()
		return store.WatchResult{Events: w.ch, Err: func() error { return w.err }}, nil
	}
	return h.st.Watch(ctx, prefix, afterRevision)
}

// subscribe registers a watcher for the events after afterRevision under
// prefix, or returns nil when the hub cannot serve it.
func (hub *watchHub) subscribe(prefix string, afterRevision int64) *hubWatch {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if !hub.running {
		// Start the hub at this watch's revision.
		res, err := hub.st.Watch(context.Background(), hub.prefix, afterRevision)
		if err != nil {
			return nil
		}
		hub.running, hub.covered = true, afterRevision
		hub.ring, hub.head, hub.n = make([]store.Event, hubHistory), 0, 0
		go hub.run(res)
	}
	if afterRevision < hub.covered {
		return nil
	}
	w := &hubWatch{prefix: prefix, after: afterRevision, ch: make(chan store.Event, hubBuffer)}
	for i := range hub.n {
		ev := hub.ring[(hub.head+i)%len(hub.ring)]
		if ev.KV.ModRevision > afterRevision && strings.HasPrefix(ev.KV.Key, prefix) {
			select {
			case w.ch <- ev:
			default:
				return nil // too far back for the buffer: the store serves it
			}
		}
	}
	hub.subs[w] = struct{}{}
	return w
}

func (hub *watchHub) unsubscribe(w *hubWatch) {
	hub.mu.Lock()
	delete(hub.subs, w)
	hub.mu.Unlock()
	w.finish(nil)
}

// run fans the store watch out until it ends; then every watcher is told
// to resume, and the next watch starts the hub again.
func (hub *watchHub) run(res store.WatchResult) {
	for ev := range res.Events {
		hub.mu.Lock()
		if hub.n == len(hub.ring) {
			hub.covered = hub.ring[hub.head].KV.ModRevision
			hub.head = (hub.head + 1) % len(hub.ring)
			hub.n--
		}
		hub.ring[(hub.head+hub.n)%len(hub.ring)] = ev
		hub.n++
		for w := range hub.subs {
			if ev.KV.ModRevision <= w.after || !strings.HasPrefix(ev.KV.Key, w.prefix) {
				continue
			}
			select {
			case w.ch <- ev:
			default:
				delete(hub.subs, w)
				w.finish(store.ErrSlowConsumer)
			}
		}
		hub.mu.Unlock()
	}
	hub.mu.Lock()
	defer hub.mu.Unlock()
	hub.running, hub.ring, hub.n = false, nil, 0
	for w := range hub.subs {
		delete(hub.subs, w)
		w.finish(store.ErrSlowConsumer)
	}
}
