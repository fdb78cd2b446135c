package store

import (
	"context"
	"time"
)

// RunCompactor keeps a Store's history bounded as upstream's API server does
// with etcd: every interval it compacts away the revisions older than the
// current revision of one interval earlier, so clients can always resume a
// watch from anything they saw within the last interval. It returns when ctx
// is done.
func RunCompactor(ctx context.Context, s Store, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var previous int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if previous > 0 {
			_ = s.Compact(ctx, previous) // a failure is retried next round
		}
		if rev, err := s.CurrentRevision(ctx); err == nil {
			previous = rev
		}
	}
}
