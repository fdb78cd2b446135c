package embedded

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/moorage/moorage/internal/store"
)

// historyChunk bounds the log entries one history read transaction scans.
const historyChunk = 1024

// hub fans committed events out to watchers. Its mutex orders publishing
// against registration: a watcher registered when the last published
// revision was P gets the events <= P from the log and those > P live.
type hub struct {
	mu       sync.Mutex
	rev      atomic.Int64 // last published revision; written under mu
	watchers map[*watcher]struct{}
	closed   bool
	running  sync.WaitGroup // watcher goroutines
}

// publish delivers a committed batch, in revision order, to every matching
// watcher without blocking, and records rev as published.
func (h *hub) publish(events []store.Event, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range events {
		for w := range h.watchers {
			if ev.KV.ModRevision <= w.after || !strings.HasPrefix(ev.KV.Key, w.prefix) {
				continue
			}
			select {
			case w.live <- ev:
			default:
				delete(h.watchers, w)
				w.finish(store.ErrSlowConsumer)
			}
		}
	}
	h.rev.Store(rev)
}

// register adds w, whose history ends at the last published revision.
func (h *hub) register(w *watcher) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return store.ErrClosed
	}
	w.histTo = h.rev.Load()
	if w.after == 0 {
		w.after = w.histTo // only new writes
	}
	h.watchers[w] = struct{}{}
	h.running.Add(1)
	return nil
}

// remove forgets w (idempotent).
func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watchers, w)
}

// close ends every watcher with ErrClosed and waits for their goroutines.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	for w := range h.watchers {
		w.finish(store.ErrClosed)
	}
	clear(h.watchers)
	h.mu.Unlock()
	h.running.Wait()
}

// watcher is one Watch. Its goroutine replays the log (after, histTo], then
// forwards live events to out; it closes out when the watch ends.
type watcher struct {
	s      *Store
	prefix string
	after  int64 // deliver revisions > after
	histTo int64 // replay the log up to here; later revisions come live

	live chan store.Event // filled by the publisher, never blocking it
	out  chan store.Event // read by the caller

	stop chan struct{} // closed by finish
	once sync.Once
	mu   sync.Mutex
	err  error // why the watch ended
}

// Watch implements store.Store. A Watch from a future revision waits for it.
// A watch may also end with store.ErrCompacted if the history it has yet to
// replay is compacted meanwhile.
func (s *Store) Watch(ctx context.Context, prefix string, afterRevision int64) (store.WatchResult, error) {
	if err := s.check(ctx); err != nil {
		return store.WatchResult{}, err
	}
	if afterRevision < 0 {
		return store.WatchResult{}, fmt.Errorf("embedded: watch after negative revision %d", afterRevision)
	}
	if c := s.compacted.Load(); afterRevision != 0 && afterRevision < c {
		return store.WatchResult{}, fmt.Errorf("watch after revision %d (compacted %d): %w",
			afterRevision, c, store.ErrCompacted)
	}
	w := &watcher{
		s:      s,
		prefix: prefix,
		after:  afterRevision,
		live:   make(chan store.Event, s.opts.WatchBuffer),
		out:    make(chan store.Event),
		stop:   make(chan struct{}),
	}
	if err := s.hub.register(w); err != nil {
		return store.WatchResult{}, err
	}
	go w.run(ctx)
	return store.WatchResult{Events: w.out, Err: w.Err}, nil
}

// finish ends the watch with err; the first call wins.
func (w *watcher) finish(err error) {
	w.once.Do(func() {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		close(w.stop)
	})
}

// Err returns why the watch ended (nil while it runs or if its context ended).
func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *watcher) run(ctx context.Context) {
	defer w.s.hub.running.Done()
	defer close(w.out)
	err := w.loop(ctx)
	w.s.hub.remove(w)
	w.finish(err)
}

// loop replays the history then forwards live events, until the watch is
// stopped (returning nil: finish already has the reason), its context ends
// (nil), or the history cannot be read.
func (w *watcher) loop(ctx context.Context) error {
	for from := w.after; from < w.histTo; {
		evs, next, err := w.s.readHistory(w.prefix, from, w.histTo)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if !w.send(ctx, ev) {
				return nil
			}
		}
		from = next
	}
	for {
		select {
		case ev := <-w.live:
			if !w.send(ctx, ev) { // shared with the other watchers: see store.Store.Watch
				return nil
			}
		case <-w.stop:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// send delivers ev to the caller unless the watch ends first.
func (w *watcher) send(ctx context.Context, ev store.Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-w.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// readHistory returns the events in (from, to] with the prefix, scanning at
// most historyChunk log entries, and the revision it scanned up to.
func (s *Store) readHistory(prefix string, from, to int64) (evs []store.Event, next int64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		_, compacted, err := readMeta(tx)
		if err != nil {
			return err
		}
		if from < compacted {
			return fmt.Errorf("watch history after revision %d (compacted %d): %w", from, compacted, store.ErrCompacted)
		}
		next = to
		c := tx.Bucket(bucketLog).Cursor()
		scanned := 0
		for k, v := c.Seek(revKey(from + 1)); k != nil; k, v = c.Next() {
			rev, err := parseRevKey(k)
			if err != nil {
				return err
			}
			if rev > to {
				break
			}
			if scanned == historyChunk {
				next = rev - 1
				break
			}
			scanned++
			rec, err := decodeLog(rev, v)
			if err != nil {
				return err
			}
			if bytes.HasPrefix(rec.key, []byte(prefix)) {
				evs = append(evs, rec.event(rev))
			}
		}
		return nil
	})
	return evs, next, err
}
