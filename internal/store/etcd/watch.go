package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moorage/moorage/internal/store"
)

// Backoff between etcd watches a watcher opens after losing one (a member
// without a leader), so a cluster without quorum is not hammered.
const (
	minRewatchBackoff = 50 * time.Millisecond
	maxRewatchBackoff = 2 * time.Second
)

var (
	// errRewatch: the etcd watch was lost in a way that a new one, from the
	// last queued revision, recovers from.
	errRewatch = errors.New("etcd: watch lost")
	// errPaused: the watcher stopped its etcd watch to let its reader catch
	// up with the history, and watches again at once.
	errPaused = errors.New("etcd: watch paused")
)

// watcher is one Watch: a goroutine that reads etcd watch responses as they
// come and queues their events on out, the caller's bounded buffer.
type watcher struct {
	s      *Store
	key    string // etcd key prefix watched
	last   int64  // etcd revision of the last event queued; later ones are new
	histTo int64  // store revision current at Watch: events up to it are history
	out    chan store.Event

	started     chan struct{} // closed once etcd has the first watch, or it failed
	startedOnce sync.Once

	mu  sync.Mutex
	err error // why the watch ended
}

// Watch implements store.Store on an etcd watch of the prefix from the
// revision after afterRevision (for 0: after the current revision, read
// first, so nothing committed after the call returns is missed). See the
// package doc for how the watch survives member failures and slow readers.
func (s *Store) Watch(ctx context.Context, prefix string, afterRevision int64) (store.WatchResult, error) {
	if err := s.check(ctx); err != nil {
		return store.WatchResult{}, err
	}
	if afterRevision < 0 {
		return store.WatchResult{}, fmt.Errorf("etcd: watch after negative revision %d", afterRevision)
	}
	cur, compacted, _, err := s.meta(ctx)
	if err != nil {
		return store.WatchResult{}, err
	}
	switch {
	case afterRevision == 0:
		afterRevision = cur
	case afterRevision < compacted:
		// Checked here: etcd still serves a watch starting at its
		// compaction revision, i.e. after store revision compacted-1.
		return store.WatchResult{}, fmt.Errorf("watch after revision %d (compacted %d): %w",
			afterRevision, compacted, store.ErrCompacted)
	}
	w := &watcher{
		s:       s,
		key:     s.key(prefix),
		last:    etcdRev(afterRevision),
		histTo:  cur,
		out:     make(chan store.Event, s.watchBuffer),
		started: make(chan struct{}),
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return store.WatchResult{}, store.ErrClosed
	}
	s.watchers.Add(1)
	s.mu.Unlock()
	go w.run(ctx)
	// Return once etcd has the watch, as the embedded store registers its
	// watchers before returning: a compaction after Watch returns then
	// cannot take history from a watch that had none to replay.
	select {
	case <-w.started:
	case <-ctx.Done():
		return store.WatchResult{}, ctx.Err()
	}
	return store.WatchResult{Events: w.out, Err: w.Err}, nil
}

// start lets Watch return.
func (w *watcher) start() { w.startedOnce.Do(func() { close(w.started) }) }

// Err returns why the watch ended (nil while it runs or if its context ended).
func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// run opens etcd watches, one after another from the last queued revision,
// until the watch ends; then it closes out.
func (w *watcher) run(ctx context.Context) {
	defer w.s.watchers.Done()
	defer close(w.out)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.s.ctx, cancel)() // Close ends the watch
	var backoff time.Duration
	for {
		healthy, err := w.stream(ctx)
		w.start() // if the first watch failed: Watch returns, the watch goes on
		if errors.Is(err, errPaused) && ctx.Err() == nil {
			continue
		}
		if errors.Is(err, errRewatch) && ctx.Err() == nil {
			if healthy {
				backoff = 0
			}
			backoff = min(max(2*backoff, minRewatchBackoff), maxRewatchBackoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
				w.s.rewatches.Add(1)
				continue
			case <-ctx.Done():
				t.Stop()
			}
		}
		switch {
		case w.s.ctx.Err() != nil:
			err = store.ErrClosed
		case ctx.Err() != nil:
			err = nil // the caller's context ended
		}
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		return
	}
}

