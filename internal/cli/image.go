package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/moorage/moorage/internal/image"
)

// imageCommand manages the node's image store (DATA/agent/images), which
// the agent of `moorage up` reads when it starts containers.
func imageCommand() *cobra.Command {
	var dataDir string
	open := func() (*image.Store, error) {
		return image.Open(filepath.Join(dataDir, "agent", "images"))
	}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage this node's container images (import archives, name host programs, list, remove)",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", DefaultDataDir(), "moorage's data directory")

	importCmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import images from `docker save` archives or OCI image-layout tarballs (plain or gzipped)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := open()
			if err != nil {
				return err
			}
			defer store.Close()
			for _, path := range args {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				imgs, err := store.Import(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				for _, img := range imgs {
					fmt.Fprintf(cmd.OutOrStdout(), "imported %s (%s)\n", img.Ref, shortID(img.ID))
				}
			}
			return nil
		},
	}

	var cfg image.Config
	var entrypoint string
	hostCmd := &cobra.Command{
		Use:   "host NAME",
		Short: "Name this machine's own root filesystem as an image, to run host-installed programs (Debian's nginx, mariadb, busybox) where manifests say NAME",
		Example: `  moorage image host nginx --entrypoint /usr/sbin/nginx --cmd -g --cmd 'daemon off;'
  moorage image host busybox --cmd sh
  moorage image host mysql:5.7 --entrypoint /usr/sbin/mariadbd --cmd --user=root`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if entrypoint != "" {
				cfg.Entrypoint = []string{entrypoint}
			}
			if len(cfg.Env) == 0 {
				cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
			}
			store, err := open()
			if err != nil {
				return err
			}
			defer store.Close()
			img, err := store.AddHost(args[0], cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is now this host's root filesystem (%s)\n", img.Ref, shortID(img.ID))
			return nil
		},
	}
	hostCmd.Flags().StringVar(&entrypoint, "entrypoint", "", "the image's entrypoint (a program on this host)")
	hostCmd.Flags().StringArrayVar(&cfg.Cmd, "cmd", nil, "the image's default arguments (repeat for each)")
	hostCmd.Flags().StringArrayVar(&cfg.Env, "env", nil, "KEY=VALUE environment of the image (repeat for each); default PATH only")
	hostCmd.Flags().StringVar(&cfg.WorkingDir, "workdir", "", "the image's working directory")
	hostCmd.Flags().StringVar(&cfg.User, "user", "", "the image's user (uid[:gid])")

	lsCmd := &cobra.Command{
		Use:   "ls",
		Short: "List the images on this node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := open()
			if err != nil {
				return err
			}
			defer store.Close()
			imgs, err := store.List()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tID\tSIZE\tROOT")
			for _, img := range imgs {
				root := "layers"
				if len(img.Layers) == 1 && img.Layers[0] == "/" {
					root = "host"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", img.Ref, shortID(img.ID), humanSize(img.Size), root)
			}
			return tw.Flush()
		},
	}
	rmCmd := &cobra.Command{
		Use:   "rm IMAGE...",
		Short: "Remove images from this node",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := open()
			if err != nil {
				return err
			}
			defer store.Close()
			for _, ref := range args {
				if err := store.Remove(ref); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", ref)
			}
			return nil
		},
	}
	cmd.AddCommand(importCmd, hostCmd, lsCmd, rmCmd)
	return cmd
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
