package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Layer tars mark deletions with names that overlayfs spells differently.
const (
	whiteoutPrefix = ".wh."         // ".wh.NAME": NAME is deleted from the layers below
	whiteoutMeta   = ".wh..wh."     // AUFS bookkeeping entries; never content
	opaqueMarker   = ".wh..wh..opq" // the directory hides everything below it
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattrPrefix = "SCHILY.xattr."
)

// unpackLayer applies the layer tar stream r to dir, an empty directory, in
// the form overlayfs reads as a lower layer: whiteouts become 0/0 character
// devices and opaque markers the trusted.overlay.opaque xattr. lowers are the
// directories of the layers below, top first; a parent directory missing
// from the tar copies its owner and mode from them. It returns the bytes of
// file content written.
//
// Every name resolves inside dir: names are relative to it, ".." that climbs
// out is refused, and symlinks met on the way are resolved as if dir were "/"
// (openat2 RESOLVE_IN_ROOT, what a chroot would do), so neither a symlinked
// parent nor a hard link can reach outside.
func unpackLayer(r io.Reader, dir string, lowers []string) (int64, error) {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	w := &layerWriter{root: root, buf: make([]byte, 1<<20)}
	defer w.close()
	for _, l := range lowers {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		w.lowers = append(w.lowers, fd)
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("reading layer tar: %w", err)
		}
		if err := w.entry(hdr, tr); err != nil {
			return 0, fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	if err := w.setDirTimes(); err != nil {
		return 0, err
	}
	return w.size, nil
}

type layerWriter struct {
	root   int   // the layer directory, opened O_RDONLY|O_DIRECTORY
	lowers []int // O_PATH fds of the layers below, top first
	dirs   []dirTimes
	size   int64
	buf    []byte
}

// dirTimes is a directory whose times are set last: creating its children
// would change them.
type dirTimes struct {
	name string
	ts   []unix.Timespec
}

func (w *layerWriter) close() {
	unix.Close(w.root)
	for _, fd := range w.lowers {
		unix.Close(fd)
	}
}

// cleanName makes a tar entry name relative to the layer root. Leading
// slashes are dropped, as tar does; a name that climbs above the root is
// refused rather than clamped, since no honest layer contains one.
func cleanName(name string) (string, error) {
	c := path.Clean(strings.TrimLeft(name, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("path %q leaves the layer root; refusing the layer", name)
	}
	return c, nil
}

// split returns the parent directory ("." at the root) and base of a clean name.
func split(name string) (string, string) {
	dir, base := path.Split(name)
	if dir == "" {
		return ".", base
	}
	return strings.TrimSuffix(dir, "/"), base
}

func (w *layerWriter) entry(hdr *tar.Header, data io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the layer root must be a directory")
		}
		return w.setMeta(w.root, ".", name, hdr)
	}
	dir, base := split(name)
	if strings.HasPrefix(base, whiteoutMeta) && base != opaqueMarker || strings.Contains("/"+dir, "/"+whiteoutMeta) {
		return nil // AUFS bookkeeping (e.g. .wh..wh.plnk), not content
	}
	parent, err := w.openDir(dir, true)
	if err != nil {
		return fmt.Errorf("parent directory %q: %w", dir, err)
	}
	defer unix.Close(parent)
	if base == opaqueMarker {
		if err := unix.Fsetxattr(parent, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("marking %q opaque (needs root and a file system with trusted xattrs): %w", dir, err)
		}
		return nil
	}
	if hidden, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if hidden == "" || hidden == "." || hidden == ".." {
			return fmt.Errorf("invalid whiteout name")
		}
		if _, err := clear(parent, hidden, false); err != nil {
			return err
		}
		if err := unix.Mknodat(parent, hidden, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("creating whiteout (needs root): %w", err)
		}
		return nil
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		isDir, err := clear(parent, base, true)
		if err != nil {
			return err
		}
		if !isDir {
			if err := unix.Mkdirat(parent, base, 0o700); err != nil {
				return err
			}
		}
	case tar.TypeReg, tar.TypeGNUSparse:
		if _, err := clear(parent, base, false); err != nil {
			return err
		}
		if err := w.writeFile(parent, base, name, data); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if _, err := clear(parent, base, false); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return err
		}
	case tar.TypeLink:
		return w.link(parent, base, name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if _, err := clear(parent, base, false); err != nil {
			return err
		}
		mode := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, base, mode|0o600, int(dev)); err != nil {
			return fmt.Errorf("creating device node (needs root): %w", err)
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	return w.setMeta(parent, base, name, hdr)
}

func (w *layerWriter) writeFile(parent int, base, name string, data io.Reader) error {
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, data, w.buf)
	w.size += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// link makes a hard link to an earlier entry of this layer. The target is
