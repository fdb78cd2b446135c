package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/container"
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
	if err := unmountUnder(dataDir); err != nil {
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

// unmountUnder unmounts every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	f.Close()
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(p string) string {
	if !strings.Contains(p, `\`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+3 < len(p) {
			var v int
			if _, err := fmt.Sscanf(p[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
