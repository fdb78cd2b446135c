// Package container is the node agent's container runtime: it runs a pod's
// sandbox and containers with runc (OCI bundles, cgroupfs driver, cgroup v1).
//
// Design. Everything lives under Config.StateDir, so the agent can restart
// and find it again:
//
//	runc/                 runc --root (runc's own state)
//	sandboxes/<id>/       sandbox.json, shm/ (the pod's /dev/shm, a tmpfs),
//	                      pause.log
//	containers/<id>/      config.json (the OCI bundle), rootfs/ (overlay mount),
//	                      upper/, work/, record.json (agent), exit.json (shim),
//	                      init.pid, runc.log, shim.log, attach.sock (shim)
//
// A sandbox is a "pause" process holding the IPC and UTS namespaces (and,
// when given, a network namespace) that the pod's containers join through the
// OCI spec's namespace paths (/proc/<pause pid>/ns/...). Each container gets
// its own PID and mount namespace, and an overlayfs root whose upper layer is
// its own (copy-on-write; "/" as the only lower layer means the host's root
// filesystem, used as an image).
//
// Both the pause process and each container's shim are the agent's own
// binary re-executed (Config.ShimCommand, reaching ShimMain). The shim is
// started detached (new session) so it outlives the agent: it runs
// `runc create`, becomes the subreaper of the container's init, copies the
// container's stdout and stderr (or its terminal) into the CRI-format log
// file, holds its stdin open when the spec asks for one, serves attach
// sessions on attach.sock (attach.go), and when init exits writes
// exit.json (code, time, OOMKilled), which is how a restarted agent learns
// what happened while it was away. The agent itself runs `runc start`,
// `runc exec` and `runc delete`.
//
// Processes are named by pid and start time (/proc/<pid>/stat), and signalled
// through pidfds, so a recycled pid is never mistaken for ours.
//
// Why runc and not a hand-rolled runtime? The OCI spec is the contract the
// rest of the ecosystem uses (devices, cgroups, masked paths); runc is what
// works on this kind of machine (crun refuses cgroup v1 hybrid mode).
package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/moorage/moorage/internal/fsutil"
)

// Errors callers act on; match them with errors.Is.
var (
	// ErrNotFound: no sandbox or container with that ID on disk.
	ErrNotFound = errors.New("not found")
	// ErrExists: a sandbox or container with that ID already exists.
	ErrExists = errors.New("already exists")
	// ErrNotRunning: the container has not been started or has exited.
	ErrNotRunning = errors.New("container is not running")
)

// Config says where the runtime keeps its state and how it starts its helpers.
type Config struct {
	// StateDir holds all bundles, rootfs mounts, runc state and exit records.
	StateDir string
	// Runc is the path of the runc binary; "" looks up "runc" in PATH.
	Runc string
	// CgroupParent is the cgroup (relative to each hierarchy's root) under
	// which containers go, as <CgroupParent>/<sandbox id>/<container id>.
	// "" means "/moorage".
	CgroupParent string
	// ShimCommand starts this package's shim: the program must call
	// ShimMain with the arguments that follow these, e.g.
	// {"/usr/bin/moorage", "container-shim"}. It inherits this process's
	// environment.
	ShimCommand []string
	// MaskPaths are host paths hidden (under an empty read-only tmpfs) in
	// containers whose root is the host's filesystem, besides StateDir
	// itself: e.g. the agent's data and log directories.
	MaskPaths []string
}

// Runtime runs sandboxes and containers. Its methods are safe for concurrent
// use; operations on one ID are serialized.
type Runtime struct {
	cfg      Config
	runc     string
	runcRoot string
	allCaps  []string // every capability in our own bounding set
	locks    keyedMutex
}

// New checks cfg, creates the state directories and returns the runtime.
func New(cfg Config) (*Runtime, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("container runtime: StateDir is required")
	}
	if len(cfg.ShimCommand) == 0 {
		return nil, errors.New("container runtime: ShimCommand is required")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("container runtime: state dir: %w", err)
	}
	cfg.StateDir = dir
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/moorage"
	}
	if !filepath.IsAbs(cfg.CgroupParent) {
		return nil, fmt.Errorf("container runtime: CgroupParent %q must be absolute", cfg.CgroupParent)
	}
	runc := cfg.Runc
	if runc == "" {
		runc = "runc"
	}
	if runc, err = exec.LookPath(runc); err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	caps, err := boundingCapabilities()
	if err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	r := &Runtime{cfg: cfg, runc: runc, runcRoot: filepath.Join(dir, "runc"), allCaps: caps}
	for _, d := range []string{r.runcRoot, filepath.Join(dir, "containers"), filepath.Join(dir, "sandboxes")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("container runtime: %w", err)
		}
	}
	return r, nil
}

// Status is a container's lifecycle phase.
type Status string

// The phases, in order.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusExited  Status = "exited"
)

// Reasons State reports for an exited container. Others ("Error",
// "Completed") are the caller's to derive from the exit code.
const (
	// ReasonOOMKilled: the memory cgroup killed a process for lack of memory.
	ReasonOOMKilled = "OOMKilled"
	// ReasonUnknown: the shim is gone without recording an exit status
	// (it was killed, or the machine restarted); ExitCode is then 255.
	ReasonUnknown = "Unknown"
)

// State is what is known of a container.
type State struct {
	Status     Status
	Pid        int // of the container's init, on the host
	ExitCode   int
	Reason     string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}

// List returns the IDs of the containers on disk, sorted, including any a
// crash left half-made (Remove cleans those up).
func (r *Runtime) List() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "containers"))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// ListSandboxes returns the IDs of the sandboxes on disk, sorted.
func (r *Runtime) ListSandboxes() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "sandboxes"))
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

func (r *Runtime) containerDir(id string) string {
	return filepath.Join(r.cfg.StateDir, "containers", id)
}

func (r *Runtime) sandboxDir(id string) string {
	return filepath.Join(r.cfg.StateDir, "sandboxes", id)
}

// cgroupsPath is where a container's cgroups go in every hierarchy.
func (r *Runtime) cgroupsPath(sandboxID, id string) string {
	return filepath.Join(r.cfg.CgroupParent, sandboxID, id)
}

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$`)

// checkID rejects IDs that are not safe as a path component and a runc ID.
func checkID(kind, id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("invalid %s ID %q: want 1-128 of [A-Za-z0-9_.+-], starting with a letter or digit", kind, id)
	}
	return nil
}

// writeJSON replaces path with v, crash-safely.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, b, 0o600)
}

// readJSON reads path into v; a missing file is ErrNotFound.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", filepath.Base(path), ErrNotFound)
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// keyedMutex serializes operations on one ID.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	m := k.locks[key]
	if m == nil {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		if m.refs--; m.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// exitCodeOf turns a wait status into a shell-style exit code
// (128+signal for a process killed by a signal).
func exitCodeOf(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
