package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// containerRecord is record.json, written by the agent: what a restarted
// agent needs to find the container's processes and files again.
type containerRecord struct {
	ID          string    `json:"id"`
	SandboxID   string    `json:"sandboxID"`
	CgroupsPath string    `json:"cgroupsPath"`
	LogPath     string    `json:"logPath"`
	CreatedAt   time.Time `json:"createdAt"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
	Shim        proc      `json:"shim"`
	Init        proc      `json:"init"`
}

// exitRecord is exit.json, written by the shim when the container's init
// has exited and its output is in the log.
type exitRecord struct {
	ExitCode   int       `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// CreateContainer prepares the container's root (an overlay mount), its
// OCI bundle and cgroups, and starts its shim, which creates it with runc:
// on return the container exists but its program has not started.
func (r *Runtime) CreateContainer(ctx context.Context, spec ContainerSpec) (err error) {
	if err := spec.validate(); err != nil {
		return err
	}
	defer r.locks.lock("container/" + spec.ID)()
	sb, err := r.loadSandbox(spec.SandboxID)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	dir := r.containerDir(spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create container %s: %w", spec.ID, ErrExists)
		}
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	defer func() {
		if err != nil {
			// ctx may be what failed: clean up regardless.
			err = errors.Join(err, r.remove(context.Background(), spec.ID))
		}
	}()
	rootfs := filepath.Join(dir, "rootfs")
	if err := mountRootfs(spec.Rootfs, dir, rootfs); err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	oci, err := r.ociSpec(&spec, sb, rootfs)
	if err != nil {
		return err
	}
	b, err := json.Marshal(oci)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}

	rec := containerRecord{
		ID:          spec.ID,
		SandboxID:   spec.SandboxID,
		CgroupsPath: oci.Linux.CgroupsPath,
		LogPath:     spec.LogPath,
		CreatedAt:   time.Now(),
	}
	recordPath := filepath.Join(dir, "record.json")
	args := []string{"run", "--id", spec.ID, "--bundle", dir, "--root", r.runcRoot,
		"--runc", r.runc, "--log", spec.LogPath, "--cgroup", rec.CgroupsPath}
	for _, f := range []struct {
		set  bool
		flag string
	}{{spec.Stdin, "--stdin"}, {spec.StdinOnce, "--stdin-once"}, {spec.TTY, "--tty"}} {
		if f.set {
			args = append(args, f.flag)
		}
	}
	rep, err := r.startHelper(ctx, helperSpec{
		args:    args,
		logPath: filepath.Join(dir, "shim.log"),
		started: func(p proc) error {
			rec.Shim = p
			return writeJSON(recordPath, &rec)
		},
	})
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	rec.Init = rep.Init
	if err := writeJSON(recordPath, &rec); err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	return nil
}

