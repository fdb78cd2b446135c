package local

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCSISanity runs the real csi-sanity (kubernetes-csi/csi-test, which
// hack/install-test-deps.sh installs) against the real `moorage
// csi-driver` process: mount volumes (ext4, and xfs where mkfs.xfs is
// there) and block volumes. Afterwards the driver must stop on SIGTERM
// and have left no volume, mount or loop device behind.
func TestCSISanity(t *testing.T) {
	if testing.Short() {
		t.Skip("csi-sanity: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("csi-sanity: needs root (the driver attaches loop devices and mounts file systems)")
	}
	sanity := findCSISanity(t)
	bin := buildMoorage(t)
	dir := t.TempDir()
	t.Cleanup(func() { noLeftovers(t, dir, true) })
	sock := filepath.Join(dir, "csi.sock")
	dataDir := filepath.Join(dir, "data")
	drv := startDriver(t, bin, sock, dataDir)

	runs := []struct {
		name string
		args []string
	}{
		{"mount-ext4", []string{"--csi.testvolumesize=67108864", "--csi.testvolumeexpandsize=134217728"}},
		{"block", []string{"--csi.testvolumesize=67108864", "--csi.testvolumeexpandsize=134217728", "--csi.testvolumeaccesstype=block"}},
	}
	if lookTool("mkfs.xfs") != "" {
		params := filepath.Join(dir, "xfs.yaml")
		if err := os.WriteFile(params, []byte("fsType: xfs\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, struct {
			name string
			args []string
		}{"mount-xfs", []string{"--csi.testvolumesize=314572800", "--csi.testvolumeexpandsize=629145600", "--csi.testvolumeparameters=" + params}})
	} else {
		t.Log("mkfs.xfs missing: no xfs run (hack/install-runtime-deps.sh installs xfsprogs)")
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := os.Mkdir(filepath.Join(dir, r.name), 0o750); err != nil { // csi-sanity makes only the last element
				t.Fatal(err)
			}
			args := append([]string{
				"--csi.endpoint=unix://" + sock,
				"--csi.stagingdir=" + filepath.Join(dir, r.name, "staging"),
				"--csi.mountdir=" + filepath.Join(dir, r.name, "target"),
				"--ginkgo.no-color",
			}, r.args...)
			out, err := exec.CommandContext(ctx, sanity, args...).CombinedOutput()
			summary := sanitySummary.Find(out)
			if err != nil || !bytes.Contains(summary, []byte("SUCCESS!")) {
				t.Fatalf("csi-sanity %s: %v\n%s\n--- driver log:\n%s", strings.Join(args, " "), err, out, drv.out.String())
			}
			t.Logf("csi-sanity: %s", bytes.ReplaceAll(summary, []byte("\n"), []byte(" ")))
		})
	}

	drv.stop(t)
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("the driver left its socket %s", sock)
	}
	if entries, err := os.ReadDir(filepath.Join(dataDir, "volumes")); err != nil || len(entries) > 0 {
		t.Errorf("volumes left in %s: %d (%v)", dataDir, len(entries), err)
	}
	noLeftovers(t, dir, false)
}

var sanitySummary = regexp.MustCompile(`(?m)^Ran \d+ of \d+ Specs.*\n.*(SUCCESS|FAIL)!.*$`)

// findCSISanity finds the csi-sanity hack/install-test-deps.sh installs:
// in $(go env GOBIN), else $(go env GOPATH)/bin, else on PATH.
func findCSISanity(t *testing.T) string {
	t.Helper()
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		gobin, gopath, _ := strings.Cut(string(out), "\n")
		if gobin = strings.TrimSpace(gobin); gobin != "" {
			dirs = append(dirs, gobin)
		} else if gopath = strings.TrimSpace(gopath); gopath != "" {
			dirs = append(dirs, filepath.Join(filepath.SplitList(gopath)[0], "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "csi-sanity")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("csi-sanity"); err == nil {
		return p
	}
	t.Fatalf("csi-sanity is not installed (looked in %s and on PATH): run `bash hack/install-test-deps.sh` (`make test` runs it)", strings.Join(dirs, ", "))
	return ""
}

// buildMoorage builds ./cmd/moorage into a temporary directory.
func buildMoorage(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := wd
	for {
		if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/moorage/moorage\n")) {
			break
		}
		if filepath.Dir(root) == root {
			t.Fatalf("no go.mod of github.com/moorage/moorage above %s", wd)
		}
		root = filepath.Dir(root)
	}
	bin := filepath.Join(t.TempDir(), "moorage")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/moorage")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/moorage: %v\n%s", err, out)
	}
	return bin
}

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

type driverProcess struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan error // the exit, once
	stopped bool       // done was received
}

// startDriver starts `moorage csi-driver` and waits for its socket. The
// process is killed when the test ends if it still runs then.
func startDriver(t *testing.T, bin, sock, dataDir string) *driverProcess {
	t.Helper()
	p := &driverProcess{out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, "csi-driver", "--endpoint", "unix://"+sock, "--node-id", "sanity-node", "--data-dir", dataDir)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.stopped {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return p
		}
		select {
		case err := <-p.done:
			p.stopped = true
			t.Fatalf("moorage csi-driver exited at start: %v\n%s", err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("moorage csi-driver: no socket %s after 10 s\n%s", sock, p.out.String())
		}
	}
}

// stop sends SIGTERM and wants a clean exit within 15 s.
func (p *driverProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.stopped = true
		if err != nil {
			t.Errorf("moorage csi-driver exited with %v\n%s", err, p.out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("moorage csi-driver did not stop within 15 s of SIGTERM\n%s", p.out.String())
	}
	if !strings.Contains(p.out.String(), "CSI driver stopped") {
		t.Errorf("no stop line in the driver's log:\n%s", p.out.String())
	}
}
