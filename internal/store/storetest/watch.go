package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moorage/moorage/internal/store"
)

func watchTests() []test {
	return []test{
		{"watch from a revision replays the history then streams new writes", testWatchHistoryThenLive},
		{"watch from revision 0 streams only new writes", testWatchFromZero},
		{"watch from a future revision streams only writes after it", testWatchFuture},
		{"watch delivers only the keys with the prefix", testWatchPrefix},
		{"watch events carry the type, the key after the write and before it", testWatchEventContents},
		{"watches started during concurrent writes see every write once, in order", testWatchConcurrent},
		{"watch from before the compacted revision fails with ErrCompacted", testWatchCompacted},
		{"a watcher that does not read is closed with ErrSlowConsumer and can resume", testWatchSlowConsumer},
		{"cancelling the context closes the watch with a nil Err", testWatchCancel},
	}
}

func testWatchHistoryThenLive(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	a := mustCreate(t, s, "/w/a", "1")
	a2 := mustUpdate(t, s, "/w/a", "2", a.ModRevision)
	b := mustCreate(t, s, "/w/b", "1")
	w := mustWatch(t, s, "/w/", a.ModRevision)
	evs := Next(t, w, 2)
	wantEvent(t, evs[0], store.Updated, a2, &a)
	wantEvent(t, evs[1], store.Created, b, nil)
	bDel := mustDelete(t, s, "/w/b", 0)
	c := mustCreate(t, s, "/w/c", "1")
	evs = Next(t, w, 2)
	wantEvent(t, evs[0], store.Deleted, bDel, &b)
	wantEvent(t, evs[1], store.Created, c, nil)
}

func testWatchFromZero(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	mustCreate(t, s, "/z/a", "1")
	w := mustWatch(t, s, "/z/", 0)
	b := mustCreate(t, s, "/z/b", "1")
	wantEvent(t, Next(t, w, 1)[0], store.Created, b, nil)
}

func testWatchFuture(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	mustCreate(t, s, "/f/a", "1")
	w := mustWatch(t, s, "/f/", 3)
	mustCreate(t, s, "/f/b", "1")
	mustCreate(t, s, "/f/c", "1")
	d := mustCreate(t, s, "/f/d", "1")
	wantEvent(t, Next(t, w, 1)[0], store.Created, d, nil)
}

func testWatchPrefix(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	w := mustWatch(t, s, "/a/", 0)
	var want []store.KeyValue
	for _, k := range []string{"/ab/x", "/a/1", "/b/1", "/a", "/a/2", "/", "/a/zz"} {
		kv := mustCreate(t, s, k, "v")
		if len(k) >= 3 && k[:3] == "/a/" {
			want = append(want, kv)
		}
	}
	// The last write matches: any stray event would come before it.
	for i, ev := range Next(t, w, len(want)) {
		wantEvent(t, ev, store.Created, want[i], nil)
	}
}

func testWatchEventContents(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	before := mustCreate(t, s, "/before", "v")
	live := mustWatch(t, s, "/e/", 0)
	c := mustCreate(t, s, "/e/k", "v1")
	u := mustUpdate(t, s, "/e/k", "v2", c.ModRevision)
	d := mustDelete(t, s, "/e/k", u.ModRevision)
	wantKV(t, "Delete", d, kv("/e/k", "v2", 2, 4))
	history := mustWatch(t, s, "/e/", before.ModRevision)
	for name, w := range map[string]store.WatchResult{"live": live, "history": history} {
		t.Run(name, func(t *testing.T) {
			evs := Next(t, w, 3)
			wantEvent(t, evs[0], store.Created, kv("/e/k", "v1", 2, 2), nil)
			wantEvent(t, evs[1], store.Updated, kv("/e/k", "v2", 2, 3), &c)
			wantEvent(t, evs[2], store.Deleted, kv("/e/k", "v2", 2, 4), &u)
		})
	}
}

// startedWatch is a watch whose start is known to be in [lo, hi].
type startedWatch struct {
	w      store.WatchResult
	lo, hi int64
}

