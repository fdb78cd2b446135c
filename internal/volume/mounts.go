package volume

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/moorage/moorage/internal/mountinfo"
)

// mountAt says whether path is a mount point and, if so, its topmost
// mount (the last one listed).
func mountAt(path string) (mountinfo.Mount, bool, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return mountinfo.Mount{}, false, err
	}
	path = filepath.Clean(path)
	var found mountinfo.Mount
	ok := false
	for _, mi := range mounts {
		if mi.MountPoint == path {
			found, ok = mi, true
		}
	}
	return found, ok, nil
}

// isMountPoint says whether path is a mount point. The kernel tells (statx's
// STATX_ATTR_MOUNT_ROOT, Linux 5.8) without the mount table being read: the
// table grows with every pod's mounts, and reading it at each of every pod's
// syncs made syncing N pods cost O(N²). Where the kernel cannot tell, or the
// path cannot be examined (a dead FUSE mount), the table decides.
func isMountPoint(path string) (bool, error) {
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_TYPE, &st)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false, nil
	case err == nil && st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0:
		return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	_, mounted, err := mountAt(path)
	return mounted, err
}

// isTmpfs says whether path is a mount point whose topmost mount is a tmpfs.
func isTmpfs(path string) (bool, error) {
	mounted, err := isMountPoint(path)
	if err != nil || !mounted {
		return false, err
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return false, err
	}
	return fs.Type == unix.TMPFS_MAGIC, nil
}

// mountsUnder lists the mount points at or below dir, deepest first, once
// per stacked mount.
func mountsUnder(dir string) ([]string, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, mi := range mounts {
		if mi.MountPoint == dir || strings.HasPrefix(mi.MountPoint, dir+"/") {
			out = append(out, mi.MountPoint)
		}
	}
	// Deepest first. Stacked mounts appear once each: unmounting their
	// path as often takes them all, topmost first.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// UnmountUnder unmounts every mount at or below dir and checks that none
// is left. Unmounting in the host's mount namespace does not disturb a
// running container, which holds its own copy of each bind.
func UnmountUnder(dir string) error {
	for attempt := 0; attempt < 4; attempt++ {
		points, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		for _, p := range points {
			if err := unix.Unmount(p, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	points, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(points) > 0 {
		return fmt.Errorf("mounts left under %s after unmounting: %v", dir, points)
	}
	return nil
}

// mountTmpfs mounts a tmpfs at dir unless one is there already. size is
// its size limit (nil or zero: the kernel's default, half of RAM).
func mountTmpfs(dir string, size *resource.Quantity) error {
	if tmpfs, err := isTmpfs(dir); err != nil || tmpfs {
		return err
	}
	mi, mounted, err := mountAt(dir)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("%s is already a mount point of a %s file system, not a tmpfs", dir, mi.FSType)
	}
	var data string
	if size != nil && size.Sign() > 0 {
		data = fmt.Sprintf("size=%d", size.Value())
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, data); err != nil {
		return fmt.Errorf("mount tmpfs at %s (%s): %w", dir, data, err)
	}
	return nil
}

// bindMount binds src at dst, read-only if asked (a read-only bind needs a
// second, remounting call).
func bindMount(src, dst string, readOnly bool) error {
	var flags uintptr
	if readOnly {
		flags = unix.MS_RDONLY
	}
	return bindMountWith(src, dst, flags)
}

// bindMountWith bind-mounts src at dst, then applies the per-mount flags
// (MS_RDONLY, MS_NOEXEC, ...) with a remount, which a bind mount needs.
func bindMountWith(src, dst string, flags uintptr) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", src, dst, err)
	}
	if flags != 0 {
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
			_ = unix.Unmount(dst, 0)
			return fmt.Errorf("remount %s with %s: %w", dst, flagNames(flags), err)
		}
	}
	return nil
}

// bindFlags are the mount options a bind mount can take: the per-mount
// flags. File system options (data=, discard, ...) belong to the file
// system, which a bind mount of a directory does not mount.
var bindFlags = []struct {
	name string
	flag uintptr
}{
	{"ro", unix.MS_RDONLY},
	{"nosuid", unix.MS_NOSUID},
	{"nodev", unix.MS_NODEV},
	{"noexec", unix.MS_NOEXEC},
	{"noatime", unix.MS_NOATIME},
	{"nodiratime", unix.MS_NODIRATIME},
	{"relatime", unix.MS_RELATIME},
	{"strictatime", unix.MS_STRICTATIME},
}

