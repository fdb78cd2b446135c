package etcd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/moorage/moorage/internal/store"
)

// benchStore opens a store on a new one-member etcd with its production
// settings (every commit fsynced).
func benchStore(b *testing.B, cfg Config) *Store {
	b.Helper()
	c := startCluster(b, 1)
	cfg.Endpoints = c.endpoints()
	return openTest(b, cfg)
}

// fill creates n keys prefix%06d with values of size bytes, concurrently.
func fill(b *testing.B, s *Store, prefix string, n, size int) {
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

// BenchmarkCreate measures one writer: every create waits for its own commit.
func BenchmarkCreate(b *testing.B) {
	s := benchStore(b, Config{})
	value := bytes.Repeat([]byte("v"), 256)
	i := 0
	for b.Loop() {
		if _, err := s.Create(b.Context(), fmt.Sprintf("/bench/%09d", i), value); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCreateParallel measures many writers sharing etcd's batched
// commits.
func BenchmarkCreateParallel(b *testing.B) {
	s := benchStore(b, Config{})
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

// BenchmarkGet reads random keys of 1,000 with 256-byte values
// (linearizable reads, as the store always does).
func BenchmarkGet(b *testing.B) {
	const keys = 1000
	s := benchStore(b, Config{})
	fill(b, s, "/get/", keys, 256)
	for b.Loop() {
		if _, err := s.Get(b.Context(), fmt.Sprintf("/get/%06d", rand.IntN(keys))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList10000 lists a prefix of 10,000 keys with 1 KiB values.
func BenchmarkList10000(b *testing.B) {
	const keys = 10000
	s := benchStore(b, Config{})
	fill(b, s, "/list/", keys, 1024)
	fill(b, s, "/other/", 100, 1024)
	for b.Loop() {
		res, err := s.List(b.Context(), "/list/", store.ListOptions{})
		if err != nil || len(res.KVs) != keys {
			b.Fatalf("List: %d keys, %v", len(res.KVs), err)
		}
	}
}

// BenchmarkWatchFanout100 measures a write delivered to 100 watchers of its
// prefix: each op is one create, timed until every watcher has received
// every create.
func BenchmarkWatchFanout100(b *testing.B) {
	const watchers = 100
	s := benchStore(b, Config{WatchBuffer: 100000})
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
