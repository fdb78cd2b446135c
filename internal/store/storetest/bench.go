package storetest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/moorage/moorage/internal/store"
)

// NewBenchStore opens a new, empty store configured by cfg, for the
// benchmark b, as it runs in production (durable commits). The benchmark
// closes it.
type NewBenchStore func(b *testing.B, cfg Config) store.Store

// RunBenchmarks measures a backend, the same way for each, so that their
// figures compare (docs/benchmarks.md): one writer, many writers, reads,
// a list of 10,000 keys, and a write's delivery to 100 watchers.
func RunBenchmarks(b *testing.B, open NewBenchStore) {
	newStore := func(b *testing.B, cfg Config) store.Store {
		s := open(b, cfg)
		b.Cleanup(func() { s.Close() })
		return s
	}
	b.Run("Create", func(b *testing.B) { benchCreate(b, newStore(b, Config{})) })
	b.Run("CreateParallel", func(b *testing.B) { benchCreateParallel(b, newStore(b, Config{})) })
	b.Run("Get", func(b *testing.B) { benchGet(b, newStore(b, Config{})) })
	b.Run("List10000", func(b *testing.B) { benchList(b, newStore(b, Config{})) })
	b.Run("WatchFanout100", func(b *testing.B) { benchWatchFanout(b, newStore(b, Config{WatchBuffer: 100000})) })
}

// fill creates n keys prefix%06d with values of size bytes, concurrently.
func fill(b *testing.B, s store.Store, prefix string, n, size int) {
	b.Helper()
	value := bytes.Repeat([]byte("v"), size)
	var wg sync.WaitGroup
	const workers = 64
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if _, err := s.Create(b.Context(), fmt.Sprintf("%s%06d", prefix, i), value); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// benchCreate measures one writer: every create waits for its own commit.
func benchCreate(b *testing.B, s store.Store) {
	value := bytes.Repeat([]byte("v"), 256)
	i := 0
	for b.Loop() {
		if _, err := s.Create(b.Context(), fmt.Sprintf("/bench/%09d", i), value); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// benchCreateParallel measures many writers sharing commits.
func benchCreateParallel(b *testing.B, s store.Store) {
	value := bytes.Repeat([]byte("v"), 256)
	var n atomic.Int64
	b.SetParallelism(32) // 32 writers per GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Create(b.Context(), fmt.Sprintf("/bench/%09d", n.Add(1)), value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchGet reads random keys of 1,000 with 256-byte values.
func benchGet(b *testing.B, s store.Store) {
	const keys = 1000
	fill(b, s, "/get/", keys, 256)
	for b.Loop() {
		if _, err := s.Get(b.Context(), fmt.Sprintf("/get/%06d", rand.IntN(keys))); err != nil {
			b.Fatal(err)
		}
	}
}

// benchList lists a prefix of 10,000 keys with 1 KiB values.
func benchList(b *testing.B, s store.Store) {
	const keys = 10000
	fill(b, s, "/list/", keys, 1024)
	fill(b, s, "/other/", 100, 1024)
	for b.Loop() {
		res, err := s.List(b.Context(), "/list/", store.ListOptions{})
		if err != nil || len(res.KVs) != keys {
			b.Fatalf("List: %d keys, %v", len(res.KVs), err)
		}
	}
}

// benchWatchFanout measures a write delivered to 100 watchers of its
// prefix: each op is one create, timed until every watcher has received
// every create.
func benchWatchFanout(b *testing.B, s store.Store) {
	const watchers = 100
	value := bytes.Repeat([]byte("v"), 256)
	var received sync.WaitGroup
	for range watchers {
		w, err := s.Watch(b.Context(), "/fan/", 0)
		if err != nil {
			b.Fatal(err)
		}
		received.Go(func() {
			for range b.N {
				if _, ok := <-w.Events; !ok {
					b.Errorf("watch ended: %v", w.Err())
					return
				}
			}
		})
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Create(b.Context(), fmt.Sprintf("/fan/%09d", i), value); err != nil {
			b.Fatal(err)
		}
	}
	received.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*watchers)/b.Elapsed().Seconds(), "deliveries/s")
}