// bindMountFlags turns a volume's mount options into bind mount flags;
// "rw", "suid", "dev", "exec" and "atime" are the defaults already. An
// option a bind mount cannot honour is an error naming it, rather than
// silently dropped.
func bindMountFlags(options []string) (uintptr, error) {
	var flags uintptr
	for _, opt := range options {
		opt = strings.TrimSpace(opt)
		switch opt {
		case "", "rw", "suid", "dev", "exec", "atime", "bind", "rbind", "defaults":
			continue
		}
		found := false
		for _, f := range bindFlags {
			if f.name == opt {
				flags, found = flags|f.flag, true
			}
		}
		if !found {
			var names []string
			for _, f := range bindFlags {
				names = append(names, f.name)
			}
			return 0, fmt.Errorf("mount option %q cannot apply to a bind mount of a directory (it takes %s)", opt, strings.Join(names, ", "))
		}
	}
	return flags, nil
}

// flagNames names flags for messages.
func flagNames(flags uintptr) string {
	var names []string
	for _, f := range bindFlags {
		if flags&f.flag != 0 {
			names = append(names, f.name)
		}
	}
	return strings.Join(names, ",")
}

// pvMountOptions are a volume's mount options: as upstream reads them, the
// older volume.beta.kubernetes.io/mount-options annotation (comma
// separated) when present, else spec.mountOptions.
func pvMountOptions(pv *corev1.PersistentVolume) []string {
	if a, ok := pv.Annotations[corev1.MountOptionAnnotation]; ok {
		var opts []string
		for _, o := range strings.Split(a, ",") {
			if o = strings.TrimSpace(o); o != "" {
				opts = append(opts, o)
			}
		}
		return opts
	}
	return pv.Spec.MountOptions
}

// removeAllOneFS removes path and everything below it without following
// symlinks and without crossing into another file system: a directory on
// another device is an error, so nothing mounted below path (which
// TearDown unmounts first) can ever be emptied by mistake.
func removeAllOneFS(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unlinkIgnoringMissing(unix.AT_FDCWD, path, 0)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := removeChildren(fd, path, st.Dev); err != nil {
		return err
	}
	return unlinkIgnoringMissing(unix.AT_FDCWD, path, unix.AT_REMOVEDIR)
}

// removeChildren empties the directory open at fd (and closes fd). It
// reads the whole listing, removes it, and reads again from the start
// until the directory is empty: removing entries while reading can make a
// file system skip some.
func removeChildren(fd int, path string, dev uint64) error {
	dir := os.NewFile(uintptr(fd), path)
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(-1)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return nil
		}
		for _, name := range names {
			if err := removeChild(fd, path, name, dev); err != nil {
				return err
			}
		}
		if _, err := dir.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
}

func removeChild(fd int, path, name string, dev uint64) error {
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	child := filepath.Join(path, name)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unlinkIgnoringMissing(fd, name, 0); err != nil {
			return fmt.Errorf("remove %s: %w", child, err)
		}
		return nil
	}
	if st.Dev != dev {
		return fmt.Errorf("refusing to remove %s: it is on another file system (a mount point?)", child)
	}
	cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", child, err)
	}
	if err := removeChildren(cfd, child, dev); err != nil {
		return err
	}
	if err := unlinkIgnoringMissing(fd, name, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("remove %s: %w", child, err)
	}
	return nil
}

func unlinkIgnoringMissing(dirfd int, name string, flags int) error {
	if err := unix.Unlinkat(dirfd, name, flags); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func isNotEmpty(err error) bool {
	return errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)
}

// sourceKind names the volume type set in a VolumeSource or a
// PersistentVolumeSource by its JSON field name ("nfs", "csi", ...).
func sourceKind(src any) string {
	v := reflect.Indirect(reflect.ValueOf(src))
	if v.Kind() != reflect.Struct {
		return "unknown"
	}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return "unknown"
}
