// Package cli is moorage's command line: it parses flags and hands over to
// package app. `moorage kubectl` runs the embedded, unmodified kubectl.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/csi/local"
)

// Main runs the command line with args (without the program name) and
// returns the exit code.
func Main(args []string) int {
	if len(args) > 0 && args[0] == "kubectl" {
		return runKubectl(args[1:])
	}
	if len(args) > 0 && args[0] == shimCommand {
		return container.ShimMain(args[1:])
	}
	root := &cobra.Command{
		Use:           "moorage",
		Short:         "Kubernetes' storage system — volumes, claims, classes, CSI, StatefulSets — as one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(upCommand("up", "Run the server and this machine's agent in one process (the default way to run moorage)", true),
		upCommand("server", "Run the API server, controllers and scheduler alone", false),
		versionCommand(),
		explainCommand(),
		imageCommand(),
		killallCommand(),
		agentCommand(),
		tokenCommand(),
		csiDriverCommand(),
		&cobra.Command{Use: "kubectl", Short: "Run the embedded kubectl (all arguments are kubectl's)", DisableFlagParsing: true})
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "moorage:", err)
		return 1
	}
	return 0
}

// DefaultDataDir is ~/.moorage.
func DefaultDataDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ".moorage"
	}
	return filepath.Join(home, ".moorage")
}

// shimCommand is the hidden command the container runtime starts its
// per-container shims and pod sandboxes with.
const shimCommand = "container-shim"

func upCommand(name, short string, withAgent bool) *cobra.Command {
	opts := app.ServerOptions{Agent: withAgent}
	var logLevel string
	var controllers []string
	builtinCSI := true
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			opts.NoBuiltinCSIDriver, opts.DriverControllers = !builtinCSI, runDriverControllers
			without, err := app.LeftOut(controllers)
			if err != nil {
				return fmt.Errorf("--controllers: %w", err)
			}
			opts.WithoutControllers = without
			if e := opts.Etcd; len(e.Endpoints) == 0 && (e.CAFile != "" || e.CertFile != "" || e.KeyFile != "") {
				return errors.New("--etcd-cafile, --etcd-certfile and --etcd-keyfile need --etcd-endpoints")
			}
			if err := checkLeaderElection(opts.LeaderElection); err != nil {
				return err
			}
			if opts.Tuning.NodeMonitorGracePeriod <= 0 {
				return fmt.Errorf("--node-monitor-grace-period %s: must be positive", opts.Tuning.NodeMonitorGracePeriod)
			}
			if opts.Agent {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				opts.ShimCommand = []string{self, shimCommand}
			}
			return runServer(cmd.Context(), cmd.OutOrStdout(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", DefaultDataDir(), "directory for state, certificates and the kubeconfig")
	cmd.Flags().StringVar(&opts.Listen, "listen", "127.0.0.1:6443", "address (host:port) the API server listens on")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringSliceVar(&controllers, "controllers", []string{"*"}, "controllers to run, as kube-controller-manager's flag: '*' is all, 'name' enables one, '-name' leaves one out (e.g. *,-statefulset-controller)")
	cmd.Flags().StringSliceVar(&opts.Etcd.Endpoints, "etcd-endpoints", nil, "keep the objects in etcd (3.4 or newer) at these client URLs (comma-separated) instead of the embedded store; --etcd-servers, kube-apiserver's name, works too")
	cmd.Flags().StringVar(&opts.Etcd.Prefix, "etcd-prefix", app.DefaultEtcdPrefix, "the prefix of every key moorage keeps in etcd")
	cmd.Flags().StringVar(&opts.Etcd.CAFile, "etcd-cafile", "", "CA certificate that signs the etcd servers' certificates (TLS)")
	cmd.Flags().StringVar(&opts.Etcd.CertFile, "etcd-certfile", "", "client certificate for etcd (TLS)")
	cmd.Flags().StringVar(&opts.Etcd.KeyFile, "etcd-keyfile", "", "client key for etcd (TLS)")
	cmd.Flags().DurationVar(&opts.LeaderElection.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "with --etcd-endpoints: how long the other servers wait after the leader's last renewal before one of them takes over the controllers and the scheduler")
	cmd.Flags().DurationVar(&opts.LeaderElection.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "with --etcd-endpoints: how long the leader tries to renew its lease before it stops its controllers")
	cmd.Flags().DurationVar(&opts.LeaderElection.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "with --etcd-endpoints: how often the servers try to take, and the leader renews, the lease")
	cmd.Flags().DurationVar(&opts.Tuning.NodeMonitorGracePeriod, "node-monitor-grace-period", 50*time.Second, "how long a node may go without a heartbeat before it is NotReady (kube-controller-manager's flag)")
	cmd.Flags().SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "etcd-servers" {
			name = "etcd-endpoints"
		}
		return pflag.NormalizedName(name)
	})
	if withAgent {
		cmd.Flags().StringVar(&opts.NodeName, "node-name", "", "name of this machine's Node (default: the host name)")
		cmd.Flags().BoolVar(&builtinCSI, "builtin-csi-driver", true, "run the built-in CSI driver "+local.DriverName+" and its provisioner on this node")
	}
	return cmd
}

func runServer(ctx context.Context, out io.Writer, opts app.ServerOptions) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := app.StartServer(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "moorage %s is ready at %s (in %d ms)\nkubeconfig: %s\n  kubectl --kubeconfig %s get ns\n",
		app.Version, srv.URL, srv.Ready.Milliseconds(), srv.Kubeconfig, srv.Kubeconfig)
	<-ctx.Done()
	fmt.Fprintln(out, "moorage: shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print moorage's version and the Kubernetes API version it serves",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "moorage %s (Kubernetes API %s)\n", app.Version, app.KubernetesVersion.GitVersion)
		},
	}
}

// checkLeaderElection: the lease outlasts the renewal, which outlasts a
// retry with client-go's jitter (upstream's rules).
func checkLeaderElection(o app.LeaderElection) error {
	switch {
	case o.RetryPeriod <= 0:
		return fmt.Errorf("--leader-elect-retry-period %s: must be positive", o.RetryPeriod)
	case o.RenewDeadline <= o.RetryPeriod*6/5:
		return fmt.Errorf("--leader-elect-renew-deadline %s: must be more than 1.2 × --leader-elect-retry-period (%s)", o.RenewDeadline, o.RetryPeriod)
	case o.LeaseDuration <= o.RenewDeadline:
		return fmt.Errorf("--leader-elect-lease-duration %s: must be more than --leader-elect-renew-deadline (%s)", o.LeaseDuration, o.RenewDeadline)
	}
	return nil
}
