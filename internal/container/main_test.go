package container

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test binary is also the shim: the runtime re-executes it with
// MOORAGE_TEST_SHIM=1 (inherited from TestMain's environment).
func TestMain(m *testing.M) {
	if os.Getenv("MOORAGE_TEST_SHIM") == "1" {
		os.Exit(ShimMain(os.Args[1:]))
	}
	os.Setenv("MOORAGE_TEST_SHIM", "1")
	// Shims built with -race would otherwise linger 1 s at exit.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

// env is one runtime on its own state dir and cgroup parent, torn down and
// checked for leftovers when the test ends.
type env struct {
	t       *testing.T
	rt      *Runtime
	cfg     Config
	dir     string // the test's temporary directory
	logs    string
	created []string // container IDs, in creation order
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs real runc containers (mounts, namespaces, cgroups)")
	}
	dir := t.TempDir()
	e := &env{t: t, dir: dir, logs: filepath.Join(dir, "logs")}
	if err := os.Mkdir(e.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		StateDir:     filepath.Join(dir, "state"),
		CgroupParent: "/moorage-test-" + randomID(),
		ShimCommand:  []string{os.Args[0]},
		MaskPaths:    []string{e.logs},
	}
	rt, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.rt = rt
	t.Cleanup(e.teardown)
	return e
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// teardown removes everything the test left, then checks that nothing
// remains: no mounts, cgroups, runc state or helper processes.
func (e *env) teardown() {
	t := e.t
	ctx := context.Background()
	ids, err := e.rt.List()
	if err != nil {
		t.Error(err)
	}
	for _, id := range ids {
		if err := e.rt.Remove(ctx, id); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	sandboxes, err := e.rt.ListSandboxes()
	if err != nil {
		t.Error(err)
	}
	for _, id := range sandboxes {
		if err := e.rt.RemoveSandbox(ctx, id); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	e.checkClean()
	_ = removeCgroup(e.cfg.CgroupParent)
}

// checkClean fails the test if anything of this runtime is left on the host.
func (e *env) checkClean() {
	t := e.t
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(mi), "\n") {
		if strings.Contains(line, e.dir) {
			t.Errorf("mount left behind: %s", line)
		}
	}
	hierarchies, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", e.cfg.CgroupParent))
	for _, h := range hierarchies {
		children, _ := filepath.Glob(filepath.Join(h, "*", ""))
		for _, c := range children {
			if st, err := os.Stat(c); err == nil && st.IsDir() {
				t.Errorf("cgroup left behind: %s", c)
			}
		}
	}
	if left, _ := os.ReadDir(e.rt.runcRoot); len(left) > 0 {
		t.Errorf("runc state left behind: %v", left)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(e.dir)) {
			t.Errorf("process left behind: %s: %q", p, b)
		}
	}
}

// sandbox creates a sandbox for the test.
func (e *env) sandbox(spec SandboxSpec) string {
	e.t.Helper()
	if spec.ID == "" {
		spec.ID = "pod-" + randomID()
	}
	if err := e.rt.CreateSandbox(context.Background(), spec); err != nil {
		e.t.Fatal(err)
	}
	return spec.ID
}

// create creates a container from the host's root filesystem, with its log
// in the test's log directory.
func (e *env) create(sandboxID string, spec ContainerSpec) ContainerSpec {
	e.t.Helper()
	if spec.ID == "" {
		spec.ID = "ctr-" + randomID()
	}
	spec.SandboxID = sandboxID
	if len(spec.Rootfs.LowerDirs) == 0 {
		spec.Rootfs.LowerDirs = []string{"/"}
	}
	if spec.LogPath == "" {
		spec.LogPath = filepath.Join(e.logs, spec.ID+".log")
	}
	if err := e.rt.CreateContainer(context.Background(), spec); err != nil {
		e.t.Fatal(err)
	}
	e.created = append(e.created, spec.ID)
	return spec
}

// start creates and starts a container.
func (e *env) start(sandboxID string, spec ContainerSpec) ContainerSpec {
	e.t.Helper()
	spec = e.create(sandboxID, spec)
	if err := e.rt.Start(context.Background(), spec.ID); err != nil {
		e.t.Fatal(err)
	}
	return spec
}

// run starts a container and waits for it to exit.
func (e *env) run(sandboxID string, spec ContainerSpec) (ContainerSpec, State) {
	e.t.Helper()
	spec = e.start(sandboxID, spec)
	return spec, e.waitExited(spec.ID)
}

// waitExited polls the container's state until it has exited.
func (e *env) waitExited(id string) State {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := e.rt.State(id)
		if err != nil {
			e.t.Fatal(err)
		}
		if st.Status == StatusExited {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s still %s after 10s", id, st.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// output is what `kubectl logs` would show for the container.
func (e *env) output(spec ContainerSpec) string {
	e.t.Helper()
	var b strings.Builder
	if err := ReadLog(context.Background(), spec.LogPath, LogOptions{}, &b); err != nil {
		e.t.Fatal(err)
	}
	return b.String()
}

// sh is a container spec running a shell script.
func sh(script string) ContainerSpec {
	return ContainerSpec{Args: []string{"/bin/sh", "-c", script}}
}
