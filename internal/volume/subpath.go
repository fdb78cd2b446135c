package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
)

// SubPath resolves subPath inside the volume at volumeHostPath and returns
// the real host path it names, creating missing directories (with the
// volume root's permissions, as upstream) when nothing is there. It
// refuses absolute paths and ".." components (upstream's messages), and
// any resolution that leaves the volume, symlinks included: every
// component is resolved by the kernel beneath the volume root
// (openat2 RESOLVE_BENEATH), so a symlink planted by a container cannot
// point outside (CVE-2017-1002101). Symlinks that stay inside are
// followed, so a subPath of a configMap key names the file in the current
// ..<timestamp> directory: a bind of it does not see later updates, as
// upstream.
//
// A path can be swapped between this check and a later bind by a
// container writing to the volume; PrepareSubPath binds what was checked
// instead, and is what a container start should use.
func SubPath(volumeHostPath, subPath string) (string, error) {
	fd, err := openSubPath(volumeHostPath, subPath)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return fdPath(fd)
}

// PrepareSubPath is SubPath for a container about to start: it binds the
// resolved file or directory, through the descriptor that resolved it,
// at <root>/pods/<uid>/volume-subpaths/<volume>/<container>/<index> (the
// index of the volumeMount in the container) and returns that path for
// the agent to bind into the container. Nothing can be swapped in
// between (CVE-2021-25741). It is idempotent; TearDown unmounts these.
func (m *Manager) PrepareSubPath(podUID types.UID, volumeName, container string, index int, volumeHostPath, subPath string) (string, error) {
	for _, n := range []string{string(podUID), volumeName, container} {
		if err := checkName(n); err != nil {
			return "", err
		}
	}
	defer m.locks.lock(podUID)()
	target := filepath.Join(m.podDir(podUID), "volume-subpaths", volumeName, container, strconv.Itoa(index))
	if mounted, err := isMountPoint(target); err != nil {
		return "", err
	} else if mounted {
		return target, nil
	}
	fd, err := openSubPath(volumeHostPath, subPath)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
	} else {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o640)
		if err != nil {
			return "", err
		}
		f.Close()
	}
	// The magic link /proc/self/fd/N is the opened file itself.
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), target, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind subPath %q of %s at %s: %w", subPath, volumeHostPath, target, err)
	}
	return target, nil
}

// openSubPath opens (O_PATH) what subPath names beneath volume, creating
// missing directories.
func openSubPath(volume, subPath string) (int, error) {
	if filepath.IsAbs(subPath) {
		return -1, fmt.Errorf("error SubPath `%s` must not be an absolute path", subPath)
	}
	if err := noBacksteps(subPath); err != nil {
		return -1, fmt.Errorf("unable to provision SubPath `%s`: %w", subPath, err)
	}
	root, err := unix.Open(volume, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open volume %s: %w", volume, err)
	}
	defer unix.Close(root)
	var parts []string
	for _, p := range strings.Split(subPath, "/") {
		if p != "" && p != "." {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return unix.Dup(root)
	}
	escape := func(err error) error {
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("subpath %q not within volume path %q", filepath.Join(volume, subPath), volume)
		}
		return fmt.Errorf("subPath %q of %s: %w", subPath, volume, err)
	}
	fd, err := openBeneath(root, strings.Join(parts, "/"))
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return -1, escape(err)
	}
	var rst unix.Stat_t
	if err := unix.Fstat(root, &rst); err != nil {
		return -1, err
	}
	perm := rst.Mode & 0o7777
	// Create what is missing one component at a time, resolving each
	// prefix again beneath the root, so a component swapped for a
	// symlink meanwhile is still confined.
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		fd, err := openBeneath(root, prefix)
		if err == nil {
			if i == len(parts)-1 {
				return fd, nil
			}
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, escape(err)
		}
		parent := root
		if i > 0 {
			if parent, err = openBeneath(root, strings.Join(parts[:i], "/")); err != nil {
				return -1, escape(err)
			}
		}
		err = mkdirBeneath(parent, parts[i], perm)
		if parent != root {
			unix.Close(parent)
		}
		if err != nil {
			return -1, escape(err)
		}
	}
	return openBeneath(root, strings.Join(parts, "/"))
}

// mkdirBeneath makes dir name in parent with mode perm (whatever the
// umask), leaving it alone if something appeared there meanwhile.
func mkdirBeneath(parent int, name string, perm uint32) error {
	if err := unix.Mkdirat(parent, name, perm&0o777); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchmod(fd, perm)
}

func openBeneath(root int, path string) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for attempt := 0; ; attempt++ {
		fd, err := unix.Openat2(root, path, how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && attempt < 100 {
			continue // a concurrent rename; resolve again
		}
		return fd, err
	}
}

// fdPath is the path the kernel has for an open descriptor.
func fdPath(fd int) (string, error) {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(p, " (deleted)") {
		return "", fmt.Errorf("%s was removed while being resolved", strings.TrimSuffix(p, " (deleted)"))
	}
	return p, nil
}
