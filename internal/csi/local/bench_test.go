package local

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// BenchmarkVolumeLifecycle is what one volume of the built-in driver costs
// on this node, call by call: CreateVolume (the sparse image), NodeStage
// (loop device; for a file system, mkfs on first use and the mount),
// NodeUnstage, DeleteVolume. Run as root with -benchtime=Nx; the mean of
// each step is reported in ms.
func BenchmarkVolumeLifecycle(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: attaches loop devices and mounts file systems")
	}
	const gib = 1 << 30
	for _, tc := range []struct {
		name string
		size int64
		cap  *csi.VolumeCapability
	}{
		{"block-1GiB", gib, blockCap(rwo)},
		{"ext4-1GiB", gib, mountCap(rwo, "ext4")},
		{"ext4-10GiB", 10 * gib, mountCap(rwo, "ext4")},
		{"xfs-1GiB", gib, mountCap(rwo, "xfs")},
		{"xfs-10GiB", 10 * gib, mountCap(rwo, "xfs")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			d, err := New(Options{NodeID: testNode, DataDir: filepath.Join(dir, "data"), Version: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			var create, stage, unstage, del time.Duration
			for i := 0; b.Loop(); i++ {
				staging := filepath.Join(dir, fmt.Sprintf("staging-%d", i))
				if err := os.Mkdir(staging, 0o750); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				v, err := d.CreateVolume(ctx, createReq(fmt.Sprintf("pvc-%d", i), tc.size, tc.cap))
				if err != nil {
					b.Fatal(err)
				}
				id := v.GetVolume().GetVolumeId()
				t1 := time.Now()
				if _, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: tc.cap}); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if _, err := d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				create, stage, unstage, del = create+t1.Sub(t0), stage+t2.Sub(t1), unstage+t3.Sub(t2), del+t4.Sub(t3)
			}
			ms := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
			b.ReportMetric(ms(create), "create-ms")
			b.ReportMetric(ms(stage), "stage-ms")
			b.ReportMetric(ms(unstage), "unstage-ms")
			b.ReportMetric(ms(del), "delete-ms")
		})
	}
}
