package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/csi/local"
	"github.com/moorage/moorage/internal/csi/registration"
)

// csiDriverCommand runs the built-in CSI driver local.csi.moorage.io on
// its own, as any CSI driver runs: a gRPC server on a unix socket.
func csiDriverCommand() *cobra.Command {
	var endpoint, nodeID, dataDir, logLevel, registrationDir string
	cmd := &cobra.Command{
		Use:   "csi-driver",
		Short: "Run the built-in CSI driver " + local.DriverName + " (node-local volumes: sparse images on loop devices) on a unix socket",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			if nodeID == "" {
				host, err := os.Hostname()
				if err != nil {
					return fmt.Errorf("--node-id: %w", err)
				}
				nodeID = host
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if registrationDir == "" {
				return local.Serve(ctx, endpoint, local.Options{NodeID: nodeID, DataDir: dataDir, Version: app.Version, Logger: log})
			}
			// The driver and its registration (node-driver-registrar's
			// part): the registration socket appears once the driver
			// serves, and goes when it stops.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var wg sync.WaitGroup
			var regErr error
			serving := make(chan struct{})
			wg.Go(func() {
				select {
				case <-serving:
				case <-ctx.Done():
					return
				}
				regErr = registration.Serve(ctx, registrationDir, registration.Info{Name: local.DriverName, Endpoint: endpoint}, log, nil)
				if regErr != nil {
					cancel()
				}
			})
			err := local.Serve(ctx, endpoint, local.Options{NodeID: nodeID, DataDir: dataDir, Version: app.Version, Logger: log, Serving: func() { close(serving) }})
			cancel()
			wg.Wait()
			return errors.Join(err, regErr)
		},
	}
	dir := filepath.Join(DefaultDataDir(), "csi", "local")
	cmd.Flags().StringVar(&endpoint, "endpoint", "unix://"+filepath.Join(dir, "csi.sock"), "unix socket to serve CSI on (unix:///absolute/path)")
	cmd.Flags().StringVar(&nodeID, "node-id", "", "this node's ID, the value of the topology key "+local.TopologyKey+" (default: the host name)")
	cmd.Flags().StringVar(&dataDir, "data-dir", dir, "directory for the volumes' image files and records")
	cmd.Flags().StringVar(&registrationDir, "registration-dir", "", "also register the driver with the agent on this node, as node-driver-registrar does: serve a registration socket in this directory (the agent's <data-dir>/agent/plugins_registry)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}
