package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/volume"
)

// KillAll stops and removes every container and sandbox of the agent whose
// data directory is dataDir, then unmounts everything mounted under it
// (volumes, container roots), deepest first, detaches the loop devices of
// the built-in CSI driver's volumes and forgets what CSI volumes were
// staged and published here (nothing is, any more). The agent must not be
// running.
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
	} else {
		if err := detachLoopsUnder(dataDir); err != nil {
			errs = append(errs, err)
		}
		// NodeVolumes' records would say "staged" of volumes whose
		// staging mounts are gone; without them a restarted agent
		// stages and publishes again.
		if err := os.RemoveAll(filepath.Join(dataDir, "csi", "state")); err != nil {
			errs = append(errs, err)
		}
	}
	if parent, err := os.ReadFile(filepath.Join(dataDir, "cgroup-parent")); err == nil && strings.HasPrefix(string(parent), "/moorage") {
		hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
		for _, h := range hierarchies {
			_ = unix.Rmdir(filepath.Join("/sys/fs/cgroup", h.Name(), string(parent)))
		}
	}
	return errors.Join(errs...)
}

// detachLoopsUnder detaches every loop device whose backing file is under
// dir (the built-in CSI driver's volume images). Call it once nothing is
// mounted from them: a device still open would only be marked to detach
// on its last close.
func detachLoopsUnder(dir string) error {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // the driver records backing files by their real path
	}
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		backing := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
		if !strings.HasPrefix(backing, dir+"/") {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))
		fd, err := os.OpenFile(dev, os.O_RDONLY, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.IoctlSetInt(int(fd.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
			errs = append(errs, fmt.Errorf("detaching %s (%s): %w", dev, backing, err))
		}
		fd.Close()
	}
	return errors.Join(errs...)
}
