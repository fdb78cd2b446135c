package local

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moorage/moorage/internal/mountinfo"
)

// mountEntry is a mount of the table (read afresh every time, never
// remembered), with what the driver asks of it.
type mountEntry struct{ mountinfo.Mount }

func readMounts() ([]mountEntry, error) {
	mounts, err := mountinfo.Read()
	out := make([]mountEntry, len(mounts))
	for i, m := range mounts {
		out[i] = mountEntry{m}
	}
	return out, err
}

// canonical is path with symlinks resolved where it exists, as mountinfo
// shows mount points.
func canonical(path string) string {
	path = filepath.Clean(path)
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}

// mountAt is the topmost mount at path, if any.
func mountAt(mounts []mountEntry, path string) (mountEntry, bool) {
	path = canonical(path)
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == path {
			return mounts[i], true
		}
	}
	return mountEntry{}, false
}

// uses tells whether a mount is of loop device l: its file system, or a
// bind of its device node (block volumes).
func (e mountEntry) uses(l loopDevice) bool {
	return e.Dev == l.dev || (e.Root == "/"+l.name && (e.FSType == "devtmpfs" || e.FSType == "tmpfs"))
}

// mountsOf lists the mount points using any of loops.
func mountsOf(mounts []mountEntry, loops []loopDevice) []string {
	var out []string
	for _, e := range mounts {
		for _, l := range loops {
			if e.uses(l) {
				out = append(out, e.MountPoint)
				break
			}
		}
	}
	return out
}

// unmountAll unmounts path until nothing is mounted there.
func unmountAll(path string) error {
	for i := 0; i < 10; i++ {
		mounts, err := readMounts()
		if err != nil {
			return err
		}
		if _, ok := mountAt(mounts, path); !ok {
			return nil
		}
		if err := unix.Unmount(canonical(path), 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 10 unmounts", path)
}

// perMountFlags are the mount flags a bind mount takes (by remounting);
// the rest of a mount's options belong to its file system.
var perMountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
}

// parseMountFlags splits a capability's mount flags into mount(2) flags
// and the file system's own options (mount data).
func parseMountFlags(flags []string) (uintptr, string, error) {
	var out uintptr
	var data []string
	for _, f := range flags {
		for _, o := range strings.Split(f, ",") {
			o = strings.TrimSpace(o)
			if bit, ok := perMountFlags[o]; ok {
				out |= bit
				continue
			}
			switch o {
			case "", "rw", "defaults", "suid", "dev", "exec", "async", "atime", "diratime", "norelatime", "nostrictatime":
			case "sync":
				out |= unix.MS_SYNCHRONOUS
			case "dirsync":
				out |= unix.MS_DIRSYNC
			case "lazytime":
				out |= unix.MS_LAZYTIME
			case "bind", "rbind", "remount", "move", "shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable", "runbindable":
				return 0, "", fmt.Errorf("%q is not a mount flag a volume can take", o)
			default:
				data = append(data, o)
			}
		}
	}
	return out, strings.Join(data, ","), nil
}

// bindFlags are the per-mount flags of a publication.
func bindFlags(mountFlags []string, readOnly bool) uintptr {
	flags, _, _ := parseMountFlags(mountFlags) // checked when the capability was parsed
	out := flags & (unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
		unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME)
	if readOnly {
		out |= unix.MS_RDONLY
	}
	return out
}

// bindMount binds source onto target, then applies flags (a bind takes
// its flags only by remounting).
func bindMount(source, target string, flags uintptr) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s onto %s: %w", source, target, err)
	}
	if flags == 0 {
		return nil
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		unix.Unmount(target, 0)
		return fmt.Errorf("remount %s with flags %#x: %w", target, flags, err)
	}
	return nil
}

// ---------------------------------------------------------------- file systems

// tools are the programs the node service runs, looked up once (also in
// the sbin directories, which a test's PATH may lack). An empty one is
// missing.
type tools struct {
	blkid, mkfsExt4, e2fsck, resize2fs, mkfsXFS, xfsGrowfs string
}

func findTools() tools {
	return tools{
		blkid:     lookTool("blkid"),
		mkfsExt4:  lookTool("mkfs.ext4"),
		e2fsck:    lookTool("e2fsck"),
		resize2fs: lookTool("resize2fs"),
		mkfsXFS:   lookTool("mkfs.xfs"),
		xfsGrowfs: lookTool("xfs_growfs"),
	}
}

func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// run runs a tool and returns its output in the error.
func run(ctx context.Context, tool string, args ...string) error {
	if tool == "" {
		return fmt.Errorf("%s: not installed on this node", args[0])
	}
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(tool), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// probeFS is the file system on dev ("" for none), as blkid sees it.
func (t tools) probeFS(ctx context.Context, dev string) (string, error) {
	if t.blkid == "" {
		return "", errors.New("blkid: not installed on this node")
	}
	out, err := exec.CommandContext(ctx, t.blkid, "-p", "-s", "TYPE", "-o", "value", dev).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		return "", nil // blkid(8): 2 is "nothing found"
	}
	if err != nil {
		return "", fmt.Errorf("blkid -p %s: %w", dev, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// mkfs formats dev. ext4 keeps no blocks in reserve: the volume is the
// container's, all of it.
func (t tools) mkfs(ctx context.Context, fsType, dev string) error {
	switch fsType {
	case fsExt4:
		return run(ctx, t.mkfsExt4, "-q", "-F", "-m", "0", dev)
	case fsXFS:
		return run(ctx, t.mkfsXFS, "-q", "-f", dev)
	}
	return fmt.Errorf("cannot make a %q file system", fsType)
}

// growExt4Offline grows the unmounted ext4 on dev to the device's size.
func (t tools) growExt4Offline(ctx context.Context, dev string) error {
	// resize2fs wants a freshly checked file system; e2fsck -p exits 1
	// when it fixed something, which is fine.
	err := run(ctx, t.e2fsck, "-f", "-p", dev)
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return err
	}
	return run(ctx, t.resize2fs, dev)
}

// ext4Size is the size in bytes of the ext2/3/4 file system on dev, from
// its superblock (which a mounted ext4 keeps current in the device's page
// cache, so this reads the live value).
func ext4Size(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, fmt.Errorf("%s: no ext4 superblock", dev)
	}
	blocks := uint64(le.Uint32(sb[0x04:]))
	if le.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
	}
	return int64(blocks) << (10 + le.Uint32(sb[0x18:])), nil
}

// canResizeMountedExt4 tells whether this process may grow a mounted ext4:
// the kernel wants CAP_SYS_RESOURCE, which some machines (containers, some
// VMs) withhold even from root.
func canResizeMountedExt4() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}

// statDev is the device a path's file system is on.
func statDev(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Dev, nil
}

// exists tells whether path exists (errors other than "no such file" are
// returned).
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
