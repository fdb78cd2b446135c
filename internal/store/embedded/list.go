package embedded

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/moorage/moorage/internal/store"
)

// List implements store.Store. See the package doc for lists at a past
// revision.
func (s *Store) List(ctx context.Context, prefix string, opts store.ListOptions) (store.ListResult, error) {
	if err := s.check(ctx); err != nil {
		return store.ListResult{}, err
	}
	if opts.Revision < 0 {
		return store.ListResult{}, fmt.Errorf("embedded: list at negative revision %d", opts.Revision)
	}
	var res store.ListResult
	err := s.view(func(tx *bolt.Tx) error {
		cur, compacted, err := readMeta(tx)
		if err != nil {
			return err
		}
		rev := opts.Revision
		switch {
		case rev == 0:
			rev = cur
		case rev > cur:
			return fmt.Errorf("list at revision %d (current %d): %w", rev, cur, store.ErrFutureRevision)
		case rev < compacted:
			return fmt.Errorf("list at revision %d (compacted %d): %w", rev, compacted, store.ErrCompacted)
		}
		start := []byte(max(prefix, opts.StartKey))
		var past map[string]*kvView
		if rev < cur {
			if past, err = pastStates(tx.Bucket(bucketLog), []byte(prefix), start, rev); err != nil {
				return err
			}
		}
		res.Revision = rev
		res.KVs, res.More, err = scan(tx.Bucket(bucketKV), []byte(prefix), start, past, opts.Limit)
		return err
	})
	return res, err
}

// pastStates returns, for each key with the prefix and >= start that was
// written after rev, its state at rev: the previous state recorded by its
// first log entry after rev, or nil if that entry created it.
func pastStates(logb *bolt.Bucket, prefix, start []byte, rev int64) (map[string]*kvView, error) {
	past := make(map[string]*kvView)
	c := logb.Cursor()
	for k, v := c.Seek(revKey(rev + 1)); k != nil; k, v = c.Next() {
		r, err := parseRevKey(k)
		if err != nil {
			return nil, err
		}
		rec, err := decodeLog(r, v)
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(rec.key, prefix) || bytes.Compare(rec.key, start) < 0 {
			continue
		}
		if _, seen := past[string(rec.key)]; !seen {
			past[string(rec.key)] = rec.prev()
		}
	}
	return past, nil
}

// scan returns up to limit (0: all) keys with the prefix and >= start, in
// key order: the current ones, except that a key in past has the state given
// there (nil: absent). more tells whether keys were left out.
func scan(kvb *bolt.Bucket, prefix, start []byte, past map[string]*kvView, limit int) (kvs []store.KeyValue, more bool, err error) {
	pastKeys := make([]string, 0, len(past))
	for k := range past {
		pastKeys = append(pastKeys, k)
	}
	slices.Sort(pastKeys)
	c := kvb.Cursor()
	k, v := c.Seek(start)
	for {
		if k != nil && !bytes.HasPrefix(k, prefix) {
			k = nil // past the range
		}
		var next *kvView
		switch {
		case k == nil && len(pastKeys) == 0:
			return kvs, false, nil
		case len(pastKeys) > 0 && (k == nil || pastKeys[0] <= string(k)):
			if k != nil && pastKeys[0] == string(k) {
				k, v = c.Next() // superseded by its past state
			}
			next = past[pastKeys[0]]
			pastKeys = pastKeys[1:]
		default:
			view, err := decodeKV(k, v)
			if err != nil {
				return nil, false, err
			}
			next = &view
			k, v = c.Next()
		}
		if next == nil {
			continue // absent at the revision
		}
		if limit > 0 && len(kvs) == limit {
			return kvs, true, nil
		}
		kvs = append(kvs, next.toKV())
	}
}
