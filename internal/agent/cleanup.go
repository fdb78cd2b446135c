package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/volume"
)

// KillAll stops and removes every container and sandbox of the agent whose
// data directory is dataDir, then unmounts everything mounted under it
// (volumes, container roots), deepest first. The agent must not be running.
// It is what `moorage killall` runs, and what tests run before deleting a
// data directory, so that no removal ever reaches through a bind mount.
func KillAll(ctx context.Context, dataDir string, shim []string) error {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	var errs []error
	if rt, err := container.New(container.Config{StateDir: filepath.Join(dataDir, "containers"), ShimCommand: shim}); err == nil {
		ids, _ := rt.List()
		for _, id := range ids {
			if err := rt.Remove(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
		sandboxes, _ := rt.ListSandboxes()
		for _, id := range sandboxes {
			if err := rt.RemoveSandbox(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
	} else if _, statErr := os.Stat(filepath.Join(dataDir, "containers")); statErr == nil {
		errs = append(errs, err)
	}
	if err := volume.UnmountUnder(dataDir); err != nil {
		errs = append(errs, err)
	}
	if parent, err := os.ReadFile(filepath.Join(dataDir, "cgroup-parent")); err == nil && strings.HasPrefix(string(parent), "/moorage") {
		hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
		for _, h := range hierarchies {
			_ = unix.Rmdir(filepath.Join("/sys/fs/cgroup", h.Name(), string(parent)))
		}
	}
	return errors.Join(errs...)
}