// resolved inside the layer root like any other name.
func (w *layerWriter) link(parent int, base, name, linkname string) error {
	target, err := cleanName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	if target == name {
		return nil
	}
	if target == "." {
		return fmt.Errorf("hard link to the layer root")
	}
	tdir, tbase := split(target)
	tparent, err := w.openDir(tdir, false)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	defer unix.Close(tparent)
	if _, err := clear(parent, base, false); err != nil {
		return err
	}
	if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
		return fmt.Errorf("hard link to %q: %w", linkname, err)
	}
	return nil
}

// openDir opens the directory rel inside the layer, resolving symlinks as if
// the layer root were "/". With create, missing directories are made, owned
// and moded like the same directory in the layers below (root 0755 if none).
func (w *layerWriter) openDir(rel string, create bool) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(w.root, rel, &how)
	if errors.Is(err, unix.ENOSYS) {
		return -1, fmt.Errorf("openat2 is missing: moorage needs Linux 5.6 or later to unpack images safely")
	}
	if err == nil || !create || rel == "." || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	pdir, base := split(rel)
	parent, err := w.openDir(pdir, true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	switch err := unix.Mkdirat(parent, base, 0o700); {
	case err == nil:
		if err := w.inheritDir(parent, base, rel); err != nil {
			return -1, err
		}
	case !errors.Is(err, unix.EEXIST):
		return -1, err
	}
	return unix.Openat2(w.root, rel, &how)
}

// inheritDir gives a directory the tar did not describe the owner, mode and
// times of the same directory in the nearest layer below, so that an upper
// layer does not change, say, /tmp's 1777 by merely adding a file to it.
func (w *layerWriter) inheritDir(parent int, base, rel string) error {
	uid, gid, mode := 0, 0, uint32(0o755)
	var ts []unix.Timespec
	for _, lower := range w.lowers {
		how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
		fd, err := unix.Openat2(lower, rel, &how)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			uid, gid, mode = int(st.Uid), int(st.Gid), st.Mode&0o7777
			ts = []unix.Timespec{st.Atim, st.Mtim}
		}
		break
	}
	if err := unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := unix.Fchmodat(parent, base, mode, 0); err != nil {
		return err
	}
	if ts != nil {
		w.dirs = append(w.dirs, dirTimes{name: rel, ts: ts})
	}
	return nil
}

// setMeta applies an entry's owner, mode, xattrs and times. The owner goes
// first because chown clears setuid bits and file capabilities.
func (w *layerWriter) setMeta(parent int, base, name string, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeLink {
		return nil
	}
	symlink := hdr.Typeflag == tar.TypeSymlink
	if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
	}
	if !symlink {
		// Fchmodat follows symlinks; this entry was just made and is not one.
		if err := unix.Fchmodat(parent, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return err
		}
	}
	for key, value := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(key, paxXattrPrefix)
		if !ok || strings.HasPrefix(attr, "trusted.overlay.") || strings.HasPrefix(attr, "user.overlay.") {
			continue // a layer must not forge overlayfs's own metadata
		}
		err := unix.Lsetxattr(fdPath(parent, base), attr, []byte(value), 0)
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
			continue // the file system does not take this namespace here
		}
		if err != nil {
			return fmt.Errorf("xattr %s: %w", attr, err)
		}
	}
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
	if hdr.Typeflag == tar.TypeDir {
		w.dirs = append(w.dirs, dirTimes{name: name, ts: ts})
		return nil
	}
	return unix.UtimesNanoAt(parent, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (w *layerWriter) setDirTimes() error {
	for _, d := range w.dirs { // in tar order: a later entry for a directory wins
		pdir, base := split(d.name)
		if d.name == "." {
			pdir, base = ".", "."
		}
		parent, err := w.openDir(pdir, false)
		if err != nil {
			continue // replaced by a later entry
		}
		err = unix.UtimesNanoAt(parent, base, d.ts, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(parent)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("setting times of %q: %w", d.name, err)
		}
	}
	return nil
}

// clear makes room for a new entry named base in parent. With keepDir an
// existing directory stays (a tar may list a directory again to update it)
// and clear reports it.
func clear(parent int, base string, keepDir bool) (isDir bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false, unix.Unlinkat(parent, base, 0)
	}
	if keepDir {
		return true, nil
	}
	return false, removeAllAt(parent, base)
}

// removeAllAt removes the directory base of parent and everything in it
// without following symlinks.
func removeAllAt(parent int, base string) error {
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = unix.Unlinkat(fd, n, 0); errors.Is(err, unix.EISDIR) {
				err = removeAllAt(fd, n)
			}
			if err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(parent, base, unix.AT_REMOVEDIR)
}

// fdPath names base in the directory open as fd, for the few calls (lsetxattr)
// that have no *at form.
func fdPath(fd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + base
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
