package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

func podFSGroup(pod *corev1.Pod) *int64 {
	if pod.Spec.SecurityContext == nil {
		return nil
	}
	return pod.Spec.SecurityContext.FSGroup
}

func podFSGroupChangePolicy(pod *corev1.Pod) *corev1.PodFSGroupChangePolicy {
	if pod.Spec.SecurityContext == nil {
		return nil
	}
	return pod.Spec.SecurityContext.FSGroupChangePolicy
}

// Upstream's ownership masks: what fsGroup adds to each file's mode.
const (
	rwMask   = 0o660
	roMask   = 0o440
	execMask = 0o110
)

// setOwnership gives everything under dir the group gid, as upstream's
// SetVolumeOwnership: files get group (and owner) read, and write unless
// readOnly; directories also get the setgid bit and search permission.
// Symlinks get the group only (chmod would change their target). With the
// OnRootMismatch policy nothing is walked when the root is already right.
//
// Unlike upstream, the walk goes through directory descriptors and never
// follows a symlink, even one swapped in meanwhile by a container writing
// to the volume: a local volume may be in use by another pod.
func setOwnership(dir string, gid int64, readOnly bool, policy *corev1.PodFSGroupChangePolicy) error {
	var mask uint32 = rwMask
	if readOnly {
		mask = roMask
	}
	if policy != nil && *policy == corev1.FSGroupChangeOnRootMismatch {
		if ok, err := ownershipRight(dir, gid, os.FileMode(mask)); err != nil || ok {
			return err
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, -1, int(gid)); err != nil {
		return fmt.Errorf("set group of %s to %d: %w", dir, gid, err)
	}
	if err := chmodAdd(fd, mask|unix.S_ISGID|execMask); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return ownChildren(fd, dir, gid, mask)
}

// ownChildren applies setOwnership's rules to the entries of the
// directory open at fd.
func ownChildren(fd int, path string, gid int64, mask uint32) error {
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dup), path)
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		child := filepath.Join(path, name)
		if err := unix.Fchownat(fd, name, -1, int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("set group of %s to %d: %w", child, gid, err)
		}
		// O_PATH|O_NOFOLLOW opens a symlink itself, never its target.
		cfd, err := unix.Openat(fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return err
		}
		err = ownChild(cfd, child, gid, mask)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

func ownChild(fd int, path string, gid int64, mask uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return nil
	case unix.S_IFDIR:
		dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		if err := chmodAdd(dfd, mask|unix.S_ISGID|execMask); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
		return ownChildren(dfd, path, gid, mask)
	default:
		if err := chmodAdd(fd, mask); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
		return nil
	}
}

// chmodAdd adds bits to the mode of the file open at fd (which may be an
// O_PATH descriptor: the chmod goes through its /proc magic link, which
// names the file itself).
func chmodAdd(fd int, bits uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	mode := st.Mode & 0o7777
	if mode|bits == mode {
		return nil
	}
	return unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode|bits)
}

// ownershipRight is upstream's OnRootMismatch test: the root has the
// group, the mask's bits and, for a directory, the setgid bit.
func ownershipRight(dir string, gid int64, mask os.FileMode) (bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int64(st.Gid) != gid {
		return false, nil
	}
	if fi.IsDir() && fi.Mode()&os.ModeSetgid == 0 {
		return false, nil
	}
	return fi.Mode()&mask == mask, nil
}
