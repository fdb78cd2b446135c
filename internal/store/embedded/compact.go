package embedded

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/moorage/moorage/internal/store"
)

// defaultCompactChunk bounds the log entries one compaction transaction
// deletes (Store.compactChunk; tests lower it).
const defaultCompactChunk = 10000

// Compact implements store.Store: afterwards Lists at revisions < revision
// and Watches after revisions < revision fail with store.ErrCompacted.
// Compacting at or below the compacted revision only finishes deleting its
// log entries, if an earlier Compact was interrupted. If ctx ends midway the
// compaction is in effect but some of its log entries may remain until the
// next Compact.
func (s *Store) Compact(ctx context.Context, revision int64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	target := revision
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, compacted, err := readMeta(tx)
		switch {
		case err != nil:
			return err
		case revision > cur:
			return fmt.Errorf("compact at revision %d (current %d): %w", revision, cur, store.ErrFutureRevision)
		case revision <= compacted:
			target = compacted
			return nil
		}
		return tx.Bucket(bucketMeta).Put(metaCompacted, encodeRev(revision))
	})
	if err != nil {
		return compactErr(err)
	}
	s.compacted.Store(target)
	for {
		if err := s.check(ctx); err != nil {
			return err
		}
		done, err := s.deleteLogChunk(target)
		if err != nil {
			return compactErr(err)
		}
		if done {
			return nil
		}
	}
}

// deleteLogChunk deletes up to s.compactChunk log entries <= upTo, oldest
// first, and reports whether none are left.
func (s *Store) deleteLogChunk(upTo int64) (done bool, err error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() // no-op once committed
	logb := tx.Bucket(bucketLog)
	var keys [][]byte
	c := logb.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < s.compactChunk; k, _ = c.Next() {
		rev, err := parseRevKey(k)
		if err != nil {
			return false, err
		}
		if rev > upTo {
			done = true
			break
		}
		keys = append(keys, append([]byte{}, k...))
	}
	if len(keys) == 0 {
		return true, nil
	}
	for _, k := range keys {
		if err := logb.Delete(k); err != nil {
			return false, err
		}
	}
	return done, tx.Commit()
}

func compactErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return fmt.Errorf("embedded: compact: %w", err)
}
