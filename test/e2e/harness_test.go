// Package e2e drives a real `moorage up` process with the real kubectl
// binaries (1.27 … 1.33), exactly as a user would, and checks that what they
// print is what they print against upstream Kubernetes.
//
// Run it with `go test ./test/e2e/ -count=1` (add -v to see each command).
// `-short` skips it. It builds ./cmd/moorage once, starts one moorage per
// test on 127.0.0.1:0 in a fresh temporary data dir, and gives every kubectl
// its own KUBECACHEDIR, so runs never share state with each other or with
// anything else on the machine.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// kubectlVersions are the minors of the kubectl binaries every matrix test
// runs with; defaultVersion is the one the single-version tests use (the one
// the `kubectl` dispatcher picks for moorage, which reports minor 33).
var (
	kubectlVersions = []int{27, 28, 29, 30, 31, 32, 33}
	defaultVersion  = 33
)

const (
	readyTimeout   = 10 * time.Second // moorage must print its ready line within this
	stopTimeout    = 5 * time.Second  // and exit after SIGTERM within this
	commandTimeout = 90 * time.Second // one kubectl invocation
)

var (
	moorageBin string // built once by TestMain
	buildErr   error
	repoRoot   string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	tmp, err := os.MkdirTemp("", "moorage-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	moorageBin, buildErr = buildMoorage(tmp)
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// buildMoorage builds ./cmd/moorage into dir with the go command that runs
// the tests (GOFLAGS and the rest of the environment pass through).
func buildMoorage(dir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/moorage/moorage\n")) {
			repoRoot = d
			break
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of github.com/moorage/moorage above %s", wd)
		}
	}
	// `go test` puts its own GOROOT/bin first on PATH for the tests it runs.
	bin := filepath.Join(dir, "moorage")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/moorage")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/moorage (in %s): %v\n%s", repoRoot, err, out)
	}
	return bin, nil
}

// requireE2E skips in -short mode and fails if moorage did not build.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped with -short")
	}
	if buildErr != nil {
		t.Fatalf("building moorage failed:\n%v", buildErr)
	}
}

// ---------------------------------------------------------------- moorage

// syncBuffer collects a process's output safely across goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// moorage is one running `moorage up`.
type moorage struct {
	DataDir    string
	Kubeconfig string
	URL        string
	// netns is the network namespace (a machine of a lab) the server runs
	// in; kubectl runs there too. "" is the host's.
	netns string

	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{} // closed when the process has exited
	exit   int
	stopMu sync.Mutex

	tmp       string // scratch space for this server's kubectl caches and files
	cacheMu   sync.Mutex
	cacheDirs map[int]string
}

var readyLine = regexp.MustCompile(`moorage \S+ is ready at (https://[0-9.]+:\d+) \(in \d+ ms\)`)
var kubeconfigLine = regexp.MustCompile(`(?m)^kubeconfig: (\S+)$`)

// startMoorage starts `moorage up` in a fresh data dir on 127.0.0.1:0 and
// stops it (SIGTERM, expecting exit 0) when the test ends.
func startMoorage(t *testing.T) *moorage {
	t.Helper()
	return startMoorageIn(t, t.TempDir())
}

// startMoorageIn is startMoorage on a given data dir (to test restarts).
func startMoorageIn(t *testing.T, dataDir string) *moorage {
	t.Helper()
	return startMoorageWith(t, dataDir)
}

// startMoorageWith is startMoorageIn with more flags for `moorage up`.
func startMoorageWith(t *testing.T, dataDir string, flags ...string) *moorage {
	t.Helper()
	requireE2E(t)
	m, err := launch(dataDir, flags...)
	if err != nil {
		t.Fatalf("moorage up --data-dir %s: %v", dataDir, err)
	}
	t.Cleanup(func() {
		if code, err := m.Stop(); err != nil {
			t.Errorf("stopping moorage: %v\noutput:\n%s", err, m.Output())
		} else if code != 0 {
			t.Errorf("moorage exited %d after SIGTERM, want 0\noutput:\n%s", code, m.Output())
		}
		// The agent leaves containers running, as the kubelet does: stop
		// them and unmount their volumes before the data dir is deleted.
		if out, err := exec.Command(moorageBin, "killall", "--data-dir", dataDir).CombinedOutput(); err != nil {
			t.Errorf("moorage killall: %v\n%s", err, out)
		}
		os.RemoveAll(m.tmp)
	})
	return m
}

// launch runs `moorage up` (with flags) and waits for its ready line.
func launch(dataDir string, flags ...string) (*moorage, error) {
	return launchEnv(dataDir, nil, flags...)
}

