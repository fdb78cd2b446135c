package cli

import (
	"context"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/controller/attacher"
)

// startAttacher starts the driver's external-attacher
// (internal/controller/attacher) until ctx ends or stop is called; stop
// returns once it has stopped. A node-local driver's attacher handles the
// VolumeAttachments to its own node only, as each node runs one.
func startAttacher(ctx context.Context, d agent.CSIDriver) (stop func(), err error) {
	opts := attacher.Options{DriverName: d.Name}
	if d.NodeLocal {
		opts.NodeName = d.NodeName
	}
	a, err := attacher.New(d.Config, d.Client, d.Logger, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}, nil
}
