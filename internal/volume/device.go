package volume

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/mountinfo"
)

// A local volume whose path is a block device, used with volumeMode
// Filesystem, is formatted if it holds no file system yet and mounted once
// per node at <root>/plugins/kubernetes.io/local-volume/mounts/<pv name>
// (kubelet's "global mount"), with the volume's mount options; each pod
// then gets a bind of that mount. The global mount goes when the last pod
// using it is torn down.

// deviceMountsDir holds the global mounts of local block devices.
func (m *Manager) deviceMountsDir() string {
	return filepath.Join(m.root, "plugins", "kubernetes.io", "local-volume", "mounts")
}

// mountDevice mounts dev at dir (formatting it first if it holds no file
// system) unless dir is a mount point already. fsType is the volume's
// spec.local.fsType ("" means: what the device holds, else ext4).
func mountDevice(dev, dir, fsType string, options []string) error {
	if mounted, err := isMountPoint(dir); err != nil || mounted {
		return err
	}
	flags, data := deviceMountOptions(options)
	existing, err := deviceFormat(dev)
	if err != nil {
		return err
	}
	switch {
	case existing == "" && flags&unix.MS_RDONLY != 0:
		return fmt.Errorf("failed to mount unformatted volume %s as read only", dev)
	case existing == "":
		if fsType == "" {
			fsType = "ext4"
		}
		if err := format(dev, fsType); err != nil {
			return err
		}
	case fsType == "":
		fsType = existing
	case fsType != existing:
		return fmt.Errorf("failed to mount the volume as %q, it already contains %s", fsType, existing)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := unix.Mount(dev, dir, fsType, flags, data); err != nil {
		return fmt.Errorf("mount %s (%s, options %q) at %s: %w", dev, fsType, strings.Join(options, ","), dir, err)
	}
	return nil
}

// deviceMountOptions splits mount options into the kernel's per-mount flags
// and the file system's own options (passed as mount data).
func deviceMountOptions(options []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, opt := range options {
		opt = strings.TrimSpace(opt)
		switch opt {
		case "", "rw", "defaults", "suid", "dev", "exec", "atime":
			continue
		case "sync":
			flags |= unix.MS_SYNCHRONOUS
			continue
		case "dirsync":
			flags |= unix.MS_DIRSYNC
			continue
		}
		known := false
		for _, f := range bindFlags {
			if f.name == opt {
				flags, known = flags|f.flag, true
			}
		}
		if !known {
			data = append(data, opt)
		}
	}
	return flags, strings.Join(data, ",")
}

// deviceFormat is the file system type on dev, or "" if it holds none
// (blkid's probe, as upstream's SafeFormatAndMount uses).
func deviceFormat(dev string) (string, error) {
	out, err := exec.Command("blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", dev).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		return "", nil // nothing found
	}
	if err != nil {
		return "", fmt.Errorf("probing %s with blkid: %w", dev, err)
	}
	var fs, pt string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "TYPE="); ok {
			fs = v
		}
		if v, ok := strings.CutPrefix(line, "PTTYPE="); ok {
			pt = v
		}
	}
	if fs == "" && pt != "" {
		// A partition table is not a file system, and formatting over it
		// would destroy it.
		return "", fmt.Errorf("%s holds a partition table (%s), not a file system: refusing to format it", dev, pt)
	}
	return fs, nil
}

// format makes a file system of type fsType on dev.
func format(dev, fsType string) error {
	args := []string{dev}
	switch fsType {
	case "ext2", "ext3", "ext4":
		args = []string{"-F", "-m0", dev} // as upstream: no reserved blocks
	case "xfs", "btrfs":
		args = []string{"-f", dev}
	}
	mkfs := "mkfs." + fsType
	if _, err := exec.LookPath(mkfs); err != nil {
		return fmt.Errorf("cannot format %s as %s: %s is not installed on this node", dev, fsType, mkfs)
	}
	out, err := exec.Command(mkfs, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("formatting %s as %s: %v: %s", dev, fsType, err, bytes.TrimSpace(out))
	}
	return nil
}

// releaseDeviceMounts unmounts the global mounts of local block devices
// that no pod binds any more. A bind shows in mountinfo as another mount
// of the same source device.
func (m *Manager) releaseDeviceMounts() error {
	dir := m.deviceMountsDir()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	pods := filepath.Join(m.root, "pods") + "/"
	var errs []error
	for _, e := range entries {
		global := filepath.Join(dir, e.Name())
		var source string
		for _, mi := range mounts {
			if mi.MountPoint == global {
				source = mi.Source
			}
		}
		used := false
		for _, mi := range mounts {
			if source != "" && mi.Source == source && strings.HasPrefix(mi.MountPoint, pods) {
				used = true
			}
		}
		if used {
			continue
		}
		if source != "" {
			if err := unix.Unmount(global, 0); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", global, err))
				continue
			}
		}
		if err := os.Remove(global); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
