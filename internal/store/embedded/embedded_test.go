package embedded

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

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
		ev := <-w.Events
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

// TestLongHistory replays more history than one read chunk, and lists at a
// revision behind more log entries than that.
func TestLongHistory(t *testing.T) {
	const writers, perWriter = 50, 60 // 3000 writes > 2*historyChunk
	ctx := t.Context()
	s := openTest(t, filepath.Join(t.TempDir(), "store.db"), Options{WatchBuffer: 10})
	defer s.Close()
	first, err := s.Create(ctx, "/h/first", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := s.Create(ctx, fmt.Sprintf("/h/%02d/%02d", g, i), []byte("v")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	res, err := s.List(ctx, "/h/", store.ListOptions{Revision: first.ModRevision})
	if err != nil || len(res.KVs) != 1 || res.KVs[0].Key != "/h/first" {
		t.Fatalf("List at the first revision = %d keys, %v; want /h/first only", len(res.KVs), err)
	}
	w, err := s.Watch(ctx, "/h/", first.ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	for rev := first.ModRevision + 1; rev <= writers*perWriter+1; rev++ {
		ev, ok := <-w.Events
		if !ok || ev.KV.ModRevision != rev {
			t.Fatalf("event at %d (open %v, err %v), want %d", ev.KV.ModRevision, ok, w.Err(), rev)
		}
	}
}
