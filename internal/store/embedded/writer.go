package embedded

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/moorage/moorage/internal/store"
)

// maxBatch bounds the number of write requests committed in one transaction.
const maxBatch = 1000

// op is the kind of a write request.
type op uint8

const (
	opCreate op = iota + 1
	opUpdate
	opDelete
)

// writeReq is one write queued for the writer goroutine. The writer sets kv
// and err, then closes done.
type writeReq struct {
	ctx      context.Context
	op       op
	key      string
	value    []byte // the store's own copy
	expected int64  // expected ModRevision; for deletes 0 means any

	kv   store.KeyValue
	err  error
	done chan struct{}
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, key string, value []byte) (store.KeyValue, error) {
	return s.write(ctx, &writeReq{op: opCreate, key: key, value: value})
}

// Update implements store.Store. An expectedModRevision of 0 never matches.
func (s *Store) Update(ctx context.Context, key string, value []byte, expectedModRevision int64) (store.KeyValue, error) {
	return s.write(ctx, &writeReq{op: opUpdate, key: key, value: value, expected: expectedModRevision})
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key string, expectedModRevision int64) (store.KeyValue, error) {
	return s.write(ctx, &writeReq{op: opDelete, key: key, expected: expectedModRevision})
}

// write queues r for the writer and waits for its answer.
func (s *Store) write(ctx context.Context, r *writeReq) (store.KeyValue, error) {
	if err := s.check(ctx); err != nil {
		return store.KeyValue{}, err
	}
	if r.key == "" || len(r.key) > bolt.MaxKeySize {
		return store.KeyValue{}, fmt.Errorf("embedded: invalid key of %d bytes", len(r.key))
	}
	r.ctx = ctx
	r.value = append([]byte{}, r.value...) // the caller may reuse its slice
	r.done = make(chan struct{})
	select {
	case s.reqs <- r:
	case <-s.quit:
		return store.KeyValue{}, store.ErrClosed
	case <-ctx.Done():
		return store.KeyValue{}, ctx.Err()
	}
	select {
	case <-r.done:
		return r.kv, r.err
	case <-s.writerDone:
		select {
		case <-r.done: // answered just before the writer stopped
			return r.kv, r.err
		default:
			return store.KeyValue{}, store.ErrClosed
		}
	case <-ctx.Done():
		return store.KeyValue{}, ctx.Err()
	}
}

// writeLoop is the writer goroutine: it commits queued requests in batches
// until Close. rev is the last committed revision.
func (s *Store) writeLoop(rev int64) {
	defer close(s.writerDone)
	batch := make([]*writeReq, 0, maxBatch)
	var events []store.Event
	for {
		select {
		case <-s.quit:
			return
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		events, rev = s.commit(batch, events[:0], rev)
		clear(batch) // let answered requests be collected
	}
}

// commit applies batch in one transaction after revision rev, publishes its
// events, answers every request, and returns the new last revision.
func (s *Store) commit(batch []*writeReq, events []store.Event, rev int64) ([]store.Event, int64) {
	next, err := s.applyBatch(batch, &events, rev)
	if err != nil {
		for _, r := range batch {
			r.kv, r.err = store.KeyValue{}, fmt.Errorf("embedded: commit: %w", err)
		}
	} else if next > rev {
		s.hub.publish(events, next)
		rev = next
	}
	for _, r := range batch {
		close(r.done)
	}
	return events, rev
}

// fatalError is a bbolt failure inside a batch: it fails the whole batch.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// applyBatch runs the batch in one read-write transaction, appending the
// events of the successful requests, and commits it if anything was written.
func (s *Store) applyBatch(batch []*writeReq, events *[]store.Event, rev int64) (int64, error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return rev, err
	}
	defer tx.Rollback() // no-op once committed
	kvb, logb := tx.Bucket(bucketKV), tx.Bucket(bucketLog)
	next := rev
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		ev, err := apply(kvb, logb, r, next+1)
		var fatal fatalError
		if errors.As(err, &fatal) {
			return rev, fatal.err
		}
		if err != nil {
			r.err = err
			continue
		}
		next++
		*events = append(*events, ev)
		r.kv = ev.KV
		r.kv.Value = append([]byte{}, ev.KV.Value...) // the caller's own copy
	}
	if next == rev {
		return rev, nil // every request failed: nothing to commit
	}
	if err := tx.Bucket(bucketMeta).Put(metaRev, encodeRev(next)); err != nil {
		return rev, err
	}
	if err := tx.Commit(); err != nil {
		return rev, err
	}
	return next, nil
}

// apply performs one request at revision rev and returns its event. Failed
// preconditions are returned as plain errors; bbolt failures as fatalError.
func apply(kvb, logb *bolt.Bucket, r *writeReq, rev int64) (store.Event, error) {
	key := []byte(r.key)
	var prev *store.KeyValue
	if b := kvb.Get(key); b != nil {
		v, err := decodeKV(key, b)
		if err != nil {
			return store.Event{}, err
		}
		kv := v.toKV()
		prev = &kv
	}
	var ev store.Event
	switch {
	case r.op == opCreate && prev != nil:
		return ev, fmt.Errorf("create %q: %w", r.key, store.ErrExists)
	case r.op == opCreate:
		ev = store.Event{Type: store.Created, KV: store.KeyValue{
			Key: r.key, Value: r.value, CreateRevision: rev, ModRevision: rev}}
	case prev == nil:
		return ev, fmt.Errorf("write %q: %w", r.key, store.ErrNotFound)
	case (r.op == opUpdate || r.expected != 0) && prev.ModRevision != r.expected:
		return ev, fmt.Errorf("write %q: expected revision %d, have %d: %w",
			r.key, r.expected, prev.ModRevision, store.ErrConflict)
	case r.op == opUpdate:
		ev = store.Event{Type: store.Updated, PrevKV: prev, KV: store.KeyValue{
			Key: r.key, Value: r.value, CreateRevision: prev.CreateRevision, ModRevision: rev}}
	default: // opDelete
		ev = store.Event{Type: store.Deleted, PrevKV: prev, KV: store.KeyValue{
			Key: r.key, Value: prev.Value, CreateRevision: prev.CreateRevision, ModRevision: rev}}
	}
	var err error
	if ev.Type == store.Deleted {
		err = kvb.Delete(key)
	} else {
		err = kvb.Put(key, encodeKV(ev.KV.CreateRevision, rev, ev.KV.Value))
	}
	if err == nil {
		err = logb.Put(revKey(rev), encodeEvent(ev))
	}
	if err != nil {
		return store.Event{}, fatalError{err}
	}
	return ev, nil
}
