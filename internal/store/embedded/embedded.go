package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/moorage/moorage/internal/store"
)

// Defaults for Options.
const (
	DefaultWatchBuffer = 1000
	DefaultLockTimeout = 100 * time.Millisecond
)

// ErrLocked is returned (wrapped) by Open when another process holds the
// file's lock.
var ErrLocked = errors.New("embedded: store file is locked by another process")

// Options tune a Store. The zero value selects the defaults.
type Options struct {
	// WatchBuffer is the number of events a watcher may have pending before
	// it is ended with store.ErrSlowConsumer. Default DefaultWatchBuffer.
	WatchBuffer int
	// LockTimeout is how long Open waits for the file's lock before failing
	// with ErrLocked. Default DefaultLockTimeout.
	LockTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	return o
}

// Store is a store.Store kept in one bbolt file. See the package doc.
type Store struct {
	path string
	opts Options
	db   *bolt.DB

	reqs       chan *writeReq // to the writer goroutine
	quit       chan struct{}  // closed by Close: the writer stops
	writerDone chan struct{}  // closed when the writer has stopped
	closed     atomic.Bool

	hub       hub
	compacted atomic.Int64 // compacted revision, as committed
	compactMu sync.Mutex   // one Compact at a time

	compactChunk int // log entries deleted per compaction transaction
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store file at path and starts its
// writer. It fails with ErrLocked if another process has the file open.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true, // rebuilt at open; commits stay durable
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v: %w)", ErrLocked, path, opts.LockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	var rev, compacted int64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKV, bucketLog, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v, err := decodeRev(metaVersion, meta.Get(metaVersion)); {
		case err != nil:
			return err
		case v == 0:
			if err := meta.Put(metaVersion, encodeRev(formatVersion)); err != nil {
				return err
			}
		case v != formatVersion:
			return fmt.Errorf("unsupported format version %d (want %d)", v, formatVersion)
		}
		rev, compacted, err = readMeta(tx)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	s := &Store{
		path:       path,
		opts:       opts,
		db:         db,
		reqs:       make(chan *writeReq, maxBatch),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		hub:        hub{watchers: make(map[*watcher]struct{})},

		compactChunk: defaultCompactChunk,
	}
	s.hub.rev.Store(rev)
	s.compacted.Store(compacted)
	go s.writeLoop(rev)
	return s, nil
}

// readMeta returns the current and compacted revisions as of tx.
func readMeta(tx *bolt.Tx) (rev, compacted int64, err error) {
	meta := tx.Bucket(bucketMeta)
	if rev, err = decodeRev(metaRev, meta.Get(metaRev)); err != nil {
		return 0, 0, err
	}
	if compacted, err = decodeRev(metaCompacted, meta.Get(metaCompacted)); err != nil {
		return 0, 0, err
	}
	if compacted > rev {
		return 0, 0, fmt.Errorf("%w: compacted revision %d > current %d", errCorrupt, compacted, rev)
	}
	return rev, compacted, nil
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// check fails once the store is closed or ctx is done.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// view runs fn in a read transaction, mapping a closed database to ErrClosed.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KeyValue, error) {
	if err := s.check(ctx); err != nil {
		return store.KeyValue{}, err
	}
	var kv store.KeyValue
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Get([]byte(key))
		if b == nil {
			return fmt.Errorf("get %q: %w", key, store.ErrNotFound)
		}
		v, err := decodeKV([]byte(key), b)
		if err != nil {
			return err
		}
		kv = v.toKV()
		return nil
	})
	return kv, err
}

// CurrentRevision implements store.Store: the last revision published to
// watchers, which every acknowledged write is at or below.
func (s *Store) CurrentRevision(ctx context.Context) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	return s.hub.rev.Load(), nil
}

// CompactedRevision implements store.Store.
func (s *Store) CompactedRevision(ctx context.Context) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	return s.compacted.Load(), nil
}

// Close implements store.Store: it waits for the writer to finish its batch,
// ends every watch with store.ErrClosed, and closes the file. A second Close
// returns store.ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return store.ErrClosed
	}
	close(s.quit)
	<-s.writerDone
	s.hub.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close %s: %w", s.path, err)
	}
	return nil
}
