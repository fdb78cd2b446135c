package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/testserver/etcdtest"
)

// collector reads a watch in the background.
type collector struct {
	mu   sync.Mutex
	evs  []store.Event
	err  error
	done bool
}

func collect(w store.WatchResult) *collector {
	c := &collector{}
	go func() {
		for ev := range w.Events {
			c.mu.Lock()
			c.evs = append(c.evs, ev)
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.err, c.done = w.Err(), true
		c.mu.Unlock()
	}()
	return c
}

// waitFor waits until the watch has delivered the event at revision rev.
func (c *collector) waitFor(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		n, done, err := len(c.evs), c.done, c.err
		reached := n > 0 && c.evs[n-1].KV.ModRevision >= rev
		c.mu.Unlock()
		switch {
		case reached:
			return
		case done:
			t.Fatalf("watch ended after %d events: %v", n, err)
		case time.Now().After(deadline):
			t.Fatalf("watch did not reach revision %d within 20s (%d events)", rev, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check verifies the watch delivered each write once, in revision order:
// every acknowledged one, and only keys that were written.
func (c *collector) check(t *testing.T, w *writer) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool)
	var prev int64
	for i, ev := range c.evs {
		if ev.KV.ModRevision <= prev {
			t.Fatalf("event %d at revision %d after one at %d: duplicated or out of order", i, ev.KV.ModRevision, prev)
		}
		prev = ev.KV.ModRevision
		if ev.Type != store.Created || seen[ev.KV.Key] || !w.attempted[ev.KV.Key] {
			t.Fatalf("event %d: %v %s at %d: not one create of a written key", i, ev.Type, ev.KV.Key, ev.KV.ModRevision)
		}
		seen[ev.KV.Key] = true
		if kv, ok := w.acked[ev.KV.Key]; ok && kv.ModRevision != ev.KV.ModRevision {
			t.Fatalf("event for %s at revision %d, acknowledged at %d", kv.Key, ev.KV.ModRevision, kv.ModRevision)
		}
	}
	for k := range w.acked {
		if !seen[k] {
			t.Fatalf("acknowledged create of %s never delivered", k)
		}
	}
}

// writer creates keys one after another, retrying through failures. A create
// whose answer was lost may have been applied: a retry that finds the key
// with its value counts it as written but not acknowledged.
type writer struct {
	s         *Store
	n         int
	attempted map[string]bool
	acked     map[string]store.KeyValue
	last      int64 // revision of the last create known applied
}

func newWriter(s *Store) *writer {
	return &writer{s: s, attempted: make(map[string]bool), acked: make(map[string]store.KeyValue)}
}

func (w *writer) write(t *testing.T, n int) {
	t.Helper()
	for range n {
		key := fmt.Sprintf("/c/%06d", w.n)
		value := []byte(key)
		w.n++
		w.attempted[key] = true
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			kv, err := w.s.Create(ctx, key, value)
			if errors.Is(err, store.ErrExists) {
				kv, err = w.s.Get(ctx, key)
				if err == nil && !bytes.Equal(kv.Value, value) {
					t.Fatalf("%s has value %q", key, kv.Value)
				}
			} else if err == nil {
				w.acked[key] = kv
			}
			cancel()
			if err == nil {
				w.last = kv.ModRevision
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("create %s: still failing after 20s: %v", key, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// checkPresent verifies that every acknowledged write is in the store.
func (w *writer) checkPresent(t *testing.T) {
	t.Helper()
	res, err := w.s.List(t.Context(), "/c/", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]store.KeyValue)
	for _, kv := range res.KVs {
		got[kv.Key] = kv
	}
	for k, want := range w.acked {
		if kv, ok := got[k]; !ok || kv.ModRevision != want.ModRevision {
			t.Fatalf("acknowledged %s (revision %d) is not in the store: %+v", k, want.ModRevision, kv)
		}
	}
}

// leader returns the member of c that is the cluster's leader now.
func leader(t *testing.T, c *etcdtest.Cluster, cli *clientv3.Client) *etcdtest.Member {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			if !m.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			st, err := cli.Status(ctx, m.ClientURL)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader within 10s")
	return nil
}

// A watch on a 3-member cluster delivers every write exactly once and in
// order while the leader is killed and every member is restarted, and no
// acknowledged write is lost.
func TestClusterWatchAcrossLeaderLossAndRestarts(t *testing.T) {
	c := etcdtest.StartCluster(t, 3, etcdtest.ClusterFlags...)
	s := openTest(t, Config{Endpoints: c.Endpoints()})
	cli := rawClient(t, c.Endpoints())
	w := newWriter(s)
	watch, err := s.Watch(t.Context(), "/c/", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(watch)

	w.write(t, 20)
	leader := leader(t, c, cli)
	t.Logf("killing the leader %s", leader.Name())
	leader.Kill()
	w.write(t, 20) // committed by a new leader
	w.checkPresent(t)
	events.waitFor(t, w.last)

	leader.Restart()
	t.Logf("%s rejoined", leader.Name())
	w.write(t, 10)
	// Restart every other member too, so the one serving the watch is
	// among them whichever it was.
	for _, m := range c.Members {
		if m == leader {
			continue
		}
		t.Logf("restarting %s", m.Name())
		m.Restart()
		w.write(t, 10)
		w.checkPresent(t)
	}
	events.waitFor(t, w.last)
	events.check(t, w)
	if len(w.acked) < w.n/2 {
		t.Fatalf("only %d of %d creates acknowledged", len(w.acked), w.n)
	}
}

// A watch served by a member that loses its leader is ended by etcd
// (WithRequireLeader); the store watches again from the last revision it
// delivered and goes on once the cluster has a leader, with no gap and no
// duplicate.
func TestWatchRewatchesAfterLeaderLoss(t *testing.T) {
	c := etcdtest.StartCluster(t, 3, etcdtest.ClusterFlags...)
	m0 := c.Members[0]
	// This store reaches only m0, so its watch is served by m0.
	s := openTest(t, Config{Endpoints: []string{m0.ClientURL}})
	all := openTest(t, Config{Endpoints: c.Endpoints()})
	w := newWriter(all)
	watch, err := s.Watch(t.Context(), "/c/", 0)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(watch)
	w.write(t, 10)
	events.waitFor(t, w.last)

	c.Members[1].Kill()
	c.Members[2].Kill()
	// m0 cancels its leader-requiring watches after three election
	// timeouts without a leader.
	deadline := time.Now().Add(15 * time.Second)
	for s.rewatches.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watch was not reopened within 15s of losing quorum")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range c.Members[1:] {
		if err := m.Start("existing"); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Members {
		if err := m.WaitHealthy(); err != nil {
			t.Fatal(err)
		}
	}
	w.write(t, 10)
	events.waitFor(t, w.last)
	events.check(t, w)
}
