package etcd

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moorage/moorage/internal/store"
)

// Compact implements store.Store as kube-apiserver compacts etcd: it first
// records the revision in the meta key (a compare-and-swap, so concurrent
// compactors, of this or other servers sharing the prefix, never move it
// back), then asks etcd to compact. etcd's compaction is logical at once:
// reads and watches before it fail from then on; the space is freed in the
// background (no WithCompactPhysical: nothing here needs to wait for it).
// Recording first means CompactedRevision never reports less than what etcd
// has compacted, so Lists and Watches at or after it always succeed.
func (s *Store) Compact(ctx context.Context, revision int64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	for {
		cur, compacted, metaMod, err := s.meta(ctx)
		switch {
		case err != nil:
			return err
		case revision > cur:
			return fmt.Errorf("compact at revision %d (current %d): %w", revision, cur, store.ErrFutureRevision)
		case revision <= compacted:
			return nil
		}
		meta := s.metaKey()
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(meta), "=", metaMod)).
			Then(clientv3.OpPut(meta, strconv.FormatInt(etcdRev(revision), 10))).
			Commit()
		if err != nil {
			return s.fail("record compacted revision", err)
		}
		if resp.Succeeded {
			break
		}
		// Another compactor recorded a revision meanwhile: compare again.
	}
	_, err := s.cli.Compact(ctx, etcdRev(revision))
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) { // ErrCompacted: etcd is already further
		return s.fail(fmt.Sprintf("compact at revision %d", revision), err)
	}
	return nil
}
