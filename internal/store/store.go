// Package store defines the Store: the revisioned key-value contract that the
// API server keeps every object in, and that each backend implements.
//
// A Store is a map from string keys to byte values with one global, strictly
// increasing revision counter (an int64, starting at 1 for the first write).
// Every successful write (create, update, delete) takes the next revision, and
// that revision becomes the written key's ModRevision. Watches deliver writes in
// revision order from any revision still kept, which is what lets clients
// resume exactly where they stopped.
//
// Compaction: the compacted revision C (0 until the first Compact) is the
// oldest revision whose state is kept. Lists at a revision R >= C and Watches
// after a revision A >= C succeed; R < C and 0 < A < C fail with ErrCompacted.
// (So Compact(C) may discard the history of the writes at revisions <= C.)
//
// Backends: embedded (bbolt, one file; the default) and, later, etcd. Every
// backend must pass the conformance suite in package storetest. With etcd,
// "the next revision" is the next of etcd's: revisions still strictly
// increase, but may skip values taken by other writes to the same etcd.
package store

import (
	"context"
	"errors"
)

// Sentinel errors. Callers compare with errors.Is; backends may wrap them.
var (
	// ErrNotFound: Get, Update or Delete of a key that does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrExists: Create of a key that already exists.
	ErrExists = errors.New("store: key already exists")
	// ErrConflict: Update or Delete whose expected ModRevision does not match
	// the key's current one. The caller re-reads and tries again (an HTTP 409).
	ErrConflict = errors.New("store: revision mismatch")
	// ErrCompacted: List or Watch at a revision older than the oldest one kept.
	// The caller lists again at the latest revision (an HTTP 410 Gone).
	ErrCompacted = errors.New("store: revision has been compacted")
	// ErrFutureRevision: List at a revision newer than the current one.
	ErrFutureRevision = errors.New("store: revision is in the future")
	// ErrSlowConsumer ends a watch whose reader fell too far behind (see Watch).
	ErrSlowConsumer = errors.New("store: watcher fell behind and was closed")
	// ErrClosed: any call after Close.
	ErrClosed = errors.New("store: closed")
)

// KeyValue is one key at one revision. Value is owned by the caller once
// returned (backends never reuse or mutate it).
type KeyValue struct {
	Key   string
	Value []byte
	// CreateRevision is the revision of the write that created the key.
	CreateRevision int64
	// ModRevision is the revision of the last write to the key. For the KV of
	// a Delete event it is the revision of the delete.
	ModRevision int64
}

// EventType says what a write did.
type EventType int

const (
	Created EventType = iota + 1
	Updated
	Deleted
)

func (t EventType) String() string {
	switch t {
	case Created:
		return "Created"
	case Updated:
		return "Updated"
	case Deleted:
		return "Deleted"
	}
	return "Unknown"
}

// Event is one write as a watcher sees it.
type Event struct {
	Type EventType
	// KV is the key after the write. For Deleted, KV.Value is the last value
	// the key had, KV.ModRevision is the revision of the delete and
	// KV.CreateRevision that of the deleted key.
	KV KeyValue
	// PrevKV is the key before the write (for Deleted: the same value, at
	// its previous ModRevision); nil for Created.
	PrevKV *KeyValue
}

// ListOptions select a range of keys.
type ListOptions struct {
	// Revision lists the keys as they were at that revision; 0 means the
	// latest. ErrCompacted if older than the oldest kept, ErrFutureRevision
	// if newer than the current one.
	Revision int64
	// StartKey, if set, lists only keys >= StartKey (for paging).
	StartKey string
	// Limit, if > 0, returns at most Limit keys; More tells whether there were more.
	Limit int
}

// ListResult is a consistent snapshot of a key range.
type ListResult struct {
	KVs []KeyValue // sorted by key
	// Revision is the store revision the snapshot was taken at (the current
	// revision for a latest list, else ListOptions.Revision).
	Revision int64
	More     bool
}

// WatchResult is the stream a Watch returns.
type WatchResult struct {
	// Events delivers events in revision order. It is closed when the watch
	// ends: its context is done, the store is closed, or the reader was too
	// slow. After it is closed, Err tells why (nil for a cancelled context).
	Events <-chan Event
	Err    func() error
}

// Store is the contract every backend implements. All methods are safe for
// concurrent use. A write returns only once it is durable: after a crash, every
// acknowledged write is there and no unacknowledged write is half there.
type Store interface {
	// Get returns the current value of key, or ErrNotFound.
	Get(ctx context.Context, key string) (KeyValue, error)

	// List returns the keys with the given prefix, sorted, as of a revision.
	List(ctx context.Context, prefix string, opts ListOptions) (ListResult, error)

	// Create writes key only if it does not exist (ErrExists otherwise) and
	// returns the new KeyValue (CreateRevision == ModRevision). Keys must be
	// non-empty.
	Create(ctx context.Context, key string, value []byte) (KeyValue, error)

	// Update replaces key's value only if its ModRevision equals
	// expectedModRevision (ErrConflict otherwise; ErrNotFound if absent).
	// There is no unconditional update: an expectedModRevision of 0 never
	// matches. CreateRevision is kept.
	Update(ctx context.Context, key string, value []byte, expectedModRevision int64) (KeyValue, error)

	// Delete removes key only if its ModRevision equals expectedModRevision
	// (0 means unconditionally). It returns the deleted value, with
	// ModRevision set to the revision of the delete and CreateRevision that
	// of the deleted key. A later Create starts a new CreateRevision.
	Delete(ctx context.Context, key string, expectedModRevision int64) (KeyValue, error)

	// Watch streams every write to a key with the given prefix whose revision
	// is > afterRevision, in order, then new writes as they commit. With
	// afterRevision 0 it streams only writes after the current revision.
	// ErrCompacted if afterRevision is older than the oldest revision kept;
	// a watch may also end with ErrCompacted if history it had yet to deliver
	// is compacted first. An afterRevision beyond the current revision is
	// allowed: the watch waits for it. Each matching write is delivered
	// exactly once, with no gap between history and new writes.
	//
	// The values of delivered events may be shared between watchers (a
	// write watched by a hundred watchers is not copied a hundred times):
	// read them, never modify them.
	//
	// Slow-consumer policy: each watcher has a bounded buffer (see the
	// backend); a watcher whose buffer is full when an event must be delivered
	// is closed with ErrSlowConsumer instead of blocking writers or buffering
	// without limit; events it had buffered may be dropped. Its reader
	// resumes with a new Watch from the last revision it saw, which is still
	// kept unless it was compacted meanwhile.
	Watch(ctx context.Context, prefix string, afterRevision int64) (WatchResult, error)

	// CurrentRevision returns the revision of the latest write (0 if none):
	// at least that of every write already acknowledged.
	CurrentRevision(ctx context.Context) (int64, error)

	// CompactedRevision returns the oldest revision still kept; Lists and
	// Watches at or after it succeed.
	CompactedRevision(ctx context.Context) (int64, error)

	// Compact discards history older than revision: Lists at older
	// revisions and Watches from before it fail with ErrCompacted afterwards,
	// and CompactedRevision returns revision. Current values are never
	// discarded. ErrFutureRevision if revision is newer than the current one;
	// compacting at or below the compacted revision changes nothing.
	Compact(ctx context.Context, revision int64) error

	// Close releases the store. Open watches end with ErrClosed; a second
	// Close returns ErrClosed.
	Close() error
}
