package apiserver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/store/embedded"
)

// The hub gives each watch exactly the store's events after its revision
// under its prefix, in order: replayed from memory, then live; a watch
// from before the hub began goes to the store; a reader that falls behind
// is closed with ErrSlowConsumer.
func TestWatchHub(t *testing.T) {
	st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	res, ok := registry.Builtin().Lookup(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"})
	if !ok {
		t.Fatal("no configmaps")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hubs := &watchHubs{st: st, hubs: map[*registry.Resource]*watchHub{}}
	write := func(ns string, i int) int64 {
		kv, err := st.Create(ctx, res.Key(ns, fmt.Sprintf("cm-%d", i)), []byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		return kv.ModRevision
	}
	write("z", 0) // so that r0-1 is a revision, not 0 ("from now")
	r0 := write("a", 0)
	all, err := hubs.watch(ctx, res, res.KeyPrefix(""), r0)
	if err != nil {
		t.Fatal(err)
	}
	var mid int64
	want := map[string][]int64{} // watch -> revisions
	for i := 1; i <= 100; i++ {
		ns := []string{"a", "b"}[i%2]
		rev := write(ns, i)
		want["all"] = append(want["all"], rev)
		if i == 50 {
			mid = rev
		}
		if i > 50 && ns == "a" {
			want["a"] = append(want["a"], rev)
		}
	}
	a, err := hubs.watch(ctx, res, res.KeyPrefix("a"), mid) // replayed from the hub
	if err != nil {
		t.Fatal(err)
	}
	old, err := hubs.watch(ctx, res, res.KeyPrefix(""), r0-1) // before the hub: the store
	if err != nil {
		t.Fatal(err)
	}
	want["old"] = append([]int64{r0}, want["all"]...)
	for i := 101; i <= 110; i++ {
		ns := []string{"a", "b"}[i%2]
		rev := write(ns, i)
		want["all"] = append(want["all"], rev)
		want["old"] = append(want["old"], rev)
		if ns == "a" {
			want["a"] = append(want["a"], rev)
		}
	}
	for name, w := range map[string]store.WatchResult{"all": all, "a": a, "old": old} {
		for _, rev := range want[name] {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					t.Fatalf("%s: closed early: %v", name, w.Err())
				}
				if ev.KV.ModRevision != rev {
					t.Fatalf("%s: event at %d, want %d", name, ev.KV.ModRevision, rev)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no event %d", name, rev)
			}
		}
		select {
		case ev := <-w.Events:
			t.Fatalf("%s: unexpected event %+v", name, ev)
		default:
		}
	}

	// A watcher that reads nothing is closed once its buffer is full.
	slow, err := hubs.watch(ctx, res, res.KeyPrefix(""), want["all"][len(want["all"])-1])
	if err != nil {
		t.Fatal(err)
	}
	for i := range hubBuffer + 10 {
		write("c", 1000+i)
	}
	n := 0
	for range slow.Events {
		n++
	}
	if !errors.Is(slow.Err(), store.ErrSlowConsumer) || n > hubBuffer {
		t.Fatalf("slow watcher: %d events then %v; want at most %d, then ErrSlowConsumer", n, slow.Err(), hubBuffer)
	}
}