// mountRootfs mounts the overlay of layers (upper and work dirs in dir) at
// target.
func mountRootfs(layers Rootfs, dir, target string) error {
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{target, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	data := "lowerdir=" + strings.Join(layers.LowerDirs, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay (%s): %w", data, err)
	}
	return nil
}

// Start runs the created container's program.
func (r *Runtime) Start(ctx context.Context, id string) error {
	defer r.locks.lock("container/" + id)()
	rec, exit, err := r.load(id)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	if exit != nil || !rec.StartedAt.IsZero() {
		return fmt.Errorf("start container %s: already started", id)
	}
	started := time.Now()
	if err := r.runcCommand(ctx, "start", id); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	rec.StartedAt = started
	if err := writeJSON(filepath.Join(r.containerDir(id), "record.json"), rec); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// State reports the container's phase and, once it has exited, how.
func (r *Runtime) State(id string) (State, error) {
	rec, exit, err := r.load(id)
	if err != nil {
		return State{}, fmt.Errorf("container %s: %w", id, err)
	}
	st := State{Pid: rec.Init.Pid, CreatedAt: rec.CreatedAt, StartedAt: rec.StartedAt}
	// While init or the shim lives, exit.json may be about to come.
	running := exit == nil && (rec.Init.alive() || rec.Shim.alive())
	if exit == nil && !running {
		// The shim writes exit.json before it exits: it may have done
		// both since we looked.
		if _, exit, err = r.load(id); err != nil {
			return State{}, fmt.Errorf("container %s: %w", id, err)
		}
	}
	switch {
	case exit != nil:
		st.Status, st.ExitCode, st.Reason, st.FinishedAt = StatusExited, exit.ExitCode, exit.Reason, exit.FinishedAt
	case running:
		st.Status = StatusRunning
		if rec.StartedAt.IsZero() {
			st.Status = StatusCreated
		}
	default:
		st.Status, st.ExitCode, st.Reason = StatusExited, 255, ReasonUnknown
	}
	return st, nil
}

// Kill sends sig to the container's init. Killing an exited container
// succeeds. As for any pid 1, signals it has no handler for (other than
// SIGKILL) are ignored.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	rec, exit, err := r.load(id)
	if err != nil {
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	if exit != nil {
		return nil
	}
	if err := rec.Init.signal(sig); err != nil && !errors.Is(err, errGone) {
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	return nil
}

// Remove kills the container if it runs, deletes it from runc, unmounts its
// root and removes its files and cgroups (and the pod's cgroup once empty).
// Removing a container that does not exist succeeds.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if err := checkID("container", id); err != nil {
		return err
	}
	defer r.locks.lock("container/" + id)()
	return r.remove(ctx, id)
}

// remove is Remove without the lock; it copes with every state a crash in
// CreateContainer can leave behind.
func (r *Runtime) remove(ctx context.Context, id string) error {
	dir := r.containerDir(id)
	var rec containerRecord
	if err := readJSON(filepath.Join(dir, "record.json"), &rec); err != nil {
		// Half made: the cgroup is in the bundle, if anything.
		var oci specs.Spec
		if readJSON(filepath.Join(dir, "config.json"), &oci) == nil && oci.Linux != nil {
			rec.CgroupsPath = oci.Linux.CgroupsPath
		}
	}
	// Killing init ourselves spares `runc delete --force` its 100 ms polls.
	if err := rec.Init.kill(); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if _, err := os.Stat(filepath.Join(r.runcRoot, id)); err == nil {
		if err := r.runcCommand(ctx, "delete", "--force", id); err != nil {
			return fmt.Errorf("remove container %s: %w", id, err)
		}
	}
	if err := r.waitShim(rec.Shim); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if err := unmountAll(filepath.Join(dir, "rootfs")); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if rec.CgroupsPath != "" {
		// runc removed the container's cgroup; the pod's goes with its
		// last container.
		err := errors.Join(removeCgroup(rec.CgroupsPath), removeCgroup(filepath.Dir(rec.CgroupsPath)))
		if err != nil {
			return fmt.Errorf("remove container %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// waitShim gives the shim a moment to record the exit, then kills it.
func (r *Runtime) waitShim(shim proc) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if shim.wait(ctx) == nil {
		return nil
	}
	return shim.kill()
}

// load reads a container's record and, if it has exited, its exit record.
func (r *Runtime) load(id string) (*containerRecord, *exitRecord, error) {
	if err := checkID("container", id); err != nil {
		return nil, nil, err
	}
	dir := r.containerDir(id)
	var rec containerRecord
	if err := readJSON(filepath.Join(dir, "record.json"), &rec); err != nil {
		return nil, nil, err
	}
	var exit exitRecord
	err := readJSON(filepath.Join(dir, "exit.json"), &exit)
	if errors.Is(err, ErrNotFound) {
		return &rec, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return &rec, &exit, nil
}

// runcCommand runs one runc command on our state root.
func (r *Runtime) runcCommand(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, r.runc, append([]string{"--root", r.runcRoot}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc %s: %w: %s", args[0], err, bytes.TrimSpace(out))
	}
	return nil
}
