package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/store/storetest"
	"github.com/moorage/moorage/internal/testserver/etcdtest"
)

func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawClient is a plain etcd client for writing behind a store's back.
func rawClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestConformance runs the suite with one new etcd per test: the suite
// checks exact revisions, so each store needs an etcd of its own.
func TestConformance(t *testing.T) {
	etcdtest.Binary(t)
	storetest.RunConformance(t, func(t *testing.T, cfg storetest.Config) store.Store {
		c := etcdtest.StartCluster(t, 1)
		return openTest(t, Config{Endpoints: c.Endpoints(), WatchBuffer: cfg.WatchBuffer})
	})
}

// Two stores sharing one etcd under different prefixes see only their own
// keys; each sees revisions skip over the other's writes.
func TestSharedEtcd(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	ctx := t.Context()
	a := openTest(t, Config{Endpoints: c.Endpoints(), Prefix: "/a"})
	b := openTest(t, Config{Endpoints: c.Endpoints(), Prefix: "/a/b/"}) // nested in a's prefix
	cli := rawClient(t, c.Endpoints())

	wa, err := a.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := b.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	a1, err := a.Create(ctx, "/k", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/elsewhere", "x"); err != nil { // a foreign write
		t.Fatal(err)
	}
	b1, err := b.Create(ctx, "/k", []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	if b1.ModRevision != a1.ModRevision+2 {
		t.Fatalf("revisions %d, %d: want the second two after the first", a1.ModRevision, b1.ModRevision)
	}
	if err := a.Compact(ctx, b1.ModRevision); err != nil { // writes a's meta key
		t.Fatal(err)
	}
	a2, err := a.Create(ctx, "/k2", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}

	res, err := a.List(ctx, "", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// b's keys are under a's prefix ("/a/" + "b//k") and show in a's list:
	// nested prefixes are the operator's mistake, and it is visible.
	var keys []string
	for _, kv := range res.KVs {
		keys = append(keys, kv.Key)
	}
	if want := "[/k /k2 b//k]"; fmt.Sprint(keys) != want {
		t.Fatalf("a's keys = %v, want %s (and not its meta key)", keys, want)
	}
	if ev := storetest.Next(t, wa, 1)[0]; ev.KV.Key != "/k" || ev.KV.ModRevision != a1.ModRevision {
		t.Fatalf("a's first event: %+v", ev)
	}
	if ev := storetest.Next(t, wa, 1)[0]; ev.KV.Key != "b//k" {
		t.Fatalf("a's second event: %+v", ev)
	}
	if ev := storetest.Next(t, wa, 1)[0]; ev.KV.Key != "/k2" || ev.KV.ModRevision != a2.ModRevision {
		t.Fatalf("a's third event (not the meta key's): %+v", ev)
	}
	if ev := storetest.Next(t, wb, 1)[0]; ev.KV.Key != "/k" || ev.KV.ModRevision != b1.ModRevision || string(ev.KV.Value) != "b" {
		t.Fatalf("b's event: %+v", ev)
	}
	if _, err := b.Get(ctx, "/k2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b.Get(/k2) = %v, want ErrNotFound", err)
	}
	if res, err := a.List(ctx, "/k", store.ListOptions{StartKey: "/z"}); err != nil || len(res.KVs) != 0 {
		t.Fatalf("List from a StartKey after the prefix = %+v, %v; want nothing", res, err)
	}
	if rev, _ := b.CompactedRevision(ctx); rev != 0 {
		t.Fatalf("b's CompactedRevision = %d: a's compaction is not recorded for b", rev)
	}
}

// A compaction by another etcd client is learned from the watch it ends.
func TestCompactedRevisionLearnedFromWatch(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	ctx := t.Context()
	s := openTest(t, Config{Endpoints: c.Endpoints()})
	var last store.KeyValue
	for i := range 5 {
		var err error
		if last, err = s.Create(ctx, fmt.Sprintf("/k/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rawClient(t, c.Endpoints()).Compact(ctx, etcdRev(last.ModRevision)); err != nil {
		t.Fatal(err)
	}
	if rev, _ := s.CompactedRevision(ctx); rev != 0 {
		t.Fatalf("CompactedRevision = %d before any watch saw the compaction, want 0", rev)
	}
	w, err := s.Watch(ctx, "/k/", 1)
	if err != nil {
		t.Fatal(err)
	}
	for range w.Events {
		t.Fatal("event from compacted history")
	}
	if !errors.Is(w.Err(), store.ErrCompacted) {
		t.Fatalf("watch Err = %v, want ErrCompacted", w.Err())
	}
	if rev, _ := s.CompactedRevision(ctx); rev != last.ModRevision {
		t.Fatalf("CompactedRevision = %d, want %d", rev, last.ModRevision)
	}
	if _, err := s.Watch(ctx, "/k/", 1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch after 1 = %v, want ErrCompacted", err)
	}
	if _, err := s.List(ctx, "/k/", store.ListOptions{Revision: 1}); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("List at 1 = %v, want ErrCompacted", err)
	}
	if err := s.Compact(ctx, last.ModRevision); err != nil {
		t.Fatalf("Compact at the learned revision: %v", err)
	}
}

// Open fails, within its dial timeout, when no etcd answers.
func TestOpenUnreachable(t *testing.T) {
	ports, err := etcdtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(t.Context(), Config{
		Endpoints:   []string{fmt.Sprintf("http://127.0.0.1:%d", ports[0])},
		DialTimeout: 200 * time.Millisecond,
	})
	if err == nil {
		t.Fatal("Open succeeded without an etcd")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open failed after %v", d)
	}
}

// A reader that keeps reading gets a long history through a small buffer:
// etcd sends history in batches far larger than the buffer, which pause the
// etcd watch instead of ending it.
func TestWatchLongHistorySmallBuffer(t *testing.T) {
	c := etcdtest.StartCluster(t, 1)
	ctx := t.Context()
	s := openTest(t, Config{Endpoints: c.Endpoints(), WatchBuffer: 4})
	// etcd sends at most 1000 revisions of history at once.
	const n = 1500
	base, err := s.Create(ctx, "/base", nil) // a revision to watch after
	if err != nil {
		t.Fatal(err)
	}
	start := base.ModRevision
	cli := rawClient(t, c.Endpoints())
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for i := g; i < n; i += 50 {
				if _, err := cli.Put(ctx, s.key(fmt.Sprintf("/h/%04d", i)), "v"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	w, err := s.Watch(ctx, "/h/", start)
	if err != nil {
		t.Fatal(err)
	}
	prev := start
	for i := range n {
		ev := storetest.Next(t, w, 1)[0]
		if ev.KV.ModRevision != prev+1 || ev.Type != store.Created {
			t.Fatalf("event %d: %v at revision %d after %d", i, ev.Type, ev.KV.ModRevision, prev)
		}
		prev = ev.KV.ModRevision
		if i%100 == 0 {
			time.Sleep(10 * time.Millisecond) // let the buffer fill
		}
	}
	// Live events still end a reader that falls behind.
	for i := range 100 {
		if _, err := s.Create(ctx, fmt.Sprintf("/h/live%03d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := untilClosed(w); !errors.Is(err, store.ErrSlowConsumer) {
		t.Fatalf("unread live watch: Err %v, want ErrSlowConsumer", err)
	}
}

func untilClosed(w store.WatchResult) (int, error) {
	n := 0
	for range w.Events {
		n++
	}
	return n, w.Err()
}

// Events at revisions already queued (as a resumed etcd watch may send
// again) are dropped; the meta key is not a store key; each etcd event maps
// to the store's.
func TestWatchEventConversion(t *testing.T) {
	s := &Store{prefix: "/p/"}
	w := &watcher{s: s, key: "/p/", last: 10}
	kv := func(key string, create, mod int64, value string) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(key), CreateRevision: create, ModRevision: mod, Value: []byte(value)}
	}
	resp := clientv3.WatchResponse{Events: []*clientv3.Event{
		{Type: clientv3.EventTypePut, Kv: kv("/p/a", 10, 10, "dup")},                                 // already queued
		{Type: clientv3.EventTypePut, Kv: kv("/p/", 11, 11, "11")},                                   // the meta key
		{Type: clientv3.EventTypePut, Kv: kv("/p/a", 12, 12, "1")},                                   // created
		{Type: clientv3.EventTypePut, Kv: kv("/p/a", 12, 13, "2"), PrevKv: kv("/p/a", 12, 12, "1")},  // updated
		{Type: clientv3.EventTypeDelete, Kv: kv("/p/a", 0, 14, ""), PrevKv: kv("/p/a", 12, 13, "2")}, // deleted
	}}
	evs, last, err := w.events(resp)
	if err != nil {
		t.Fatal(err)
	}
	if last != 14 {
		t.Fatalf("last = %d, want 14", last)
	}
	want := []string{
		"Created {a 1 c11 m11} <nil>",
		"Updated {a 2 c11 m12} &{a 1 c11 m11}",
		"Deleted {a 2 c11 m13} &{a 2 c11 m12}",
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	str := func(kv store.KeyValue) string {
		return fmt.Sprintf("{%s %s c%d m%d}", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision)
	}
	for i, ev := range evs {
		prev := "<nil>"
		if ev.PrevKV != nil {
			prev = "&" + str(*ev.PrevKV)
		}
		if got := fmt.Sprintf("%v %s %s", ev.Type, str(ev.KV), prev); got != want[i] {
			t.Errorf("event %d = %s, want %s", i, got, want[i])
		}
	}
	// Without a previous value (compacted before etcd read it) an update
	// cannot be told; the watch ends with ErrCompacted.
	w.last = 14
	_, _, err = w.events(clientv3.WatchResponse{Events: []*clientv3.Event{
		{Type: clientv3.EventTypePut, Kv: kv("/p/b", 12, 15, "x")},
	}})
	if !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("update without previous value: %v, want ErrCompacted", err)
	}
}
