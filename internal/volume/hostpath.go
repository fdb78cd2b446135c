package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// checkHostPath is the hostPath plugin's SetUp: the path must not step
// back with "..", then it is checked against its type, with upstream's
// (Kubernetes 1.33) messages. "" checks nothing. DirectoryOrCreate and
// FileOrCreate create what is missing (a directory with mode 0755, its
// parents too; an empty file with mode 0644, whose parent must exist, as
// upstream) and then check it like Directory and File. A File is anything
// that exists and is not a directory, as upstream.
func checkHostPath(path string, pathType *corev1.HostPathType) error {
	if err := noBacksteps(path); err != nil {
		return fmt.Errorf("invalid HostPath `%s`: %w", path, err)
	}
	if pathType == nil || *pathType == corev1.HostPathUnset {
		return nil
	}
	kind, exists := hostFileType(path)
	switch *pathType {
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			return makeHostDir(path)
		}
		fallthrough
	case corev1.HostPathDirectory:
		if kind != corev1.HostPathDirectory {
			return fmt.Errorf("hostPath type check failed: %s is not a directory", path)
		}
	case corev1.HostPathFileOrCreate:
		if !exists {
			return makeHostFile(path)
		}
		fallthrough
	case corev1.HostPathFile:
		if !exists || kind == corev1.HostPathDirectory {
			return fmt.Errorf("hostPath type check failed: %s is not a file", path)
		}
	case corev1.HostPathSocket:
		if kind != corev1.HostPathSocket {
			return fmt.Errorf("hostPath type check failed: %s is not a socket file", path)
		}
	case corev1.HostPathCharDev:
		if kind != corev1.HostPathCharDev {
			return fmt.Errorf("hostPath type check failed: %s is not a character device", path)
		}
	case corev1.HostPathBlockDev:
		if kind != corev1.HostPathBlockDev {
			return fmt.Errorf("hostPath type check failed: %s is not a block device", path)
		}
	default:
		return fmt.Errorf("%s is an invalid volume type", *pathType)
	}
	return nil
}

// hostFileType says what path is, following symlinks, as a HostPathType
// ("" for something else, such as a FIFO), and whether it exists.
func hostFileType(path string) (corev1.HostPathType, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", false
	}
	m := fi.Mode()
	switch {
	case m.IsDir():
		return corev1.HostPathDirectory, true
	case m.IsRegular():
		return corev1.HostPathFile, true
	case m&os.ModeSocket != 0:
		return corev1.HostPathSocket, true
	case m&os.ModeCharDevice != 0:
		return corev1.HostPathCharDev, true
	case m&os.ModeDevice != 0:
		return corev1.HostPathBlockDev, true
	}
	return "", true
}

func makeHostDir(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	// Mkdir is subject to the umask; the documented mode is 0755.
	return os.Chmod(path, 0o755)
}

func makeHostFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Chmod(0o644)
}

// noBacksteps refuses a path with a ".." component, with upstream's
// message.
func noBacksteps(path string) error {
	for _, part := range strings.Split(path, "/") {
		if part == ".." {
			return errors.New("must not contain '..'")
		}
	}
	return nil
}

// isBlockDevice says whether path (symlinks followed) is a block device.
func isBlockDevice(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK, nil
}
