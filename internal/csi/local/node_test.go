package local

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// The node tests attach real loop devices and mount real file systems;
// they need root. Each one undoes what it did through the driver, and
// newDriver's cleanup fails it if a mount or loop device is left.

// staged is a volume staged (and perhaps published) by a test.
type staged struct {
	d       *Driver
	id      string
	staging string
	cap     *csi.VolumeCapability
}

func stage(t *testing.T, d *Driver, dir, id string, c *csi.VolumeCapability) *staged {
	t.Helper()
	s := &staged{d: d, id: id, staging: filepath.Join(dir, "staging", id), cap: c}
	if err := os.MkdirAll(s.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second is a no-op
		if _, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s.staging, VolumeCapability: c}); err != nil {
			t.Fatalf("NodeStageVolume (call %d): %v", i+1, err)
		}
	}
	return s
}

func (s *staged) publish(t *testing.T, target string, readOnly bool) {
	t.Helper()
	for i := 0; i < 2; i++ {
		_, err := s.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: s.id, StagingTargetPath: s.staging, TargetPath: target, VolumeCapability: s.cap, Readonly: readOnly,
		})
		if err != nil {
			t.Fatalf("NodePublishVolume %s (call %d): %v", target, i+1, err)
		}
	}
}

func (s *staged) unpublish(t *testing.T, target string) {
	t.Helper()
	for i := 0; i < 2; i++ {
		if _, err := s.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: s.id, TargetPath: target}); err != nil {
			t.Fatalf("NodeUnpublishVolume %s (call %d): %v", target, i+1, err)
		}
	}
	mustNotExist(t, target)
}

func (s *staged) unstage(t *testing.T) {
	t.Helper()
	for i := 0; i < 2; i++ {
		if _, err := s.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: s.id, StagingTargetPath: s.staging}); err != nil {
			t.Fatalf("NodeUnstageVolume (call %d): %v", i+1, err)
		}
	}
	if mountedAt(t, s.staging) {
		t.Errorf("%s still mounted after NodeUnstageVolume", s.staging)
	}
}

func (s *staged) expand(t *testing.T, path string, size int64) (*csi.NodeExpandVolumeResponse, error) {
	t.Helper()
	return s.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
		VolumeId: s.id, VolumePath: path, StagingTargetPath: s.staging, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
	})
}

func create(t *testing.T, d *Driver, name string, size int64, c *csi.VolumeCapability, params map[string]string) string {
	t.Helper()
	req := createReq(name, size, c)
	req.Parameters = params
	v, err := d.CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return v.GetVolume().GetVolumeId()
}

func deleteVolume(t *testing.T, d *Driver, id string) {
	t.Helper()
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, d.imagePath(id), d.recordPath(id))
	if loops, err := findLoops(d.imagePath(id)); err != nil || len(loops) > 0 {
		t.Errorf("loop devices of %s after DeleteVolume: %v, %v", id, loops, err)
	}
}

// fill writes up to n bytes of ones into path and returns how many it
// wrote and the error that stopped it.
func fill(path string, n int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{1}, int(mib))
	var done int64
	for done < n {
		w, err := f.Write(chunk)
		done += int64(w)
		if err != nil {
			return done, err
		}
	}
	return done, f.Sync()
}

func statsBytes(t *testing.T, d *Driver, id, path string) (total, used int64) {
	t.Helper()
	resp, err := d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range resp.GetUsage() {
		if u.GetUnit() == csi.VolumeUsage_BYTES {
			return u.GetTotal(), u.GetUsed()
		}
	}
	t.Fatalf("no byte usage in %v", resp)
	return 0, 0
}

