package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// SandboxSpec describes a pod's sandbox.
type SandboxSpec struct {
	ID       string
	Hostname string // the pod's hostname (its own UTS namespace)
	// NetNS is the path of a network namespace the pod's containers join
	// (e.g. /run/netns/<name>); "" means the host's network.
	NetNS string
}

// sandboxRecord is sandbox.json: what a restarted agent needs.
type sandboxRecord struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname"`
	NetNS     string    `json:"netns,omitempty"`
	Pause     proc      `json:"pause"`
	CreatedAt time.Time `json:"createdAt"`
}

// nsPath is the path of one of the sandbox's namespaces.
func (sb *sandboxRecord) nsPath(kind string) string {
	return fmt.Sprintf("/proc/%d/ns/%s", sb.Pause.Pid, kind)
}

// CreateSandbox starts the pause process holding the pod's IPC and UTS
// namespaces (hostname set) and joined to spec.NetNS, and makes the pod's
// /dev/shm.
func (r *Runtime) CreateSandbox(ctx context.Context, spec SandboxSpec) (err error) {
	if err := checkID("sandbox", spec.ID); err != nil {
		return err
	}
	defer r.locks.lock("sandbox/" + spec.ID)()
	dir := r.sandboxDir(spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create sandbox %s: %w", spec.ID, ErrExists)
		}
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.removeSandbox(spec.ID))
		}
	}()
	shm := filepath.Join(dir, "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("create sandbox %s: mount shm: %w", spec.ID, err)
	}
	rec := sandboxRecord{ID: spec.ID, Hostname: spec.Hostname, NetNS: spec.NetNS, CreatedAt: time.Now()}
	helper := helperSpec{
		args:       []string{"pause", "--hostname", spec.Hostname},
		logPath:    filepath.Join(dir, "pause.log"),
		cloneflags: unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
		netns:      spec.NetNS,
		started: func(p proc) error {
			rec.Pause = p
			return writeJSON(filepath.Join(dir, "sandbox.json"), &rec)
		},
	}
	if _, err := r.startHelper(ctx, helper); err != nil {
		return fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	return nil
}

// RemoveSandbox stops the pause process and removes the sandbox's state
// and pod cgroup. Remove the pod's containers first. Removing a sandbox
// that does not exist succeeds.
func (r *Runtime) RemoveSandbox(ctx context.Context, id string) error {
	if err := checkID("sandbox", id); err != nil {
		return err
	}
	defer r.locks.lock("sandbox/" + id)()
	return r.removeSandbox(id)
}

func (r *Runtime) removeSandbox(id string) error {
	dir := r.sandboxDir(id)
	var rec sandboxRecord
	if err := readJSON(filepath.Join(dir, "sandbox.json"), &rec); err == nil {
		if err := rec.Pause.kill(); err != nil {
			return fmt.Errorf("remove sandbox %s: %w", id, err)
		}
	}
	if err := unmountAll(filepath.Join(dir, "shm")); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	if err := removeCgroup(filepath.Join(r.cfg.CgroupParent, id)); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	return nil
}

// loadSandbox reads a sandbox's record and checks its pause process runs.
func (r *Runtime) loadSandbox(id string) (*sandboxRecord, error) {
	var rec sandboxRecord
	if err := readJSON(filepath.Join(r.sandboxDir(id), "sandbox.json"), &rec); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, err)
	}
	if !rec.Pause.alive() {
		return nil, fmt.Errorf("sandbox %s: its pause process (pid %d) is gone", id, rec.Pause.Pid)
	}
	return &rec, nil
}