// stream runs one etcd watch from the revision after w.last until it ends,
// and says whether etcd had created it.
//
// WithRequireLeader makes a member that has lost its leader end the watch
// (etcd's ErrNoLeader) instead of keeping it open without events; the
// client resumes other stream failures (a member down, a reconnect) itself.
// Either way an event may come again after a resumption: those at revisions
// already queued are dropped. etcd sends all events of one revision in one
// response, so that never drops a new event.
func (w *watcher) stream(ctx context.Context) (healthy bool, err error) {
	sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := w.s.cli.Watch(sctx, w.key, clientv3.WithPrefix(), clientv3.WithRev(w.last+1),
		clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	for resp := range ch {
		if resp.CompactRevision != 0 {
			w.s.learnCompacted(resp.CompactRevision)
			return healthy, fmt.Errorf("etcd: watch %q after revision %d (compacted %d): %w",
				w.key, storeRev(w.last), storeRev(resp.CompactRevision), store.ErrCompacted)
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrNoLeader) {
				return healthy, errRewatch
			}
			return healthy, fmt.Errorf("etcd: watch %q: %w", w.key, err)
		}
		healthy = true
		if resp.Created {
			w.start()
		}
		evs, last, err := w.events(resp)
		if err != nil {
			return healthy, err
		}
		for i, ev := range evs {
			select {
			case w.out <- ev:
				continue
			default:
			}
			if ev.KV.ModRevision > w.histTo {
				return healthy, store.ErrSlowConsumer
			}
			// The reader is behind a replay of history, which etcd sends
			// in large batches: stop this etcd watch so the client buffers
			// no more for it, hand over the rest of the batch at the
			// reader's pace, and watch again from there.
			cancel()
			for _, ev := range evs[i:] {
				select {
				case w.out <- ev:
				case <-ctx.Done():
					return healthy, ctx.Err()
				}
			}
			w.last = last
			return healthy, errPaused
		}
		w.last = last
	}
	// The channel closes without an error when ctx ends (the caller sorts
	// that out) or if the client gave up on the stream: watch again.
	return healthy, errRewatch
}

// events converts the new events of a response and returns the etcd
// revision of its last event (w.last if none is new).
func (w *watcher) events(resp clientv3.WatchResponse) ([]store.Event, int64, error) {
	var evs []store.Event
	last := w.last
	for _, ev := range resp.Events {
		if ev.Kv.ModRevision <= w.last {
			continue // queued before a resumption
		}
		last = max(last, ev.Kv.ModRevision)
		if string(ev.Kv.Key) == w.s.metaKey() {
			continue
		}
		sev, err := w.s.event(ev)
		if err != nil {
			return nil, 0, err
		}
		evs = append(evs, sev)
	}
	return evs, last, nil
}

// event converts an etcd watch event, which carries the previous value
// (WithPrevKV) of every key it did not create.
func (s *Store) event(ev *clientv3.Event) (store.Event, error) {
	kv := s.kv(ev.Kv)
	var prev *store.KeyValue
	if ev.PrevKv != nil {
		p := s.kv(ev.PrevKv)
		prev = &p
	}
	switch {
	case ev.IsCreate():
		return store.Event{Type: store.Created, KV: kv}, nil
	case prev == nil:
		// etcd reads the previous value at the revision before the event
		// and leaves it out if that was compacted meanwhile.
		return store.Event{}, fmt.Errorf("etcd: watch: previous value of %q at revision %d: %w",
			kv.Key, kv.ModRevision, store.ErrCompacted)
	case ev.Type == clientv3.EventTypeDelete:
		kv.Value = bytes.Clone(prev.Value)
		kv.CreateRevision = prev.CreateRevision
		return store.Event{Type: store.Deleted, KV: kv, PrevKV: prev}, nil
	}
	return store.Event{Type: store.Updated, KV: kv, PrevKV: prev}, nil
}

// learnCompacted records an etcd compaction revision etcd reported.
func (s *Store) learnCompacted(rev int64) {
	for {
		old := s.learnedCompact.Load()
		if rev <= old || s.learnedCompact.CompareAndSwap(old, rev) {
			return
		}
	}
}
