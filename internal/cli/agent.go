package cli

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/csi/local"
	"github.com/moorage/moorage/internal/fsutil"
)

// killallCommand stops everything the node agent started (as k3s's
// killall script does): the agent leaves containers running when moorage
// stops, as the kubelet does, so that a restart finds them again.
func killallCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "killall",
		Short: "Stop every container of this node and unmount its volumes (run it after stopping moorage)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lock, err := fsutil.TryLock(filepath.Join(dataDir, "moorage.lock"))
			if err != nil {
				return fmt.Errorf("moorage still runs with data dir %s (%w): stop it first", dataDir, err)
			}
			defer lock.Unlock()
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return agent.KillAll(cmd.Context(), filepath.Join(dataDir, "agent"), []string{self, shimCommand})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir(), "moorage's data directory")
	return cmd
}

// agentCommand runs a node agent alone, for a machine whose server runs
// elsewhere (or a second node on this machine).
func agentCommand() *cobra.Command {
	var kubeconfig, server, token, dataDir, nodeName, listen, nodeIP, logLevel string
	var certificateTimeout time.Duration
	builtinCSI := true
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a node agent: register this machine as a Node of the server (--server and --token, or --kubeconfig) and run its pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return err
			}
			lock, err := fsutil.TryLock(filepath.Join(dataDir, "agent.lock"))
			if err != nil {
				return fmt.Errorf("another agent runs with data dir %s: %w", dataDir, err)
			}
			defer lock.Unlock()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			cmd.SetContext(ctx)
			if nodeName == "" {
				if nodeName, err = os.Hostname(); err != nil {
					return err
				}
			}
			creds, err := agentConfig(cmd, dataDir, kubeconfig, server, token, nodeName, certificateTimeout)
			if err != nil {
				return err
			}
			cfg := creds.cfg
			cfg.QPS = -1
			cas, err := clientCAs(cfg)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			defer ln.Close()
			addr := ln.Addr().(*net.TCPAddr)
			if nodeIP == "" && !addr.IP.IsUnspecified() {
				nodeIP = addr.IP.String() // where the server must reach this agent
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			a, err := agent.New(cfg, log, agent.Options{
				NodeName: nodeName, DataDir: filepath.Join(dataDir, "agent"), NodeIP: nodeIP, Port: addr.Port,
				Version: app.KubernetesVersion.GitVersion, RuntimeVersion: "runc://1", ShimCommand: []string{self, shimCommand},
				NoBuiltinCSIDriver: !builtinCSI, DriverVersion: app.Version, DriverControllers: runDriverControllers,
			})
			if err != nil {
				return err
			}
			if creds.node != nil {
				if err := creds.node.renew(ctx, cfg, log); err != nil {
					return err
				}
			}
			// Servers present a client certificate of the CA the agent's
			// kubeconfig trusts; a bearer token the API server accepts is
			// taken too (the kubeconfig's own, when it has one).
			go func() {
				if err := a.Serve(ctx, ln, agent.ServeOptions{ClientCAs: cas, Token: cfg.BearerToken}); err != nil {
					log.Error("agent API stopped", "err", err)
				}
			}()
			fmt.Fprintf(cmd.OutOrStdout(), "moorage agent %s: node %s, API at %s\n", app.Version, a.NodeName(), ln.Addr())
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", filepath.Join(DefaultDataDir(), "kubeconfig"), "kubeconfig of the server to join (default: the one an earlier --token join kept in --data-dir, else this)")
	cmd.Flags().StringVar(&server, "server", "", "URL of the server to join with --token (https://host:port); several servers sharing one etcd, comma-separated: the agent reaches whichever is up")
	cmd.Flags().StringVar(&token, "token", "", "bootstrap token to join --server with (`moorage token create` on the server): with it the agent asks for its node client certificate (a CertificateSigningRequest the server approves and signs) and keeps a kubeconfig with that certificate in --data-dir; the token is not needed after that")
	cmd.Flags().DurationVar(&certificateTimeout, "certificate-timeout", 5*time.Minute, "with --token: how long to wait for the node certificate to be approved and issued")
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir(), "directory for the agent's state (under agent/)")
	cmd.Flags().StringVar(&nodeName, "node-name", "", "name of this Node (default: the host name)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:10250", "address (host:port) of the agent's API for logs and exec")
	cmd.Flags().StringVar(&nodeIP, "node-ip", "", "the InternalIP to report (default: the --listen host)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().BoolVar(&builtinCSI, "builtin-csi-driver", true, "run the built-in CSI driver "+local.DriverName+" and its provisioner on this node")
	return cmd
}
