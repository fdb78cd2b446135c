package etcd

import (
	"testing"

	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/store/storetest"
	"github.com/moorage/moorage/internal/testserver/etcdtest"
)

// BenchmarkStore runs the backends' common benchmarks on a new one-member
// etcd with its production settings (every commit fsynced).
func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B, cfg storetest.Config) store.Store {
		c := etcdtest.StartCluster(b, 1)
		return openTest(b, Config{Endpoints: c.Endpoints(), WatchBuffer: cfg.WatchBuffer})
	})
}
