package storetest

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/moorage/moorage/internal/store"
)

func concurrencyTests() []test {
	return []test{
		{"a counter incremented by concurrent CAS loops loses no update", testCASCounter},
		{"concurrent creates of one key have exactly one winner", testCreateRace},
	}
}

func testCASCounter(t *testing.T, newStore NewStore) {
	const workers, increments = 8, 10
	s := open(t, newStore, Config{})
	ctx := t.Context()
	mustCreate(t, s, "/counter", "0")
	var (
		mu   sync.Mutex
		revs = make(map[int64]string) // revision -> value written
		wg   sync.WaitGroup
	)
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range increments {
				for {
					cur, err := s.Get(ctx, "/counter")
					if err != nil {
						errs <- err
						return
					}
					n, err := strconv.Atoi(string(cur.Value))
					if err != nil {
						errs <- fmt.Errorf("counter value %q: %w", cur.Value, err)
						return
					}
					value := strconv.Itoa(n + 1)
					kv, err := s.Update(ctx, "/counter", []byte(value), cur.ModRevision)
					if errors.Is(err, store.ErrConflict) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if prev, dup := revs[kv.ModRevision]; dup {
						errs <- fmt.Errorf("revision %d won twice (%s and %s)", kv.ModRevision, prev, value)
					}
					revs[kv.ModRevision] = value
					mu.Unlock()
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Get(ctx, "/counter")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(workers * increments); string(got.Value) != want {
		t.Fatalf("counter = %s, want %s", got.Value, want)
	}
	// Each winner wrote the successor of the value at the revision before.
	for rev := int64(2); rev <= got.ModRevision; rev++ {
		if want := strconv.Itoa(int(rev - 1)); revs[rev] != want {
			t.Fatalf("revision %d wrote %q, want %q", rev, revs[rev], want)
		}
	}
}

func testCreateRace(t *testing.T, newStore NewStore) {
	const workers = 8
	s := open(t, newStore, Config{})
	ctx := t.Context()
	results := make(chan error, workers)
	winners := make(chan store.KeyValue, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			kv, err := s.Create(ctx, "/race", []byte(strconv.Itoa(i)))
			if err == nil {
				winners <- kv
			}
			results <- err
		})
	}
	wg.Wait()
	close(results)
	close(winners)
	for err := range results {
		if err != nil && !errors.Is(err, store.ErrExists) {
			t.Fatalf("Create: %v, want nil or ErrExists", err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d creates succeeded, want 1", len(winners))
	}
	winner := <-winners
	got, err := s.Get(ctx, "/race")
	if err != nil {
		t.Fatal(err)
	}
	wantKV(t, "Get", got, winner)
}
