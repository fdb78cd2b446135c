package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] .*$`)

func TestRunWritesCRILogAndExitCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "web-0"})

	t0 := time.Now()
	spec := e.create(pod, sh("echo hi; echo err >&2; exit 3"))
	created := time.Since(t0)
	st, err := e.rt.State(spec.ID)
	if err != nil || st.Status != StatusCreated || st.Pid <= 0 {
		t.Fatalf("after create: %+v, %v; want created with a pid", st, err)
	}
	t1 := time.Now()
	if err := e.rt.Start(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	started := time.Since(t1)
	st = e.waitExited(spec.ID)
	if st.ExitCode != 3 || st.Reason != "" {
		t.Errorf("state = %+v, want exit code 3 and no reason", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v, finished %v", st.StartedAt, st.FinishedAt)
	}

	raw, err := os.ReadFile(spec.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("log has %d lines, want 2:\n%s", len(lines), raw)
	}
	for _, l := range lines {
		if !criLine.MatchString(l) {
			t.Errorf("not a CRI log line: %q", l)
		}
	}
	if !strings.Contains(string(raw), " stdout F hi\n") || !strings.Contains(string(raw), " stderr F err\n") {
		t.Errorf("log lacks the lines:\n%s", raw)
	}

	t2 := time.Now()
	if err := e.rt.Remove(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("create %v, start %v, remove %v", created, started, time.Since(t2))
	if _, err := e.rt.State(spec.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("State after Remove: %v, want ErrNotFound", err)
	}
}

func TestContainersShareSandboxNamespacesButNotPIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "web-0"})
	script := `hostname; echo $$; readlink /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/pid /proc/self/ns/mnt`
	// a runs on while b runs: namespace numbers are only unique among
	// namespaces that exist at the same time.
	a := e.start(pod, sh(script+"; echo shared > /dev/shm/from-a; echo ready; exec sleep 1000"))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(e.output(a), "ready\n") {
		if time.Now().After(deadline) {
			t.Fatalf("first container not ready: %q", e.output(a))
		}
		time.Sleep(5 * time.Millisecond)
	}
	b, sb := e.run(pod, sh(script+"; cat /dev/shm/from-a"))
	if sb.ExitCode != 0 {
		t.Fatalf("exit code %d:\n%s", sb.ExitCode, e.output(b))
	}
	outA := strings.Split(e.output(a), "\n")
	outB := strings.Split(e.output(b), "\n")
	// hostname, pid, ipc, uts, pid ns, mnt ns (, shm)
	if outA[0] != "web-0" || outB[0] != "web-0" {
		t.Errorf("hostnames %q, %q; want web-0", outA[0], outB[0])
	}
	if outA[1] != "1" || outB[1] != "1" {
		t.Errorf("pids %q, %q; want each container's own pid 1", outA[1], outB[1])
	}
	if outA[2] != outB[2] || outA[3] != outB[3] {
		t.Errorf("IPC/UTS namespaces differ: %q %q vs %q %q", outA[2], outA[3], outB[2], outB[3])
	}
	if outA[4] == outB[4] || outA[5] == outB[5] {
		t.Errorf("PID/mount namespaces shared: %q %q", outA[4], outA[5])
	}
	var rec sandboxRecord
	if err := readJSON(filepath.Join(e.rt.sandboxDir(pod), "sandbox.json"), &rec); err != nil {
		t.Fatal(err)
	}
	pauseIPC, _ := os.Readlink(rec.nsPath("ipc"))
	if outA[2] != pauseIPC {
		t.Errorf("container IPC namespace %q, pause's %q", outA[2], pauseIPC)
	}
	hostIPC, _ := os.Readlink("/proc/self/ns/ipc")
	if pauseIPC == hostIPC {
		t.Errorf("the sandbox shares the host's IPC namespace")
	}
	if outB[6] != "shared" {
		t.Errorf("second container read %q from /dev/shm, want the first's \"shared\"", outB[6])
	}

	if err := e.rt.Remove(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Remove(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.RemoveSandbox(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if rec.Pause.alive() {
		t.Errorf("pause process %d survived RemoveSandbox", rec.Pause.Pid)
	}
	if err := e.rt.RemoveSandbox(context.Background(), pod); err != nil {
		t.Errorf("second RemoveSandbox: %v", err)
	}
}

func TestRootfsIsCopyOnWriteAndMountsAreEnforced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "cow"})
	ro, rw := filepath.Join(e.dir, "ro"), filepath.Join(e.dir, "rw")
	for _, d := range []string{ro, rw} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	marker := "/etc/moorage-cow-" + randomID()
	spec := sh(fmt.Sprintf(`echo written > %s && cat %s &&
		if echo x > /ro/f; then echo ro-writable; fi;
		echo data > /rw/f; echo "state entries: $(ls -A %s | wc -l)"`, marker, marker, e.cfg.StateDir))
	spec.Mounts = []Mount{{Source: ro, Destination: "/ro", ReadOnly: true}, {Source: rw, Destination: "/rw"}}
	spec, st := e.run(pod, spec)
	out := e.output(spec)
	if st.ExitCode != 0 {
		t.Fatalf("state %+v:\n%s", st, out)
	}
	if !strings.Contains(out, "written\n") { // stdout; stderr's lines may come first
		t.Errorf("output %q: the container could not read back its write", out)
	}
	if !strings.Contains(out, "Read-only file system") || strings.Contains(out, "ro-writable") {
		t.Errorf("writing to the read-only mount did not fail with EROFS:\n%s", out)
	}
	if !strings.Contains(out, "state entries: 0\n") {
		t.Errorf("the state dir is visible in the container (want 0 entries):\n%s", out)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the container's write reached the host's %s: %v", marker, err)
	}
	upper := filepath.Join(e.rt.containerDir(spec.ID), "upper", marker)
	if b, err := os.ReadFile(upper); err != nil || string(b) != "written\n" {
		t.Errorf("upper dir %s: %q, %v", upper, b, err)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "f")); err != nil || string(b) != "data\n" {
		t.Errorf("read-write mount: %q, %v", b, err)
	}

	ros := sh("touch /newfile")
	ros.ReadOnlyRootfs = true
	ros, st = e.run(pod, ros)
	if out := e.output(ros); st.ExitCode == 0 || !strings.Contains(out, "Read-only file system") {
		t.Errorf("read-only root: exit %d, %q; want a failure with EROFS", st.ExitCode, out)
	}
}

func TestUserCapabilitiesAndResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "caps"})
	capsScript := `grep CapEff /proc/self/status; wc -c < /proc/timer_list`

	user := sh(`id -u; id -g; id -G; grep CapEff /proc/self/status; grep pids /proc/self/cgroup`)
	user.User = User{UID: 1000, GID: 1001, AdditionalGIDs: []uint32{5000}}
	user.Resources = Resources{MemoryLimit: 64 << 20, PidsLimit: 42, CPUShares: 256}
	user, st := e.run(pod, user)
	got := e.output(user)
	cg := e.rt.cgroupsPath(pod, user.ID)
	want := "1000\n1001\n1001 5000\nCapEff:\t0000000000000000\n" // none left to a non-root user
	if st.ExitCode != 0 || !strings.HasPrefix(got, want) || !strings.HasSuffix(got, ":pids:"+cg+"\n") {
		t.Errorf("as uid 1000: exit %d, %q; want %q and the pids cgroup %s", st.ExitCode, got, want, cg)
	}
	for file, want := range map[string]string{
		"memory/memory.limit_in_bytes": "67108864",
		"pids/pids.max":                "42",
		"cpu/cpu.shares":               "256",
	} {
		dir, name := filepath.Split(file)
		b, err := os.ReadFile(filepath.Join(cgroupRoot, dir, cg, name))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v; want %s", file, b, err, want)
		}
	}

	root, st := e.run(pod, sh(capsScript))
	if got, want := e.output(root), "CapEff:\t00000000a80425fb\n0\n"; st.ExitCode != 0 || got != want {
		t.Errorf("default: exit %d, %q; want the default capabilities and a masked /proc/timer_list: %q", st.ExitCode, got, want)
	}

	priv := sh(capsScript)
	priv.Privileged = true
	priv, st = e.run(pod, priv)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	hostBnd := regexp.MustCompile(`CapBnd:\t(\w+)`).FindSubmatch(status)[1]
	if got := e.output(priv); st.ExitCode != 0 || !strings.HasPrefix(got, "CapEff:\t"+string(hostBnd)+"\n") || strings.HasSuffix(got, "\n0\n") {
		t.Errorf("privileged: exit %d, %q; want every capability (%s) and an unmasked /proc/timer_list", st.ExitCode, got, hostBnd)
	}
}

func TestOOMKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "oom"})
	spec := ContainerSpec{Args: []string{"tail", "/dev/zero"}} // buffers one endless line
	spec.Resources.MemoryLimit = 16 << 20
	_, st := e.run(pod, spec)
	if st.ExitCode != 137 || st.Reason != ReasonOOMKilled {
		t.Errorf("state = %+v, want exit 137, OOMKilled", st)
	}
}

func TestKillAndExec(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "exec"})
	spec := e.start(pod, sh(`trap 'echo got-term; exit 143' TERM; sleep 1000 & wait`))
	ctx := context.Background()

	var out, errOut bytes.Buffer
	code, err := e.rt.Exec(ctx, spec.ID, ExecSpec{
		Args:   []string{"sh", "-c", `echo "out $FOO $(hostname) $(pwd)"; echo err >&2; exit 7`},
		Env:    []string{"FOO=bar"},
		Cwd:    "/tmp",
		Stdout: &out, Stderr: &errOut,
	})
	if err != nil || code != 7 || out.String() != "out bar exec /tmp\n" || errOut.String() != "err\n" {
		t.Errorf("exec = %d, %v, stdout %q, stderr %q", code, err, out.String(), errOut.String())
	}

	out.Reset()
	code, err = e.rt.Exec(ctx, spec.ID, ExecSpec{
		Args:  []string{"sh", "-c", "cat; id -u; id -G"},
		User:  &User{UID: 4242, GID: 4242, AdditionalGIDs: []uint32{7}},
		Stdin: strings.NewReader("from stdin\n"), Stdout: &out,
	})
	if err != nil || code != 0 || out.String() != "from stdin\n4242\n4242 7\n" {
		t.Errorf("exec with stdin = %d, %v, %q", code, err, out.String())
	}

	out.Reset()
	resize := make(chan TermSize, 1)
	resize <- TermSize{Width: 100, Height: 40}
	code, err = e.rt.Exec(ctx, spec.ID, ExecSpec{
		// runc sets the size just after starting the process: wait for it.
		Args:   []string{"sh", "-c", `while [ "$(stty size)" = "0 0" ]; do sleep 0.01; done; stty size; tty; exit 5`},
		TTY:    true,
		Stdout: &out,
		Resize: resize,
	})
	if err != nil || code != 5 || !strings.Contains(out.String(), "40 100\r\n/dev/pts/") {
		t.Errorf("exec on a tty = %d, %v, %q", code, err, out.String())
	}

	if _, err := e.rt.Exec(ctx, spec.ID, ExecSpec{Args: []string{"/no/such/program"}}); err == nil {
		t.Errorf("exec of a missing program: no error")
	}

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	sleep := []string{"sleep", "1000." + strconv.Itoa(os.Getpid())} // unique, for pgrep
	if _, err := e.rt.Exec(short, spec.ID, ExecSpec{Args: sleep}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("exec past its deadline: %v, want DeadlineExceeded", err)
	}
	t.Logf("cancelled exec returned after %v", time.Since(t0))
	if out, err := exec.Command("pgrep", "-f", strings.Join(sleep, " ")).Output(); err == nil {
		t.Errorf("the cancelled exec's process lives on: pids %q", out)
	}

	if err := e.rt.Kill(ctx, spec.ID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st := e.waitExited(spec.ID)
	if st.ExitCode != 143 || !strings.Contains(e.output(spec), "got-term") {
		t.Errorf("after SIGTERM: %+v, log %q", st, e.output(spec))
	}
	if err := e.rt.Kill(ctx, spec.ID, syscall.SIGKILL); err != nil {
		t.Errorf("Kill of an exited container: %v", err)
	}
	if _, err := e.rt.Exec(ctx, spec.ID, ExecSpec{Args: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec in an exited container: %v, want ErrNotRunning", err)
	}
}

func TestStateSurvivesAgentRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "restart"})
	spec := e.start(pod, sh("echo before; sleep 1000"))
	before, err := e.rt.State(spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	var rec containerRecord
	if err := readJSON(filepath.Join(e.rt.containerDir(spec.ID), "record.json"), &rec); err != nil {
		t.Fatal(err)
	}
	if sid, _ := unix.Getsid(rec.Shim.Pid); sid != rec.Shim.Pid {
		t.Errorf("shim %d is in session %d, want its own (detached from the agent)", rec.Shim.Pid, sid)
	}

	// A new agent: a new Runtime on the same state.
	rt2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := rt2.List()
	if err != nil || len(ids) != 1 || ids[0] != spec.ID {
		t.Fatalf("List = %v, %v; want [%s]", ids, err, spec.ID)
	}
	after, err := rt2.State(spec.ID)
	if err != nil || after.Status != StatusRunning || after.Pid != before.Pid || !after.StartedAt.Equal(before.StartedAt) {
		t.Fatalf("state after restart %+v, %v; before %+v", after, err, before)
	}
	ctx := context.Background()
	if err := rt2.Kill(ctx, spec.ID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.rt = rt2
	if st := e.waitExited(spec.ID); st.ExitCode != 137 {
		t.Errorf("exit code %d, want 137", st.ExitCode)
	}
	if rec.Shim.wait(ctx) != nil || rec.Shim.alive() {
		t.Errorf("shim still running after its container exited")
	}
	if err := rt2.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if ids, _ := rt2.List(); len(ids) != 0 {
		t.Errorf("List after Remove = %v", ids)
	}
}

func TestRemoveIsIdempotentAndThorough(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.sandbox(SandboxSpec{Hostname: "rm"})
	ctx := context.Background()
	if err := e.rt.Remove(ctx, "never-created"); err != nil {
		t.Errorf("Remove of an unknown container: %v", err)
	}
	created := e.create(pod, sh("echo never"))     // never started
	running := e.start(pod, sh("exec sleep 1000")) // killed by Remove
	var recs []containerRecord
	for _, id := range []string{created.ID, running.ID} {
		var rec containerRecord
		if err := readJSON(filepath.Join(e.rt.containerDir(id), "record.json"), &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	t0 := time.Now()
	for _, id := range []string{created.ID, running.ID} {
		for range 2 {
			if err := e.rt.Remove(ctx, id); err != nil {
				t.Fatalf("Remove %s: %v", id, err)
			}
		}
	}
	t.Logf("removed a created and a running container in %v", time.Since(t0))
	for _, rec := range recs {
		if rec.Init.alive() || rec.Shim.alive() {
			t.Errorf("%s: init %v or shim %v still alive", rec.ID, rec.Init.alive(), rec.Shim.alive())
		}
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "memory", e.cfg.CgroupParent, pod)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod cgroup left behind with its last container: %v", err)
	}

	// What an agent crash in CreateContainer can leave: a mounted root
	// and no record.
	dir := e.rt.containerDir("half-made")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := mountRootfs(Rootfs{LowerDirs: []string{"/"}}, dir, filepath.Join(dir, "rootfs")); err != nil {
		t.Fatal(err)
	}
	if ids, _ := e.rt.List(); len(ids) != 1 || ids[0] != "half-made" {
		t.Errorf("List = %v, want the half-made container", ids)
	}
	if _, err := e.rt.State("half-made"); !errors.Is(err, ErrNotFound) {
		t.Errorf("State of a half-made container: %v, want ErrNotFound", err)
	}
	if err := e.rt.Remove(ctx, "half-made"); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.RemoveSandbox(ctx, pod); err != nil {
		t.Fatal(err)
	}
	e.checkClean()
}

func TestSandboxJoinsNetworkNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	nsFile := filepath.Join(e.dir, "netns")
	if err := os.WriteFile(nsFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--net="+nsFile, "true").CombinedOutput(); err != nil {
		t.Fatalf("make a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(nsFile, unix.MNT_DETACH) })
	var st unix.Stat_t
	if err := unix.Stat(nsFile, &st); err != nil {
		t.Fatal(err)
	}
	pod := e.sandbox(SandboxSpec{Hostname: "net", NetNS: nsFile})
	spec, state := e.run(pod, sh("readlink /proc/self/ns/net; cat /proc/net/dev | wc -l"))
	want := fmt.Sprintf("net:[%d]\n3\n", st.Ino) // only lo in a fresh namespace
	if out := e.output(spec); state.ExitCode != 0 || out != want {
		t.Errorf("container in netns: exit %d, %q; want %q", state.ExitCode, out, want)
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	if own == fmt.Sprintf("net:[%d]", st.Ino) {
		t.Errorf("the test's own thread was left in the pod's network namespace")
	}
}

func TestBlockDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := filepath.Join(e.dir, "disk.img")
	if err := os.WriteFile(img, append([]byte("moorage-block"), make([]byte, 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	pod := e.sandbox(SandboxSpec{Hostname: "block"})
	spec := sh("head -c 13 /dev/xvda; echo; head -c 1 " + loop + " 2>&1 || true")
	spec.Devices = []Device{{HostPath: loop, ContainerPath: "/dev/xvda"}}
	spec, st := e.run(pod, spec)
	got := e.output(spec)
	if st.ExitCode != 0 || !strings.HasPrefix(got, "moorage-block\n") {
		t.Errorf("block device: exit %d, %q", st.ExitCode, got)
	}
	if !strings.Contains(got, "No such file") {
		t.Errorf("the host's %s is visible in the container: %q", loop, got)
	}
}

func TestMountPropagation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Propagation needs shared host mounts: the agent makes its own
	// directories shared, as here (the host's / is private).
	slave, shared := filepath.Join(e.dir, "slave"), filepath.Join(e.dir, "shared")
	for _, d := range []string{slave, shared} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unmountAll(d) })
		if err := unix.Mount("", d, "", unix.MS_SHARED, ""); err != nil {
			t.Fatal(err)
		}
	}
	pod := e.sandbox(SandboxSpec{Hostname: "prop"})
	spec := sh("exec sleep 1000")
	spec.Privileged = true // to mount inside
	spec.Mounts = []Mount{
		{Source: slave, Destination: "/slave", Propagation: "rslave"},
		{Source: shared, Destination: "/shared", Propagation: "rshared"},
	}
	spec = e.start(pod, spec)

	// Host to container: a mount made on the host after the start shows.
	fromHost := filepath.Join(slave, "from-host")
	if err := os.Mkdir(fromHost, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", fromHost, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmountAll(fromHost) })
	ctx := context.Background()
	var out bytes.Buffer
	script := "grep -c ' /slave/from-host ' /proc/self/mountinfo; mkdir /shared/from-ctr && mount -t tmpfs -o size=4k tmpfs /shared/from-ctr"
	code, err := e.rt.Exec(ctx, spec.ID, ExecSpec{Args: []string{"sh", "-c", script}, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 || out.String() != "1\n" {
		t.Errorf("in the container: %d, %v, %q; want the host's mount seen and a mount made", code, err, out.String())
	}
	// Container to host (rshared): the container's mount shows on the host.
	fromCtr := filepath.Join(shared, "from-ctr")
	t.Cleanup(func() { _ = unmountAll(fromCtr) })
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mi), " "+fromCtr+" ") {
		t.Errorf("the container's mount at /shared/from-ctr did not reach the host's %s", fromCtr)
	}
	if err := e.rt.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
}
