package embedded

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/store/storetest"
)

func openTest(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunConformance(t, func(t *testing.T, cfg storetest.Config) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "store.db"), Options{WatchBuffer: cfg.WatchBuffer})
	})
}

func TestReopenKeepsRevisionsValuesAndHistory(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s := openTest(t, path, Options{})
	a, _ := s.Create(ctx, "/a", []byte("a1"))
	b, _ := s.Create(ctx, "/b", []byte("b1"))
	a2, _ := s.Update(ctx, "/a", []byte("a2"), a.ModRevision)
	if _, err := s.Delete(ctx, "/b", b.ModRevision); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path, Options{})
	defer s.Close()
	if rev, _ := s.CurrentRevision(ctx); rev != 4 {
		t.Fatalf("CurrentRevision after reopen = %d, want 4", rev)
	}
	if rev, _ := s.CompactedRevision(ctx); rev != 1 {
		t.Fatalf("CompactedRevision after reopen = %d, want 1", rev)
	}
	got, err := s.Get(ctx, "/a")
	if err != nil || string(got.Value) != "a2" || got.ModRevision != a2.ModRevision {
		t.Fatalf("Get /a after reopen = %+v, %v; want a2 at %d", got, err, a2.ModRevision)
	}
	res, err := s.List(ctx, "/", store.ListOptions{Revision: 2})
	if err != nil || len(res.KVs) != 2 || string(res.KVs[0].Value) != "a1" || string(res.KVs[1].Value) != "b1" {
		t.Fatalf("List at 2 after reopen = %+v, %v; want a1, b1", res, err)
	}
	w, err := s.Watch(ctx, "/", 1) // history from before the restart
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Create(ctx, "/c", []byte("c1"))
	if err != nil || c.ModRevision != 5 {
		t.Fatalf("Create after reopen = %+v, %v; want revision 5", c, err)
	}
	for _, want := range []struct {
		typ store.EventType
		key string
		rev int64
	}{{store.Created, "/b", 2}, {store.Updated, "/a", 3}, {store.Deleted, "/b", 4}, {store.Created, "/c", 5}} {
		ev := storetest.Next(t, w, 1)[0]
		if ev.Type != want.typ || ev.KV.Key != want.key || ev.KV.ModRevision != want.rev {
			t.Fatalf("event %v %s@%d, want %v %s@%d", ev.Type, ev.KV.Key, ev.KV.ModRevision, want.typ, want.key, want.rev)
		}
	}
}

func TestOpenLockedFileFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openTest(t, path, Options{})
	defer s.Close()
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	t.Log(err)
}

// writeHistory creates writers*perWriter keys under /h/ concurrently after
// a first key, and returns that first key.
func writeHistory(t *testing.T, s *Store, writers, perWriter int) store.KeyValue {
	t.Helper()
	first, err := s.Create(t.Context(), "/h/first", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := s.Create(t.Context(), fmt.Sprintf("/h/%02d/%02d", g, i), []byte("v")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// TestLongHistory replays more history than one read chunk, and lists at a
// revision behind more log entries than that.
func TestLongHistory(t *testing.T) {
	const writes = 3000 // > 2*historyChunk
	ctx := t.Context()
	s := openTest(t, filepath.Join(t.TempDir(), "store.db"), Options{WatchBuffer: 10})
	defer s.Close()
	first := writeHistory(t, s, 50, writes/50)
	res, err := s.List(ctx, "/h/", store.ListOptions{Revision: first.ModRevision})
	if err != nil || len(res.KVs) != 1 || res.KVs[0].Key != "/h/first" {
		t.Fatalf("List at the first revision = %d keys, %v; want /h/first only", len(res.KVs), err)
	}
	w, err := s.Watch(ctx, "/h/", first.ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	for rev := first.ModRevision + 1; rev <= writes+1; rev++ {
		if ev := storetest.Next(t, w, 1)[0]; ev.KV.ModRevision != rev {
			t.Fatalf("event at %d, want %d", ev.KV.ModRevision, rev)
		}
	}
}

// TestCompactDuringReplay ends a watch with ErrCompacted when history it has
// not replayed yet is compacted.
func TestCompactDuringReplay(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, filepath.Join(t.TempDir(), "store.db"), Options{})
	defer s.Close()
	first := writeHistory(t, s, 50, 60)
	w, err := s.Watch(ctx, "/h/", first.ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	storetest.Next(t, w, 1) // the first history chunk has been read
	cur, _ := s.CurrentRevision(ctx)
	if err := s.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	n := 1
	for range w.Events {
		n++
	}
	if !errors.Is(w.Err(), store.ErrCompacted) || n > historyChunk {
		t.Fatalf("watch ended after %d events with %v, want at most %d and ErrCompacted", n, w.Err(), historyChunk)
	}
}

// TestCompactInChunks compacts a log several chunks long, in order.
func TestCompactInChunks(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, filepath.Join(t.TempDir(), "store.db"), Options{})
	defer s.Close()
	s.compactChunk = 100
	writeHistory(t, s, 10, 100)
	keep := int64(750)
	if err := s.Compact(ctx, keep); err != nil {
		t.Fatal(err)
	}
	oldest, n := logSpan(t, s)
	if cur, _ := s.CurrentRevision(ctx); oldest != keep+1 || int64(n) != cur-keep {
		t.Fatalf("log holds %d entries from %d, want %d from %d", n, oldest, cur-keep, keep+1)
	}
	res, err := s.List(ctx, "/h/", store.ListOptions{Revision: keep})
	if err != nil || len(res.KVs) != int(keep) {
		t.Fatalf("List at the compacted revision: %d keys, %v; want %d", len(res.KVs), err, keep)
	}
}

// logSpan returns the oldest revision in the log and its number of entries.
func logSpan(t *testing.T, s *Store) (oldest int64, n int) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		n = b.Stats().KeyN
		k, _ := b.Cursor().First()
		var err error
		oldest, err = parseRevKey(k)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return oldest, n
}