// launchEnv is launch with more environment variables for moorage.
func launchEnv(dataDir string, env []string, flags ...string) (*moorage, error) {
	return launchIn("", dataDir, env, flags...)
}

// launchIn is launchEnv in a network namespace (a lab's machine).
func launchIn(netns, dataDir string, env []string, flags ...string) (*moorage, error) {
	return launchCommand(netns, "up", dataDir, env, flags...)
}

// launchCommand runs `moorage command` (up or server) with flags in netns
// and waits for its ready line.
func launchCommand(netns, command, dataDir string, env []string, flags ...string) (*moorage, error) {
	tmp, err := os.MkdirTemp("", "moorage-e2e-kubectl-")
	if err != nil {
		return nil, err
	}
	m := &moorage{DataDir: dataDir, netns: netns, out: &syncBuffer{}, done: make(chan struct{}), tmp: tmp, cacheDirs: map[int]string{}}
	m.cmd = inNetNS(netns, moorageBin, append([]string{command, "--data-dir", dataDir, "--listen", "127.0.0.1:0"}, flags...)...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if env != nil {
		m.cmd.Env = append(os.Environ(), env...)
	}
	// If the test binary dies (a go test timeout, ^C), take moorage with it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	go func() {
		err := m.cmd.Wait()
		m.exit = m.cmd.ProcessState.ExitCode()
		if err != nil && m.exit == 0 {
			m.exit = -1
		}
		close(m.done)
	}()
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		out := m.out.String()
		if r := readyLine.FindStringSubmatch(out); r != nil {
			if k := kubeconfigLine.FindStringSubmatch(out); k != nil {
				m.URL, m.Kubeconfig = r[1], k[1]
				if want := filepath.Join(dataDir, "kubeconfig"); m.Kubeconfig != want {
					m.kill()
					return nil, fmt.Errorf("ready, but the kubeconfig line names %s, want %s\noutput:\n%s", m.Kubeconfig, want, out)
				}
				return m, nil
			}
		}
		select {
		case <-m.done:
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("exited with code %d before printing its ready line\noutput:\n%s", m.exit, m.out.String())
		case <-deadline.C:
			m.kill()
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("no ready line within %v\noutput:\n%s", readyTimeout, m.out.String())
		case <-tick.C:
		}
	}
}

// inNetNS is exec.Command, run in the network namespace pinned at netns
// (through nsenter) unless it is "".
func inNetNS(netns, name string, args ...string) *exec.Cmd {
	if netns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + netns, "--", name}, args...)...)
}

func (m *moorage) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

// Output is everything moorage printed so far.
func (m *moorage) Output() string { return m.out.String() }

// Stop sends SIGTERM and waits stopTimeout for the exit (then SIGKILL). It
// returns the exit code; calling it again returns the same.
func (m *moorage) Stop() (int, error) {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	select {
	case <-m.done:
		return m.exit, nil
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return m.exit, nil
	case <-time.After(stopTimeout):
		m.kill()
		return m.exit, fmt.Errorf("still running %v after SIGTERM; killed", stopTimeout)
	}
}

// ---------------------------------------------------------------- kubectl

var (
	kubectlDirsOnce sync.Once
	kubectlDirs     []string
)

// kubectlPath finds kubectl.1.<v> beside the resolved `kubectl` on PATH, or
// in /usr/lib/google-cloud-sdk/bin. A missing binary fails the test: they are
// part of the machine image, and skipping would hide a broken environment.
func kubectlPath(t testing.TB, v int) string {
	t.Helper()
	kubectlDirsOnce.Do(func() {
		if p, err := exec.LookPath("kubectl"); err == nil {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				kubectlDirs = append(kubectlDirs, filepath.Dir(r))
			}
			kubectlDirs = append(kubectlDirs, filepath.Dir(p))
		}
		kubectlDirs = append(kubectlDirs, "/usr/lib/google-cloud-sdk/bin")
	})
	name := fmt.Sprintf("kubectl.1.%d", v)
	var tried []string
	for _, d := range kubectlDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
		tried = append(tried, p)
	}
	t.Fatalf("the kubectl %s binary is missing: looked for %s (it is part of the machine image: the environment is broken)", name, strings.Join(tried, ", "))
	return ""
}

// result is one kubectl run.
type result struct {
	Args   []string
	Stdout string
	Stderr string
	Code   int
}