func testWatchConcurrent(t *testing.T, newStore NewStore) {
	const writers, perWriter = 4, 40
	s := open(t, newStore, Config{WatchBuffer: 10 * writers * perWriter})
	ctx := t.Context()
	watchFrom := func(after int64) startedWatch {
		if after != 0 {
			return startedWatch{mustWatch(t, s, "/cw/", after), after, after}
		}
		lo := currentRevision(t, s)
		w := mustWatch(t, s, "/cw/", 0)
		return startedWatch{w, lo, currentRevision(t, s)}
	}
	watches := []startedWatch{watchFrom(0)}

	acks := make(chan int64, writers*perWriter)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("/cw/%d", g)
			var rev int64
			for i := range perWriter {
				value := []byte(fmt.Sprint(i))
				var kv store.KeyValue
				var err error
				if i == 0 {
					kv, err = s.Create(ctx, key, value)
				} else {
					kv, err = s.Update(ctx, key, value, rev)
				}
				if err != nil {
					errs <- err
					return
				}
				rev = kv.ModRevision
				acks <- rev
			}
		})
	}
	// Start watches of every kind while the writers run.
	var acked []int64
	deadline := time.After(timeout)
	for len(acked) < writers*perWriter {
		select {
		case rev := <-acks:
			acked = append(acked, rev)
		case err := <-errs:
			t.Fatalf("writer: %v", err)
		case <-deadline:
			t.Fatalf("only %d writes within %v", len(acked), timeout)
		}
		switch len(acked) {
		case 10, 50, 100, 140:
			watches = append(watches,
				watchFrom(currentRevision(t, s)),
				watchFrom(acked[len(acked)/2]), // replays history as writes go on
				watchFrom(0))
		}
	}
	wg.Wait()
	// Every watch sees the final write; nothing can follow it.
	end := mustCreate(t, s, "/cw/end", "")
	slices.Sort(acked)
	acked = append(acked, end.ModRevision)

	for i, sw := range watches {
		var got []int64
		for len(got) == 0 || got[len(got)-1] != end.ModRevision {
			ev := Next(t, sw.w, 1)[0]
			got = append(got, ev.KV.ModRevision)
		}
		if err := checkStream(got, acked, sw.lo, sw.hi); err != nil {
			t.Errorf("watch %d (start in [%d, %d]): %v", i, sw.lo, sw.hi, err)
		}
	}
}

// checkStream checks that got is exactly the revisions in want (sorted)
// that are > S, for some start S in [lo, hi].
func checkStream(got, want []int64, lo, hi int64) error {
	i, _ := slices.BinarySearch(want, got[0])
	if i == len(want) || want[i] != got[0] {
		return fmt.Errorf("first event at revision %d, which was never written", got[0])
	}
	if got[0] <= lo || (i > 0 && want[i-1] > hi) {
		return fmt.Errorf("stream starts at revision %d: missed or replayed writes (start in [%d, %d])", got[0], lo, hi)
	}
	want = want[i:]
	for j := range max(len(got), len(want)) {
		if j >= len(got) || j >= len(want) || got[j] != want[j] {
			return fmt.Errorf("stream from revision %d differs at event %d: got %v, want %v", got[0], j, window(got, j), window(want, j))
		}
	}
	return nil
}

func testWatchCompacted(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	var kvs []store.KeyValue
	for i := range 5 {
		kvs = append(kvs, mustCreate(t, s, fmt.Sprintf("/w/%d", i), "v"))
	}
	if err := s.Compact(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	_, err := s.Watch(t.Context(), "/w/", 2)
	wantErr(t, "Watch after revision 2 when compacted at 3", err, store.ErrCompacted)
	w := mustWatch(t, s, "/w/", 3)
	evs := Next(t, w, 2)
	wantEvent(t, evs[0], store.Created, kvs[3], nil)
	wantEvent(t, evs[1], store.Created, kvs[4], nil)
	w = mustWatch(t, s, "/w/", 0)
	kv := mustCreate(t, s, "/w/new", "v")
	wantEvent(t, Next(t, w, 1)[0], store.Created, kv, nil)
}

func testWatchSlowConsumer(t *testing.T, newStore NewStore) {
	const writes = 64
	s := open(t, newStore, Config{WatchBuffer: 4})
	base := mustCreate(t, s, "/other", "v")
	w := mustWatch(t, s, "/slow/", base.ModRevision)
	var revs []int64
	for i := range writes {
		revs = append(revs, mustCreate(t, s, fmt.Sprintf("/slow/%02d", i), "v").ModRevision)
	}
	got, err := untilClosed(t, w)
	wantErr(t, "Err of the unread watch", err, store.ErrSlowConsumer)
	if len(got) == writes {
		t.Fatalf("the unread watch delivered all %d events", writes)
	}
	if !slices.Equal(revisions(got), revs[:len(got)]) {
		t.Fatalf("events before the close: revisions %v, want %v", revisions(got), revs[:len(got)])
	}
	resume := base.ModRevision
	if len(got) > 0 {
		resume = got[len(got)-1].KV.ModRevision
	}
	rest := Next(t, mustWatch(t, s, "/slow/", resume), writes-len(got))
	if !slices.Equal(revisions(rest), revs[len(got):]) {
		t.Fatalf("resumed watch: revisions %v, want %v", revisions(rest), revs[len(got):])
	}
}

func testWatchCancel(t *testing.T, newStore NewStore) {
	s := open(t, newStore, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := s.Watch(ctx, "/c/", 0)
	if err != nil {
		t.Fatal(err)
	}
	kv := mustCreate(t, s, "/c/1", "v")
	wantEvent(t, Next(t, w, 1)[0], store.Created, kv, nil)
	cancel()
	if _, err := untilClosed(t, w); err != nil {
		t.Fatalf("Err after cancel = %v, want nil", err)
	}
	mustCreate(t, s, "/c/2", "v") // the store goes on
}

// window returns revs[i:] shortened for messages.
func window(revs []int64, i int) []int64 {
	revs = revs[min(i, len(revs)):]
	return revs[:min(len(revs), 5)]
}
