package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCSIExternalDriverProcess: README's "Other CSI drivers" — the built-in
// driver run as its own process (`moorage csi-driver --registration-dir`),
// the out-of-process path vendors' drivers take, against a node without the
// in-process driver. It registers through the plugin registration socket,
// its claim is provisioned and mounted in a pod, and when it stops, its
// registration goes.
func TestCSIExternalDriverProcess(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	dir := t.TempDir()
	m := startMoorageWith(t, dir, "--builtin-csi-driver=false")
	m.hostImage(t, "busybox")
	node := m.firstNode(t, v)

	sock := filepath.Join(t.TempDir(), "csi.sock")
	driver := exec.Command(moorageBin, "csi-driver", "--endpoint", "unix://"+sock, "--node-id", node,
		"--data-dir", filepath.Join(dir, "agent", "csi", "external"),
		"--registration-dir", filepath.Join(dir, "agent", "plugins_registry"))
	out := &syncBuffer{}
	driver.Stdout, driver.Stderr = out, out
	driver.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := driver.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- driver.Wait() }()
	var once sync.Once
	stopDriver := func() {
		once.Do(func() {
			_ = driver.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = driver.Process.Kill()
				<-exited
			}
		})
	}
	// Registered before the agent's cleanup runs (cleanups run last first):
	// the driver stops after moorage does.
	t.Cleanup(stopDriver)

	var r result
	if !eventually(podTimeout, func() bool {
		r = m.kubectl(t, v, "get", "csinode")
		got, ok := columnValue(r.Stdout, "DRIVERS", node)
		return ok && got == "1"
	}) {
		t.Fatalf("the external driver never registered\n%s\ndriver output:\n%s\nmoorage output:\n%s", r, out.String(), m.Output())
	}
	// The agent tells the registrar after it has written the CSINode entry.
	if !eventually(podTimeout, func() bool { return strings.Contains(out.String(), "registered with the node") }) {
		t.Errorf("the driver's registrar was not told it is registered:\n%s", out.String())
	}
	expectOK(t, m.kubectl(t, v, "apply", "-f", m.writeFile(t, "dynamic.yaml", dynamicProvisioning)), "pod/writer created")
	waitPodRow(t, m, v, "default", "writer", "1/1", "Running")
	expectOK(t, m.kubectl(t, v, "exec", "writer", "--", "dd", "if=/dev/zero", "of=/data/fits", "bs=1M", "count=16"))
	if got, _ := filepath.Glob(filepath.Join(dir, "agent", "csi", "external", "volumes", "*.img")); len(got) != 1 {
		t.Errorf("the external driver's images: %v, want one", got)
	}
	expectOK(t, m.kubectl(t, v, "delete", "pod", "writer"), `pod "writer" deleted`)
	expectOK(t, m.kubectl(t, v, "delete", "pvc", "data"), `persistentvolumeclaim "data" deleted`)
	if !eventually(podTimeout, func() bool {
		got, _ := filepath.Glob(filepath.Join(dir, "agent", "csi", "external", "volumes", "*.img"))
		return len(got) == 0 && len(m.kubectl(t, v, "get", "pv", "-o", "name").Stdout) == 0
	}) {
		t.Errorf("the volume was not deleted\n%s", m.kubectl(t, v, "get", "pv"))
	}

	stopDriver()
	if !eventually(podTimeout, func() bool {
		r = m.kubectl(t, v, "get", "csinode")
		got, ok := columnValue(r.Stdout, "DRIVERS", node)
		return ok && got == "0"
	}) {
		t.Errorf("the stopped driver is still registered\n%s", r)
	}
}