func (r result) String() string {
	return fmt.Sprintf("$ kubectl %s\nexit %d\n--- stdout:\n%s--- stderr:\n%s", shellJoin(r.Args), r.Code, r.Stdout, r.Stderr)
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"{}[]$*?;&|<>()`\\") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// cacheDir is this server's KUBECACHEDIR for kubectl 1.<v>.
func (m *moorage) cacheDir(v int) string {
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	if d, ok := m.cacheDirs[v]; ok {
		return d
	}
	d := filepath.Join(m.tmp, fmt.Sprintf("cache-1.%d", v))
	_ = os.MkdirAll(d, 0o700)
	m.cacheDirs[v] = d
	return d
}

// kubectlEnv is the environment of a kubectl run: the test's own, without
// anything that would point kubectl elsewhere, plus a private cache and home.
func (m *moorage) kubectlEnv(v int, extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "KUBECONFIG", "KUBECACHEDIR", "HOME", "KUBE_EDITOR", "EDITOR", "KUBECTL_EXTERNAL_DIFF", "KUBECTL_KUBERC", "KUBERC", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy":
			continue
		}
		env = append(env, e)
	}
	home := filepath.Join(m.tmp, "home")
	_ = os.MkdirAll(home, 0o700)
	env = append(env, "KUBECACHEDIR="+m.cacheDir(v), "HOME="+home, "NO_PROXY=127.0.0.1,localhost")
	return append(env, extra...)
}

// kubectl runs kubectl.1.<v> --kubeconfig <this server's> args... and
// returns its stdout, stderr and exit code.
func (m *moorage) kubectl(t testing.TB, v int, args ...string) result {
	t.Helper()
	return m.kubectlEnvRun(t, v, nil, "", args...)
}

// kubectlStdin is kubectl with stdin.
func (m *moorage) kubectlStdin(t testing.TB, v int, stdin string, args ...string) result {
	t.Helper()
	return m.kubectlEnvRun(t, v, nil, stdin, args...)
}

func (m *moorage) kubectlEnvRun(t testing.TB, v int, extraEnv []string, stdin string, args ...string) result {
	t.Helper()
	bin := kubectlPath(t, v)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := inNetNS(m.netns, bin, append([]string{"--kubeconfig", m.Kubeconfig}, args...)...)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Env = m.kubectlEnv(v, extraEnv...)
	cmd.Dir = m.tmp
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	r := result{Args: args, Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.Code = exitErr.ExitCode()
	default:
		t.Fatalf("running %s: %v", bin, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("kubectl 1.%d timed out after %v\n%s", v, commandTimeout, r)
	}
	if testing.Verbose() {
		t.Logf("1.%d %s", v, r)
	}
	return r
}

// mustKubectl runs kubectl and fails the test unless it exits 0; it returns
// stdout.
func (m *moorage) mustKubectl(t testing.TB, v int, args ...string) string {
	t.Helper()
	r := m.kubectl(t, v, args...)
	if r.Code != 0 {
		t.Fatalf("kubectl 1.%d failed:\n%s", v, r)
	}
	return r.Stdout
}

// applyFile runs `kubectl apply -f file` (file relative to testdata/).
func (m *moorage) applyFile(t testing.TB, v int, file string, extra ...string) result {
	t.Helper()
	return m.kubectl(t, v, append([]string{"apply", "-f", testdata(file)}, extra...)...)
}

// writeFile writes content into this server's scratch dir and returns the path.
func (m *moorage) writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(m.tmp, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// getJSON runs `kubectl get ... -o json` and decodes it into out.
func (m *moorage) getJSON(t testing.TB, v int, out any, args ...string) {
	t.Helper()
	stdout := m.mustKubectl(t, v, append(append([]string{"get"}, args...), "-o", "json")...)
	// decode into a zero value: json.Unmarshal merges into existing maps
	rv := reflect.ValueOf(out).Elem()
	rv.Set(reflect.Zero(rv.Type()))
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		t.Fatalf("kubectl 1.%d get %s -o json: %v\n%s", v, strings.Join(args, " "), err, stdout)
	}
}

// background is a long-running kubectl (get -w, wait) whose stdout is
// collected line by line.
type background struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when stdout is at EOF

	mu     sync.Mutex
	lines  []string
	notify chan struct{} // signalled (non-blocking) on each new line
}

func (m *moorage) kubectlBackground(t testing.TB, v int, args ...string) *background {
	t.Helper()
	bin := kubectlPath(t, v)
	cmd := inNetNS(m.netns, bin, append([]string{"--kubeconfig", m.Kubeconfig}, args...)...)
	cmd.Env = m.kubectlEnv(v)
	cmd.Dir = m.tmp
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b := &background{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	cmd.Stderr = b.stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("1.%d $ kubectl %s &", v, shellJoin(args))
	}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, sc.Text())
			b.mu.Unlock()
			select {
			case b.notify <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(b.Stop)
	return b
}

