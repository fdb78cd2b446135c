package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/fsutil"
)

// tokenCommand manages bootstrap tokens, as `kubeadm token` does.
func tokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage bootstrap tokens, with which agents join a server (moorage agent --server URL --token TOKEN)",
	}
	cmd.AddCommand(tokenCreateCommand())
	return cmd
}

func tokenCreateCommand() *cobra.Command {
	var dataDir, kubeconfig, description string
	var ttl time.Duration
	var printJoin bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a bootstrap token (stored as the Secret kube-system/bootstrap-token-<id>) and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl %s: may not be negative (0 means the token never expires)", ttl)
			}
			if cmd.Flags().Changed("kubeconfig") && cmd.Flags().Changed("data-dir") {
				return errors.New("--kubeconfig and --data-dir name the server two ways: give one")
			}
			if kubeconfig == "" {
				kubeconfig = filepath.Join(dataDir, "kubeconfig")
			}
			loaded, err := clientcmd.LoadFromFile(kubeconfig)
			if err != nil {
				return fmt.Errorf("--kubeconfig: %w", err)
			}
			cfg, err := clientcmd.NewDefaultClientConfig(*loaded, nil).ClientConfig()
			if err != nil {
				return fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
			}
			client, err := kubernetes.NewForConfig(rest.AddUserAgent(cfg, "moorage-token"))
			if err != nil {
				return err
			}
			t, err := bootstraptoken.Generate()
			if err != nil {
				return err
			}
			secret := bootstraptoken.NewSecret(t, ttl, time.Now(), description)
			if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Create(cmd.Context(), secret, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating the bootstrap token: %w", err)
			}
			if printJoin {
				fmt.Fprintf(cmd.OutOrStdout(), "moorage agent --server %s --token %s\n", cfg.Host, t)
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid; 0 means it never expires (an agent joined with it keeps using it: see `moorage agent --token`)")
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir(), "data directory of the server (its kubeconfig is used)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the server (default: <data-dir>/kubeconfig)")
	cmd.Flags().StringVar(&description, "description", "", "a human-friendly description of how this token is used")
	cmd.Flags().BoolVar(&printJoin, "print-join-command", false, "print the whole `moorage agent` command that joins with the token, instead of the token only")
	return cmd
}

// joinedKubeconfig is where `moorage agent --token` keeps the kubeconfig
// it joined with, in its data directory, so that a restart without --token
// finds the server again.
func joinedKubeconfig(dataDir string) string { return filepath.Join(dataDir, "agent.kubeconfig") }

func writeJoined(path string, cfg *clientcmdapi.Config) error {
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, data, 0o600)
}
