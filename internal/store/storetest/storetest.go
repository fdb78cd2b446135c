// Package storetest is the conformance suite for store.Store backends.
//
// A backend's test calls RunConformance with a function that opens a new,
// empty store for one test:
//
//	func TestConformance(t *testing.T) {
//		storetest.RunConformance(t, func(t *testing.T, cfg storetest.Config) store.Store {
//			s, err := mybackend.Open(t.TempDir(), mybackend.Options{WatchBuffer: cfg.WatchBuffer})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// The suite closes every store it opens. Each store must be private to its
// test and start empty (at revision 0): the suite checks exact revisions.
// Tests within a group run in parallel; none sleeps to synchronize.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/moorage/moorage/internal/store"
)

// Config describes the store one test needs; backends map it to their own
// options.
type Config struct {
	// WatchBuffer, if > 0, is the number of events a watcher may have
	// pending before it is closed with store.ErrSlowConsumer. 0 selects the
	// backend's default.
	WatchBuffer int
}

// NewStore opens a new, empty store configured by cfg, for the test t.
type NewStore func(t *testing.T, cfg Config) store.Store

// timeout bounds every wait for a watch event; it is reached only when a
// test fails.
const timeout = 10 * time.Second

type test struct {
	name string
	run  func(t *testing.T, newStore NewStore)
}

type group struct {
	name  string
	tests []test
}

// RunConformance runs the whole suite against the backend newStore opens.
func RunConformance(t *testing.T, newStore NewStore) {
	groups := []group{
		{"KV", kvTests()},
		{"List", listTests()},
		{"Watch", watchTests()},
		{"Concurrency", concurrencyTests()},
		{"Lifecycle", lifecycleTests()},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, newStore)
				})
			}
		})
	}
}

// open opens a store for t and closes it when t ends.
func open(t *testing.T, newStore NewStore, cfg Config) store.Store {
	t.Helper()
	s := newStore(t, cfg)
	t.Cleanup(func() { _ = s.Close() }) // ErrClosed if the test closed it
	return s
}

func mustCreate(t *testing.T, s store.Store, key, value string) store.KeyValue {
	t.Helper()
	kv, err := s.Create(t.Context(), key, []byte(value))
	if err != nil {
		t.Fatalf("Create(%q): %v", key, err)
	}
	return kv
}

func mustUpdate(t *testing.T, s store.Store, key, value string, rev int64) store.KeyValue {
	t.Helper()
	kv, err := s.Update(t.Context(), key, []byte(value), rev)
	if err != nil {
		t.Fatalf("Update(%q, %d): %v", key, rev, err)
	}
	return kv
}

func mustDelete(t *testing.T, s store.Store, key string, rev int64) store.KeyValue {
	t.Helper()
	kv, err := s.Delete(t.Context(), key, rev)
	if err != nil {
		t.Fatalf("Delete(%q, %d): %v", key, rev, err)
	}
	return kv
}

func mustList(t *testing.T, s store.Store, prefix string, opts store.ListOptions) store.ListResult {
	t.Helper()
	res, err := s.List(t.Context(), prefix, opts)
	if err != nil {
		t.Fatalf("List(%q, %+v): %v", prefix, opts, err)
	}
	return res
}

func mustWatch(t *testing.T, s store.Store, prefix string, after int64) store.WatchResult {
	t.Helper()
	w, err := s.Watch(t.Context(), prefix, after)
	if err != nil {
		t.Fatalf("Watch(%q, %d): %v", prefix, after, err)
	}
	return w
}

func currentRevision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.CurrentRevision(t.Context())
	if err != nil {
		t.Fatalf("CurrentRevision: %v", err)
	}
	return rev
}

// wantErr fails t unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// kvString formats a KeyValue for messages.
func kvString(kv store.KeyValue) string {
	return fmt.Sprintf("{%s=%q c%d m%d}", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision)
}

func kvEqual(a, b store.KeyValue) bool {
	return a.Key == b.Key && bytes.Equal(a.Value, b.Value) &&
		a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision
}

func wantKV(t *testing.T, what string, got, want store.KeyValue) {
	t.Helper()
	if !kvEqual(got, want) {
		t.Fatalf("%s: got %s, want %s", what, kvString(got), kvString(want))
	}
}

// wantKVs compares a list result with the expected keys, in order.
func wantKVs(t *testing.T, what string, got []store.KeyValue, want ...store.KeyValue) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = kvEqual(got[i], want[i])
	}
	if !ok {
		t.Fatalf("%s:\n got  %s\n want %s", what, kvsString(got), kvsString(want))
	}
}

func kvsString(kvs []store.KeyValue) string {
	var b bytes.Buffer
	for _, kv := range kvs {
		b.WriteString(kvString(kv))
	}
	return b.String()
}

// kv builds an expected KeyValue.
func kv(key, value string, createRev, modRev int64) store.KeyValue {
	return store.KeyValue{Key: key, Value: []byte(value), CreateRevision: createRev, ModRevision: modRev}
}

// Next returns the next n events of w, failing t if the watch ends or
// stalls first.
func Next(t testing.TB, w store.WatchResult, n int) []store.Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	evs := make([]store.Event, 0, n)
	for len(evs) < n {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				t.Fatalf("watch ended after %d of %d events: %v", len(evs), n, w.Err())
			}
			evs = append(evs, ev)
		case <-deadline.C:
			t.Fatalf("got %d of %d events within %v", len(evs), n, timeout)
		}
	}
	return evs
}

// untilClosed reads w until it is closed and returns the events read and
// its Err.
func untilClosed(t *testing.T, w store.WatchResult) ([]store.Event, error) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var evs []store.Event
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return evs, w.Err()
			}
			evs = append(evs, ev)
		case <-deadline.C:
			t.Fatalf("watch not closed within %v", timeout)
		}
	}
}

// wantEvent compares an event with the expected one.
func wantEvent(t *testing.T, got store.Event, typ store.EventType, kv store.KeyValue, prev *store.KeyValue) {
	t.Helper()
	ok := got.Type == typ && kvEqual(got.KV, kv) && (got.PrevKV == nil) == (prev == nil)
	if ok && prev != nil {
		ok = kvEqual(*got.PrevKV, *prev)
	}
	if !ok {
		t.Fatalf("event:\n got  %s\n want %s", eventString(got), eventString(store.Event{Type: typ, KV: kv, PrevKV: prev}))
	}
}

func eventString(ev store.Event) string {
	prev := "nil"
	if ev.PrevKV != nil {
		prev = kvString(*ev.PrevKV)
	}
	return fmt.Sprintf("%v %s prev %s", ev.Type, kvString(ev.KV), prev)
}

// revisions returns the ModRevisions of evs.
func revisions(evs []store.Event) []int64 {
	revs := make([]int64, len(evs))
	for i, ev := range evs {
		revs[i] = ev.KV.ModRevision
	}
	return revs
}
