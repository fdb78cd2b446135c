package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// setUpEmptyDir makes the volume's directory, mode 0777 (on disk), or
// mounts a tmpfs there (medium Memory; the tmpfs root keeps its 1777).
// With a pod fsGroup the directory's group becomes it, with the setgid
// bit, as upstream. The ready file records that this one-time work is
// done; a memory volume whose tmpfs is gone (a reboot) is mounted again.
func (m *Manager) setUpEmptyDir(pod *corev1.Pod, name string, src *corev1.EmptyDirVolumeSource) (Mounted, error) {
	dir := m.volumeDir(pod.UID, pluginEmptyDir, name)
	memory := false
	switch {
	case src.Medium == corev1.StorageMediumDefault:
	case src.Medium == corev1.StorageMediumMemory:
		memory = true
	case src.Medium == corev1.StorageMediumHugePages || strings.HasPrefix(string(src.Medium), string(corev1.StorageMediumHugePagesPrefix)):
		return Mounted{}, setUpError(name, fmt.Errorf("emptyDir medium %q (huge pages) is not supported yet", src.Medium))
	default:
		return Mounted{}, setUpError(name, fmt.Errorf("unknown storage medium %q", src.Medium))
	}
	ready := m.readyFile(pod.UID, pluginEmptyDir, name)
	if _, err := os.Stat(ready); err == nil {
		if !memory {
			return Mounted{HostPath: dir}, nil
		}
		if tmpfs, err := isTmpfs(dir); err == nil && tmpfs {
			return Mounted{HostPath: dir}, nil
		}
	}
	if err := makeVolumeDir(dir); err != nil {
		return Mounted{}, setUpError(name, err)
	}
	if memory {
		if err := mountTmpfs(dir, m.memorySize(pod, src.SizeLimit)); err != nil {
			return Mounted{}, setUpError(name, err)
		}
	}
	if gid := podFSGroup(pod); gid != nil {
		if err := setOwnership(dir, *gid, false, nil); err != nil {
			return Mounted{}, setUpError(name, err)
		}
	}
	if err := writeReady(ready); err != nil {
		return Mounted{}, setUpError(name, err)
	}
	return Mounted{HostPath: dir}, nil
}

func writeReady(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return os.WriteFile(path, nil, 0o600)
}

// memorySize is the size of a memory-backed volume, as upstream computes
// it: the node's allocatable memory, lowered to the pod's memory limit
// when every container declares one, lowered to sizeLimit when set.
// nil means no limit known: the kernel's default.
func (m *Manager) memorySize(pod *corev1.Pod, sizeLimit *resource.Quantity) *resource.Quantity {
	var size *resource.Quantity
	if q, ok := m.opts.NodeAllocatable[corev1.ResourceMemory]; ok && q.Sign() > 0 {
		size = &q
	}
	lower := func(q *resource.Quantity) {
		if q != nil && q.Sign() > 0 && (size == nil || q.Cmp(*size) <= 0) {
			size = q
		}
	}
	lower(podMemoryLimit(pod))
	lower(sizeLimit)
	return size
}

// podMemoryLimit is the pod's effective memory limit, or nil when some
// container has none: the larger of what the app containers and sidecars
// (restartable init containers) use together and what each init container
// uses alongside the sidecars started before it, plus the pod's overhead.
func podMemoryLimit(pod *corev1.Pod) *resource.Quantity {
	limit := func(c *corev1.Container) (resource.Quantity, bool) {
		q, ok := c.Resources.Limits[corev1.ResourceMemory]
		return q, ok
	}
	var apps, sidecars, initMax resource.Quantity
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		q, ok := limit(c)
		if !ok {
			return nil
		}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars.Add(q)
			continue
		}
		q.Add(sidecars)
		if q.Cmp(initMax) > 0 {
			initMax = q
		}
	}
	for i := range pod.Spec.Containers {
		q, ok := limit(&pod.Spec.Containers[i])
		if !ok {
			return nil
		}
		apps.Add(q)
	}
	apps.Add(sidecars)
	if initMax.Cmp(apps) > 0 {
		apps = initMax
	}
	if q, ok := pod.Spec.Overhead[corev1.ResourceMemory]; ok {
		apps.Add(q)
	}
	return &apps
}

// Usage is the number of bytes an emptyDir volume of the pod uses, for
// the agent to enforce sizeLimit on disk by evicting, as upstream: the
// used size of its tmpfs for medium Memory, else the disk blocks of every
// file in it (hard links counted once; other file systems mounted inside
// are not entered), as du would report.
func (m *Manager) Usage(podUID types.UID, volumeName string) (int64, error) {
	if err := checkPodUID(podUID); err != nil {
		return 0, err
	}
	if err := checkName(volumeName); err != nil {
		return 0, err
	}
	dir := m.volumeDir(podUID, pluginEmptyDir, volumeName)
	var root unix.Stat_t
	if err := unix.Lstat(dir, &root); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("emptyDir volume %q of pod %s is not set up", volumeName, podUID)
		}
		return 0, err
	}
	if mounted, err := isMountPoint(dir); err != nil {
		return 0, err
	} else if mounted {
		var sfs unix.Statfs_t
		if err := unix.Statfs(dir, &sfs); err != nil {
			return 0, err
		}
		return int64(sfs.Blocks-sfs.Bfree) * sfs.Bsize, nil
	}
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var used int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		}
		if st.Dev != root.Dev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			key := inode{st.Dev, st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		used += st.Blocks * 512
		return nil
	})
	return used, err
}