// TestMountVolume: a 64 MiB ext4 volume holds no 128 MiB, grows to 256 MiB,
// then holds it; read-only publications refuse writes; delete leaves
// nothing.
func TestMountVolume(t *testing.T) {
	requireLoop(t)
	d, dir := newDriver(t)
	c := mountCap(rwo, "")
	id := create(t, d, "pvc-ext4", 64*mib, c, nil)
	s := stage(t, d, dir, id, c)
	target := filepath.Join(dir, "pods", "a", "volume")
	s.publish(t, target, false)

	if total, _ := statsBytes(t, d, id, target); total < 50*mib || total > 64*mib {
		t.Errorf("stats: %d bytes in a 64 MiB volume", total)
	}
	n, err := fill(filepath.Join(target, "big"), 128*mib)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 128 MiB into 64 MiB: %d bytes, %v; want ENOSPC", n, err)
	}
	t.Logf("the 64 MiB volume took %d MiB before ENOSPC", n/mib)
	if err := os.Remove(filepath.Join(target, "big")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "kept"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}

	_, err = d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.FailedPrecondition, "in use")
	_, err = d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: s.staging})
	wantCode(t, err, codes.FailedPrecondition, "published")

	// A read-only publication of the same volume.
	roTarget := filepath.Join(dir, "pods", "b", "volume")
	s.publish(t, roTarget, true)
	if err := os.WriteFile(filepath.Join(roTarget, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing through a read-only publication: %v, want EROFS", err)
	}
	_, err = d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: s.staging, TargetPath: roTarget, VolumeCapability: c})
	wantCode(t, err, codes.AlreadyExists, "readonly")
	s.unpublish(t, roTarget)

	if _, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 256 * mib}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.expand(t, target, 256*mib)
	if canResizeMountedExt4() {
		if err != nil {
			t.Fatalf("NodeExpandVolume online: %v", err)
		}
	} else {
		// This machine withholds CAP_SYS_RESOURCE even from root: ext4
		// grows when next staged.
		wantCode(t, err, codes.FailedPrecondition, "CAP_SYS_RESOURCE")
		s.unpublish(t, target)
		s.unstage(t)
		s = stage(t, d, dir, id, c)
		s.publish(t, target, false)
		if _, err := s.expand(t, target, 256*mib); err != nil {
			t.Fatalf("NodeExpandVolume after staging again: %v", err)
		}
	}
	if total, _ := statsBytes(t, d, id, target); total < 200*mib {
		t.Errorf("after expansion to 256 MiB the file system has %d bytes", total)
	}
	if n, err := fill(filepath.Join(target, "big"), 128*mib); err != nil {
		t.Errorf("writing 128 MiB into 256 MiB: %d bytes, %v", n, err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "kept")); err != nil || string(b) != "data" {
		t.Errorf("a file written before the expansion: %q, %v", b, err)
	}

	s.unpublish(t, target)
	s.unstage(t)
	deleteVolume(t, d, id)
}

// TestXFSGrowsOnline grows a published xfs volume.
func TestXFSGrowsOnline(t *testing.T) {
	requireLoop(t)
	d, dir := newDriver(t)
	if d.tools.mkfsXFS == "" {
		t.Skip("mkfs.xfs missing (hack/install-runtime-deps.sh installs xfsprogs)")
	}
	c := mountCap(rwo, "", "noatime")
	id := create(t, d, "pvc-xfs", 300*mib, c, map[string]string{"fsType": "xfs"})
	s := stage(t, d, dir, id, c)
	target := filepath.Join(dir, "pods", "a", "volume")
	s.publish(t, target, false)
	before, _ := statsBytes(t, d, id, target)
	if _, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 600 * mib}}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.expand(t, target, 600*mib)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := statsBytes(t, d, id, target)
	if resp.GetCapacityBytes() != 600*mib || after < before+250*mib {
		t.Errorf("xfs grew from %d to %d bytes (response %d)", before, after, resp.GetCapacityBytes())
	}
	s.unpublish(t, target)
	s.unstage(t)
	deleteVolume(t, d, id)
}

