package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moorage/moorage/internal/store"
)

// List implements store.Store with one etcd range read: at a past revision
// etcd answers from its MVCC history (ErrCompacted, ErrFutureRevision as
// etcd decides), and paging at a fixed revision is consistent.
func (s *Store) List(ctx context.Context, prefix string, opts store.ListOptions) (store.ListResult, error) {
	if err := s.check(ctx); err != nil {
		return store.ListResult{}, err
	}
	if opts.Revision < 0 {
		return store.ListResult{}, fmt.Errorf("etcd: list at negative revision %d", opts.Revision)
	}
	start := s.key(max(prefix, opts.StartKey))
	if start == s.metaKey() {
		start += "\x00" // the first key after the meta key
	}
	ops := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.key(prefix)))}
	if opts.Limit > 0 {
		ops = append(ops, clientv3.WithLimit(int64(opts.Limit)))
	}
	if opts.Revision > 0 {
		ops = append(ops, clientv3.WithRev(etcdRev(opts.Revision)))
	}
	resp, err := s.cli.Get(ctx, start, ops...)
	if err != nil {
		return store.ListResult{}, s.fail(fmt.Sprintf("list %q at revision %d", prefix, opts.Revision), err)
	}
	res := store.ListResult{
		KVs:      make([]store.KeyValue, len(resp.Kvs)),
		Revision: opts.Revision,
		More:     resp.More,
	}
	if res.Revision == 0 {
		res.Revision = storeRev(resp.Header.Revision)
	}
	for i, kv := range resp.Kvs {
		res.KVs[i] = s.kv(kv)
	}
	return res, nil
}