// WaitLine waits for a stdout line (among all printed so far, or to come)
// that satisfies ok.
func (b *background) WaitLine(timeout time.Duration, ok func(string) bool) (string, bool) {
	deadline := time.After(timeout)
	seen := 0
	for {
		b.mu.Lock()
		lines := b.lines[seen:]
		seen = len(b.lines)
		b.mu.Unlock()
		for _, l := range lines {
			if ok(l) {
				return l, true
			}
		}
		select {
		case <-b.notify:
		case <-b.done:
			b.mu.Lock()
			more := len(b.lines) > seen
			b.mu.Unlock()
			if !more {
				return "", false
			}
		case <-deadline:
			return "", false
		}
	}
}

// Output is what the command printed so far.
func (b *background) Output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "--- stdout:\n" + strings.Join(b.lines, "\n") + "\n--- stderr:\n" + b.stderr.String()
}

// Stop kills the command (if still running) and reaps it.
func (b *background) Stop() {
	if b.cmd.ProcessState != nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.done // stdout reaches EOF once the process is gone
	_ = b.cmd.Wait()
}

// ---------------------------------------------------------------- helpers

// testdata is the absolute path of testdata/<name>.
func testdata(name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return p
}

// expectFail checks that r exited non-zero and its stderr contains every
// want string.
func expectFail(t testing.TB, r result, wants ...string) {
	t.Helper()
	if r.Code == 0 {
		t.Errorf("want a non-zero exit, got 0\n%s", r)
		return
	}
	for _, w := range wants {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("stderr lacks %q\n%s", w, r)
		}
	}
}

// expectOK checks that r exited 0 and stdout contains every want string.
func expectOK(t testing.TB, r result, wants ...string) bool {
	t.Helper()
	if r.Code != 0 {
		t.Errorf("want exit 0\n%s", r)
		return false
	}
	ok := true
	for _, w := range wants {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("stdout lacks %q\n%s", w, r)
			ok = false
		}
	}
	return ok
}

// expectNotFound checks that `kubectl get <args>` answers NotFound.
func (m *moorage) expectNotFound(t testing.TB, v int, args ...string) {
	t.Helper()
	r := m.kubectl(t, v, append([]string{"get"}, args...)...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "(NotFound)") {
		t.Errorf("want NotFound (nothing written)\n%s", r)
	}
}

// headerFields splits a table's header line into its column names (columns
// are separated by 2+ spaces; a name may contain one space, e.g. ACCESS MODES).
func headerFields(table string) []string {
	line, _, _ := strings.Cut(table, "\n")
	var cols []string
	for _, c := range regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1) {
		if c != "" {
			cols = append(cols, c)
		}
	}
	return cols
}

// expectHeader checks a table's header columns exactly.
func expectHeader(t testing.TB, r result, want ...string) {
	t.Helper()
	if r.Code != 0 {
		t.Errorf("want exit 0\n%s", r)
		return
	}
	if got := headerFields(r.Stdout); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("header columns\n got: %q\nwant: %q\n%s", got, want, r)
	}
}

// row returns the table row whose fields start with the given leading
// fields (e.g. namespace then name), or "".
func row(table string, lead ...string) string {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) < len(lead) {
			continue
		}
		match := true
		for i, x := range lead {
			if f[i] != x {
				match = false
				break
			}
		}
		if match {
			return l
		}
	}
	return ""
}

// columnValue is the value of column col in the row beginning with lead,
// cut at the header's column offsets (the last column runs to the line's end).
func columnValue(table, col string, lead ...string) (string, bool) {
	header, _, _ := strings.Cut(table, "\n")
	start := -1
	for _, loc := range regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(header, -1) {
		if header[loc[0]:loc[1]] == col {
			start = loc[0]
		} else if start >= 0 {
			return cut(table, start, loc[0], lead)
		}
	}
	if start < 0 {
		return "", false
	}
	return cut(table, start, -1, lead)
}

func cut(table string, start, end int, lead []string) (string, bool) {
	r := row(table, lead...)
	if r == "" {
		return "", false
	}
	if start >= len(r) {
		return "", true
	}
	if end < 0 || end > len(r) {
		end = len(r)
	}
	return strings.TrimSpace(r[start:end]), true
}

// eventually retries f until it returns true or the timeout passes.
func eventually(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
