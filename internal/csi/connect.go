package csi

import (
	"context"
	"log/slog"
	"time"
)

// DriverName is name if it is set, else the name the driver reports
// (GetPluginInfo): how the sidecars learn which driver they serve.
func (c *Client) DriverName(ctx context.Context, name string) (string, error) {
	if name != "" {
		return name, nil
	}
	info, err := c.PluginInfo(ctx)
	if err != nil {
		return "", err
	}
	return info.Name, nil
}

// RetryUntilReady calls f until it succeeds or ctx ends, waiting start
// after the first failure and twice as long after each next one, up to
// max; each failure is logged. The sidecars use it to wait for a driver
// that is not serving yet.
func RetryUntilReady(ctx context.Context, log *slog.Logger, start, max time.Duration, f func(context.Context) error) error {
	delay := start
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		log.Info("CSI driver not ready; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, max)
	}
}
