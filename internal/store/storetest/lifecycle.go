package storetest

import (
	"testing"

	"github.com/moorage/moorage/internal/store"
)

func lifecycleTests() []test {
	return []test{
		{"compact keeps every current value", testCompactKeepsCurrent},
		{"compact at a future revision fails and at an old one changes nothing", testCompactBounds},
		{"close ends watches with ErrClosed and every later call fails with ErrClosed", testClose},
	}
}

func testCompactKeepsCurrent(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	ctx := t.Context()
	for _, k := range []string{"/k/a", "/k/b", "/k/c", "/k/d"} {
		mustCreate(t, s, k, "1")
	}
	b := mustUpdate(t, s, "/k/b", "2", 2)
	mustDelete(t, s, "/k/c", 0)
	before := mustList(t, s, "/", store.ListOptions{})
	if err := s.Compact(ctx, before.Revision); err != nil {
		t.Fatal(err)
	}
	if rev, err := s.CompactedRevision(ctx); err != nil || rev != before.Revision {
		t.Fatalf("CompactedRevision = %d, %v; want %d", rev, err, before.Revision)
	}
	after := mustList(t, s, "/", store.ListOptions{})
	wantKVs(t, "List after Compact", after.KVs, before.KVs...)
	got, err := s.Get(ctx, "/k/b")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get after Compact", got, b)
	w := mustWatch(t, s, "/k/", before.Revision)
	b2 := mustUpdate(t, s, "/k/b", "3", b.ModRevision)
	wantEvent(t, Next(t, w, 1)[0], store.Updated, b2, &b)
}

func testCompactBounds(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	ctx := t.Context()
	for _, k := range []string{"/a", "/b", "/c"} {
		mustCreate(t, s, k, "1")
	}
	wantErr(t, "Compact at the next revision", s.Compact(ctx, 4), store.ErrFutureRevision)
	if err := s.Compact(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, 1); err != nil {
		t.Fatalf("Compact below the compacted revision: %v", err)
	}
	if rev, err := s.CompactedRevision(ctx); err != nil || rev != 2 {
		t.Fatalf("CompactedRevision = %d, %v; want 2", rev, err)
	}
	res := mustList(t, s, "/", store.ListOptions{Revision: 2})
	wantKVs(t, "List at the compacted revision", res.KVs, kv("/a", "1", 1, 1), kv("/b", "1", 2, 2))
}

func testClose(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	ctx := t.Context()
	kv := mustCreate(t, s, "/k", "v")
	w := mustWatch(t, s, "/", 0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := untilClosed(t, w)
	wantErr(t, "Err of a watch open at Close", err, store.ErrClosed)

	_, err = s.Get(ctx, "/k")
	wantErr(t, "Get", err, store.ErrClosed)
	_, err = s.List(ctx, "/", store.ListOptions{})
	wantErr(t, "List", err, store.ErrClosed)
	_, err = s.Create(ctx, "/new", nil)
	wantErr(t, "Create", err, store.ErrClosed)
	_, err = s.Update(ctx, "/k", nil, kv.ModRevision)
	wantErr(t, "Update", err, store.ErrClosed)
	_, err = s.Delete(ctx, "/k", 0)
	wantErr(t, "Delete", err, store.ErrClosed)
	_, err = s.Watch(ctx, "/", 0)
	wantErr(t, "Watch", err, store.ErrClosed)
	_, err = s.CurrentRevision(ctx)
	wantErr(t, "CurrentRevision", err, store.ErrClosed)
	_, err = s.CompactedRevision(ctx)
	wantErr(t, "CompactedRevision", err, store.ErrClosed)
	wantErr(t, "Compact", s.Compact(ctx, 1), store.ErrClosed)
	wantErr(t, "second Close", s.Close(), store.ErrClosed)
}
