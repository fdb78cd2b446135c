package embedded

import (
	"path/filepath"
	"testing"

	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/store/storetest"
)

// BenchmarkStore runs the backends' common benchmarks on a new store file.
func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B, cfg storetest.Config) store.Store {
		s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{WatchBuffer: cfg.WatchBuffer})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
