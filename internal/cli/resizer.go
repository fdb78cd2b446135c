package cli

import (
	"context"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/controller/resizer"
)

// startResizer starts the driver's external-resizer
// (internal/controller/resizer) until ctx ends or stop is called; stop
// returns once it has stopped. A node-local driver's resizer expands the
// volumes on its own node only, as each node runs one. A driver that can
// expand nothing gets no resizer (Run returns at once, as the sidecar
// refuses to start).
func startResizer(ctx context.Context, d agent.CSIDriver) (stop func(), err error) {
	opts := resizer.Options{DriverName: d.Name}
	if d.NodeLocal {
		opts.NodeLocal, opts.NodeName = true, d.NodeName
	}
	r, err := resizer.New(d.Config, d.Client, d.Logger, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}, nil
}
