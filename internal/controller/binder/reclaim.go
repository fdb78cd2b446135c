package binder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	corev1 "k8s.io/api/core/v1"
)

// Reclaimer deletes or scrubs the storage behind a Released volume. It is the
// seam to the machine: the controller decides, the Reclaimer touches disks.
type Reclaimer interface {
	// Recycle removes every file of the volume, keeping the volume itself.
	// A *NoPluginError means this kind of volume cannot be recycled.
	Recycle(ctx context.Context, pv *corev1.PersistentVolume) error
	// Delete removes the volume's storage; the error message is the one the
	// user sees on the volume (status.message) and in its event.
	Delete(ctx context.Context, pv *corev1.PersistentVolume) error
}

// NoPluginError: no recycler handles this kind of volume.
type NoPluginError struct{ Volume string }

func (e *NoPluginError) Error() string { return "no recycler plugin found for volume " + e.Volume }

// LocalReclaimer reclaims hostPath and local volumes on this machine, as
// upstream's hostPath plugin does on the node (upstream runs a recycler pod;
// moorage's server runs on the node in `moorage up`). Other volume types have
// no recycler or deleter here.
type LocalReclaimer struct{}

// hostPathDeletable is upstream's rule: the hostPath deleter only deletes
// paths under /tmp (an unanchored /tmp/.+ match, as upstream).
var hostPathDeletable = regexp.MustCompile("/tmp/.+")

func (LocalReclaimer) Recycle(_ context.Context, pv *corev1.PersistentVolume) error {
	path := localPath(pv)
	if path == "" {
		return &NoPluginError{Volume: pv.Name}
	}
	return scrub(path)
}

func (LocalReclaimer) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	switch {
	case pv.Spec.HostPath != nil:
		path := pv.Spec.HostPath.Path
		if !hostPathDeletable.MatchString(path) {
			return fmt.Errorf("host_path deleter only supports /tmp/.+ but received provided %s", path)
		}
		return os.RemoveAll(path)
	default:
		return fmt.Errorf("error getting deleter volume plugin for volume %q: no deletable volume plugin matched", pv.Name)
	}
}

func localPath(pv *corev1.PersistentVolume) string {
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path
	}
	return ""
}

// scrub deletes everything inside dir, as upstream's recycler pod does
// (`find /scrub -mindepth 1 -delete`), and checks that it is empty.
func scrub(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%s is not empty after scrubbing", dir)
	}
	return nil
}
