package etcd

import (
	"bytes"
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moorage/moorage/internal/store"
)

// Each write is one etcd transaction whose condition is the contract's
// precondition, so it takes exactly one etcd revision when it succeeds and
// none when it fails. Its revision is the transaction's header revision.

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, key string, value []byte) (store.KeyValue, error) {
	if err := s.checkKey(ctx, key); err != nil {
		return store.KeyValue{}, err
	}
	k := s.key(key)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(value))).
		Commit()
	if err != nil {
		return store.KeyValue{}, s.fail(fmt.Sprintf("create %q", key), err)
	}
	if !resp.Succeeded {
		return store.KeyValue{}, fmt.Errorf("create %q: %w", key, store.ErrExists)
	}
	rev := storeRev(resp.Header.Revision)
	return store.KeyValue{Key: key, Value: bytes.Clone(value), CreateRevision: rev, ModRevision: rev}, nil
}

// Update implements store.Store. An expectedModRevision of 0 never matches.
func (s *Store) Update(ctx context.Context, key string, value []byte, expectedModRevision int64) (store.KeyValue, error) {
	if err := s.checkKey(ctx, key); err != nil {
		return store.KeyValue{}, err
	}
	k := s.key(key)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", expected(expectedModRevision))).
		Then(clientv3.OpPut(k, string(value), clientv3.WithPrevKV())).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return store.KeyValue{}, s.fail(fmt.Sprintf("update %q", key), err)
	}
	if !resp.Succeeded {
		return store.KeyValue{}, mismatch("update", key, expectedModRevision, resp)
	}
	prev := resp.Responses[0].GetResponsePut().GetPrevKv()
	if prev == nil { // cannot be: the condition saw the key
		return store.KeyValue{}, fmt.Errorf("etcd: update %q: no previous value in the response", key)
	}
	return store.KeyValue{
		Key:            key,
		Value:          bytes.Clone(value),
		CreateRevision: storeRev(prev.CreateRevision),
		ModRevision:    storeRev(resp.Header.Revision),
	}, nil
}

// Delete implements store.Store. An expectedModRevision of 0 deletes
// whatever revision the key is at.
func (s *Store) Delete(ctx context.Context, key string, expectedModRevision int64) (store.KeyValue, error) {
	if err := s.checkKey(ctx, key); err != nil {
		return store.KeyValue{}, err
	}
	k := s.key(key)
	txn := s.cli.Txn(ctx)
	if expectedModRevision != 0 {
		txn = txn.If(clientv3.Compare(clientv3.ModRevision(k), "=", expected(expectedModRevision)))
	}
	resp, err := txn.
		Then(clientv3.OpDelete(k, clientv3.WithPrevKV())).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return store.KeyValue{}, s.fail(fmt.Sprintf("delete %q", key), err)
	}
	if !resp.Succeeded {
		return store.KeyValue{}, mismatch("delete", key, expectedModRevision, resp)
	}
	// Deleting a missing key succeeds in etcd and takes no revision.
	prevs := resp.Responses[0].GetResponseDeleteRange().GetPrevKvs()
	if len(prevs) == 0 {
		return store.KeyValue{}, fmt.Errorf("delete %q: %w", key, store.ErrNotFound)
	}
	return store.KeyValue{
		Key:            key,
		Value:          prevs[0].Value,
		CreateRevision: storeRev(prevs[0].CreateRevision),
		ModRevision:    storeRev(resp.Header.Revision),
	}, nil
}

// expected is the etcd ModRevision a precondition compares with: -1, which
// no key (present or absent) has, for a store revision <= 0.
func expected(rev int64) int64 {
	if rev <= 0 {
		return -1
	}
	return etcdRev(rev)
}

// mismatch tells from the Else branch's Get why a precondition failed.
func mismatch(op, key string, expected int64, resp *clientv3.TxnResponse) error {
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return fmt.Errorf("%s %q: %w", op, key, store.ErrNotFound)
	}
	return fmt.Errorf("%s %q: expected revision %d, have %d: %w",
		op, key, expected, storeRev(kvs[0].ModRevision), store.ErrConflict)
}
