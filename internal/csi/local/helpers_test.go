package local

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const testNode = "test-node"

// requireLoop skips tests that attach loop devices and mount file systems
// where they cannot.
func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices and mounts file systems")
	}
	if _, err := os.Stat(loopControl); err != nil {
		t.Skipf("needs loop devices: %v", err)
	}
}

// newDriver makes a driver on a fresh data directory. Before the directory
// is removed, a cleanup unmounts whatever is still mounted under it and
// detaches every loop device backed by a file in it, and fails the test
// if it had anything to do: the driver must leave nothing behind.
func newDriver(t *testing.T) (*Driver, string) {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { noLeftovers(t, dir, true) })
	return openDriver(t, filepath.Join(dir, "data")), dir
}

func openDriver(t *testing.T, dataDir string) *Driver {
	t.Helper()
	d, err := New(Options{NodeID: testNode, DataDir: dataDir, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// noLeftovers fails t if a mount or a loop device under dir remains, and
// with clean, removes them.
func noLeftovers(t *testing.T, dir string, clean bool) {
	t.Helper()
	dir = canonical(dir)
	mounts, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for i := len(mounts) - 1; i >= 0; i-- {
		if p := mounts[i].MountPoint; strings.HasPrefix(p, dir+"/") {
			left = append(left, "mount "+p)
			if clean {
				unix.Unmount(p, unix.MNT_DETACH)
			}
		}
	}
	for _, l := range loopsUnder(t, dir) {
		left = append(left, "loop device "+l.path())
		if clean {
			detachLoop(l)
		}
	}
	if len(left) > 0 {
		t.Errorf("left behind under %s: %s", dir, strings.Join(left, ", "))
	}
}

// loopsUnder lists the loop devices whose backing file is under dir.
func loopsUnder(t *testing.T, dir string) []loopDevice {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []loopDevice
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(b), dir+"/") {
			continue
		}
		out = append(out, loopDevice{name: filepath.Base(filepath.Dir(filepath.Dir(f)))})
	}
	return out
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fsType string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	}
}

const rwo = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

// wantCode fails t unless err has the gRPC code want and its message
// contains every one of words.
func wantCode(t *testing.T, err error, want codes.Code, words ...string) {
	t.Helper()
	s := status.Convert(err)
	if err == nil || s.Code() != want {
		t.Fatalf("got %v, want code %v", err, want)
	}
	for _, w := range words {
		if !strings.Contains(s.Message(), w) {
			t.Errorf("message %q does not mention %q", s.Message(), w)
		}
	}
}

// mountedAt tells whether anything is mounted at path.
func mountedAt(t *testing.T, path string) bool {
	t.Helper()
	mounts, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	_, ok := mountAt(mounts, path)
	return ok
}

func mustNotExist(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s still exists", p)
		}
	}
}

func ids(entries []*csi.ListVolumesResponse_Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.GetVolume().GetVolumeId())
	}
	slices.Sort(out)
	return out
}