// TestBlockVolume writes through the published device and reads it back
// from the image; a read-only publication refuses writes.
func TestBlockVolume(t *testing.T) {
	requireLoop(t)
	d, dir := newDriver(t)
	c := blockCap(rwo)
	id := create(t, d, "pvc-block", 16*mib, c, nil)
	s := stage(t, d, dir, id, c)
	target := filepath.Join(dir, "pods", "a", "dev")
	s.publish(t, target, false)

	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("target: mode %o, %v; want a block device", st.Mode, err)
	}
	if lo, ok, _ := writableLoop(d.imagePath(id)); ok {
		dio, _ := os.ReadFile(filepath.Join("/sys/block", lo.name, "loop", "dio"))
		t.Logf("/dev/%s, direct I/O: %s", lo.name, bytes.TrimSpace(dio))
	}
	pattern := bytes.Repeat([]byte("moorage!"), 512) // 4 KiB
	dev, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt(pattern, 5*mib); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(pattern))
	if _, err := dev.ReadAt(back, 5*mib); err != nil || !bytes.Equal(back, pattern) {
		t.Errorf("read back through the device: %v", err)
	}
	dev.Close()
	img, err := os.ReadFile(d.imagePath(id))
	if err != nil || !bytes.Equal(img[5*mib:5*mib+int64(len(pattern))], pattern) {
		t.Errorf("the image does not hold what was written to the device (%v)", err)
	}
	if total, _ := statsBytes(t, d, id, target); total != 16*mib {
		t.Errorf("stats: %d bytes, want %d", total, 16*mib)
	}

	roTarget := filepath.Join(dir, "pods", "b", "dev")
	s.publish(t, roTarget, true)
	if f, err := os.OpenFile(roTarget, os.O_WRONLY, 0); err == nil {
		_, err = f.WriteAt(pattern, 0)
		f.Close()
		if err == nil {
			t.Error("wrote through a read-only block publication")
		}
	}
	ro, err := os.ReadFile(roTarget)
	if err != nil || !bytes.Equal(ro[5*mib:5*mib+int64(len(pattern))], pattern) {
		t.Errorf("reading through the read-only publication: %v", err)
	}
	s.unpublish(t, roTarget)

	// Growing a block volume needs no node step; the device grows at once.
	resp, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 32 * mib}})
	if err != nil || resp.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume: %v, %v", resp, err)
	}
	if total, _ := statsBytes(t, d, id, target); total != 32*mib {
		t.Errorf("after expansion: %d bytes, want %d", total, 32*mib)
	}

	s.unpublish(t, target)
	s.unstage(t)
	deleteVolume(t, d, id)
}

// TestRestartFindsStagedVolume: a new driver on the same data directory
// finds the volume, its loop device and its mounts, and tears them down.
func TestRestartFindsStagedVolume(t *testing.T) {
	requireLoop(t)
	d, dir := newDriver(t)
	c := mountCap(rwo, "")
	id := create(t, d, "pvc-restart", 32*mib, c, nil)
	s := stage(t, d, dir, id, c)
	target := filepath.Join(dir, "pods", "a", "volume")
	s.publish(t, target, false)
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}

	s.d = openDriver(t, d.dataDir) // the restart
	d = s.d
	s.publish(t, target, false) // already there: OK
	if total, _ := statsBytes(t, d, id, target); total == 0 {
		t.Error("no stats after a restart")
	}
	s.unpublish(t, target)
	s.unstage(t)
	s = stage(t, d, dir, id, c)
	s.publish(t, target, false)
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "before" {
		t.Errorf("data after a restart and a new stage: %q, %v", b, err)
	}
	s.unpublish(t, target)
	s.unstage(t)
	deleteVolume(t, d, id)
}

// TestNodeRefusals: the codes the spec asks for.
func TestNodeRefusals(t *testing.T) {
	requireLoop(t)
	d, dir := newDriver(t)
	c := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, "")
	id := create(t, d, "pvc-rwop", 8*mib, c, nil)
	staging := filepath.Join(dir, "staging")
	target := filepath.Join(dir, "target")

	_, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "v-000000000000000000000000", StagingTargetPath: staging, VolumeCapability: c})
	wantCode(t, err, codes.NotFound)
	_, err = d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap(rwo)})
	wantCode(t, err, codes.FailedPrecondition, "block")
	_, err = d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: c})
	wantCode(t, err, codes.FailedPrecondition, "not staged")
	_, err = d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: c})
	wantCode(t, err, codes.FailedPrecondition, "staging_target_path")
	_, err = d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	wantCode(t, err, codes.NotFound)

	s := stage(t, d, dir, id, c)
	s.publish(t, target, false)
	second := filepath.Join(dir, "second")
	_, err = d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: s.staging, TargetPath: second, VolumeCapability: c})
	wantCode(t, err, codes.FailedPrecondition, "SINGLE_NODE_SINGLE_WRITER")
	_, err = d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: dir})
	wantCode(t, err, codes.NotFound, "not mounted")
	_, err = s.expand(t, target, 64*mib)
	wantCode(t, err, codes.OutOfRange)
	s.unpublish(t, target)
	s.unstage(t)
	deleteVolume(t, d, id)
}
