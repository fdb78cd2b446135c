// Package queue holds the work loop most of the server's controllers share:
// take a key off a rate-limited work queue, sync it, forget it on success
// and put it back with back-off on failure, until the queue shuts down.
package queue

import (
	"context"

	"k8s.io/client-go/util/workqueue"
)

// Work syncs q's keys until q shuts down. A failed sync calls failed (to
// log it; not while ctx is done, when failures are the shutdown's) and
// requeues the key with back-off.
func Work[K comparable](ctx context.Context, q workqueue.TypedRateLimitingInterface[K], sync func(context.Context, K) error, failed func(K, error)) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		if err := sync(ctx, key); err != nil {
			if ctx.Err() == nil {
				failed(key, err)
			}
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}
