package local

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// The controller tests make image files only: they need neither root nor
// loop devices.

var ctx = context.Background()

func createReq(name string, size int64, caps ...*csi.VolumeCapability) *csi.CreateVolumeRequest {
	if len(caps) == 0 {
		caps = []*csi.VolumeCapability{mountCap(rwo, "")}
	}
	return &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size}, VolumeCapabilities: caps}
}

func TestCreateVolumeIsIdempotent(t *testing.T) {
	d, _ := newDriver(t)
	first, err := d.CreateVolume(ctx, createReq("pvc-1", 64*mib))
	if err != nil {
		t.Fatal(err)
	}
	v := first.GetVolume()
	if v.GetCapacityBytes() != 64*mib {
		t.Errorf("capacity %d, want %d", v.GetCapacityBytes(), 64*mib)
	}
	if seg := v.GetAccessibleTopology()[0].GetSegments(); seg[TopologyKey] != testNode || len(seg) != 1 {
		t.Errorf("topology %v, want only %s=%s", seg, TopologyKey, testNode)
	}
	img := d.imagePath(v.GetVolumeId())
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 64*mib || st.Blocks != 0 {
		t.Errorf("image: %d bytes in %d blocks, want a sparse file of %d bytes", st.Size, st.Blocks, 64*mib)
	}

	again, err := d.CreateVolume(ctx, createReq("pvc-1", 64*mib))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetVolume().GetVolumeId() != v.GetVolumeId() {
		t.Errorf("same name gave a second volume %s (first %s)", again.GetVolume().GetVolumeId(), v.GetVolumeId())
	}
	// A smaller requirement is met by the volume there.
	if _, err := d.CreateVolume(ctx, createReq("pvc-1", 32*mib)); err != nil {
		t.Errorf("smaller required_bytes: %v", err)
	}
	_, err = d.CreateVolume(ctx, createReq("pvc-1", 128*mib))
	wantCode(t, err, codes.AlreadyExists, "pvc-1")
	_, err = d.CreateVolume(ctx, createReq("pvc-1", 64*mib, blockCap(rwo)))
	wantCode(t, err, codes.AlreadyExists, "block")
	req := createReq("pvc-1", 64*mib)
	req.Parameters = map[string]string{"fsType": "xfs"}
	if d.tools.mkfsXFS != "" {
		_, err = d.CreateVolume(ctx, req)
		wantCode(t, err, codes.AlreadyExists, "xfs")
	}
}

func TestCreateVolumeRefusesBadRequests(t *testing.T) {
	d, _ := newDriver(t)
	multi := mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "")
	elsewhere := &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{TopologyKey: "other-node"}}}}
	for _, tc := range []struct {
		name  string
		edit  func(*csi.CreateVolumeRequest)
		code  codes.Code
		words []string
	}{
		{"no name", func(r *csi.CreateVolumeRequest) { r.Name = "" }, codes.InvalidArgument, []string{"name"}},
		{"no capabilities", func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = nil }, codes.InvalidArgument, []string{"volume_capabilities"}},
		{"multi-node mode", func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = []*csi.VolumeCapability{multi} }, codes.InvalidArgument,
			[]string{"volume_capabilities[0]", "MULTI_NODE_MULTI_WRITER"}},
		{"no access type", func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities[0].AccessType = nil }, codes.InvalidArgument, []string{"access_type"}},
		{"no access mode", func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities[0].AccessMode = nil }, codes.InvalidArgument, []string{"access_mode"}},
		{"block and mount", func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = append(r.VolumeCapabilities, blockCap(rwo)) }, codes.InvalidArgument,
			[]string{"volume_capabilities[1]", "block or mount"}},
		{"unknown parameter", func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"fsType": "ext4", "speed": "fast"} }, codes.InvalidArgument,
			[]string{`"speed"`, "fsType"}},
		{"unknown fsType", func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"fsType": "btrfs"} }, codes.InvalidArgument,
			[]string{"fsType", "btrfs"}},
		{"fsType against capability", func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"fsType": "ext4"}
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(rwo, "xfs")}
		}, codes.InvalidArgument, []string{"fsType"}},
		{"fsType for block", func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"fsType": "ext4"}
			r.VolumeCapabilities = []*csi.VolumeCapability{blockCap(rwo)}
		}, codes.InvalidArgument, []string{"fsType", "block"}},
		{"bad mount flag", func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(rwo, "", "bind")}
		}, codes.InvalidArgument,
			[]string{"mount_flags", "bind"}},
		{"limit below required", func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 2 * mib, LimitBytes: mib}
		},
			codes.InvalidArgument, []string{"limit_bytes"}},
		{"limit below the minimum", func(r *csi.CreateVolumeRequest) { r.CapacityRange = &csi.CapacityRange{LimitBytes: 4096} },
			codes.OutOfRange, []string{"limit_bytes"}},
		{"snapshot source", func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "s"}}}
		}, codes.InvalidArgument, []string{"volume_content_source"}},
		{"other node", func(r *csi.CreateVolumeRequest) { r.AccessibilityRequirements = elsewhere }, codes.ResourceExhausted, []string{testNode}},
		{"too big", func(r *csi.CreateVolumeRequest) { r.CapacityRange.RequiredBytes = 1 << 62 }, codes.ResourceExhausted, []string{"free"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := createReq("pvc-bad", 64*mib)
			tc.edit(req)
			_, err := d.CreateVolume(ctx, req)
			wantCode(t, err, tc.code, tc.words...)
		})
	}
	if entries, _ := os.ReadDir(d.volDir); len(entries) != 0 {
		t.Errorf("refused creates left %d files in %s", len(entries), d.volDir)
	}
}

func TestCreateVolumeHonoursTopology(t *testing.T) {
	d, _ := newDriver(t)
	here := &csi.Topology{Segments: map[string]string{"Topology.Local.CSI.moorage.io/Node": testNode}}
	zone := &csi.Topology{Segments: map[string]string{"zone": "a"}}
	req := createReq("pvc-topo", 8*mib)
	req.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: []*csi.Topology{zone, here}, Preferred: []*csi.Topology{here}}
	if _, err := d.CreateVolume(ctx, req); err != nil {
		t.Fatalf("a requisite naming this node (keys are case-insensitive): %v", err)
	}
	req = createReq("pvc-zone", 8*mib)
	req.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: []*csi.Topology{zone}}
	_, err := d.CreateVolume(ctx, req)
	wantCode(t, err, codes.ResourceExhausted)

	capHere, err := d.GetCapacity(ctx, &csi.GetCapacityRequest{AccessibleTopology: here})
	if err != nil || capHere.GetAvailableCapacity() <= 0 {
		t.Errorf("GetCapacity here: %v, %v", capHere, err)
	}
	capZone, err := d.GetCapacity(ctx, &csi.GetCapacityRequest{AccessibleTopology: zone})
	if err != nil || capZone.GetAvailableCapacity() != 0 {
		t.Errorf("GetCapacity elsewhere: %v, %v; want 0", capZone, err)
	}
	_, err = d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"size": "big"}})
	wantCode(t, err, codes.InvalidArgument, `"size"`)
}

func TestSizeFor(t *testing.T) {
	for _, tc := range []struct {
		req, lim, min, want int64
		code                codes.Code
	}{
		{0, 0, mib, defaultCapacity, codes.OK},
		{1, 0, mib, mib, codes.OK},
		{64 * mib, 0, mib, 64 * mib, codes.OK},
		{64*mib + 1, 0, mib, 65 * mib, codes.OK},
		{64*mib + 1, 64*mib + 6000, mib, 64*mib + 4096, codes.OK}, // whole 4 KiB within the limit
		{0, 10 * mib, mib, 10 * mib, codes.OK},
		{10 * mib, 0, xfsMinCapacity, xfsMinCapacity, codes.OK},
		{10 * mib, 20 * mib, xfsMinCapacity, 0, codes.OutOfRange},
		{100, 100, mib, 0, codes.OutOfRange},
		{-1, 0, mib, 0, codes.InvalidArgument},
		{2 * mib, mib, mib, 0, codes.InvalidArgument},
	} {
		got, err := sizeFor(&csi.CapacityRange{RequiredBytes: tc.req, LimitBytes: tc.lim}, tc.min)
		if tc.code != codes.OK {
			wantCode(t, err, tc.code)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("sizeFor(%d, %d, min %d) = %d, %v; want %d", tc.req, tc.lim, tc.min, got, err, tc.want)
		}
	}
}

func TestParseMountFlags(t *testing.T) {
	flags, data, err := parseMountFlags([]string{"ro,noatime", "discard", "nosuid", "errors=remount-ro", "rw"})
	if err != nil {
		t.Fatal(err)
	}
	if want := uintptr(unix.MS_RDONLY | unix.MS_NOATIME | unix.MS_NOSUID); flags != want {
		t.Errorf("flags %#x, want %#x", flags, want)
	}
	if data != "discard,errors=remount-ro" {
		t.Errorf("data %q", data)
	}
	if _, _, err := parseMountFlags([]string{"remount"}); err == nil {
		t.Error("remount accepted")
	}
	if got := bindFlags([]string{"noexec", "discard"}, true); got != unix.MS_NOEXEC|unix.MS_RDONLY {
		t.Errorf("bindFlags %#x", got)
	}
}

func TestControllerExpandVolume(t *testing.T) {
	d, _ := newDriver(t)
	v, err := d.CreateVolume(ctx, createReq("pvc-grow", 64*mib))
	if err != nil {
		t.Fatal(err)
	}
	id := v.GetVolume().GetVolumeId()
	resp, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 256 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCapacityBytes() != 256*mib || !resp.GetNodeExpansionRequired() {
		t.Errorf("got %v, want 256 MiB and node expansion", resp)
	}
	if st, err := os.Stat(d.imagePath(id)); err != nil || st.Size() != 256*mib {
		t.Errorf("image: %v, %v", st, err)
	}
	// Smaller is a no-op, not a shrink.
	resp, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 100 * mib}})
	if err != nil || resp.GetCapacityBytes() != 256*mib {
		t.Errorf("smaller: %v, %v", resp, err)
	}
	_, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "v-000000000000000000000000", CapacityRange: &csi.CapacityRange{RequiredBytes: mib}})
	wantCode(t, err, codes.NotFound)
	_, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.InvalidArgument, "capacity_range")

	// The record says the new size after a restart.
	if got := openDriver(t, d.dataDir).volumes[id].Capacity; got != 256*mib {
		t.Errorf("after a restart: %d bytes", got)
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	d, _ := newDriver(t)
	v, err := d.CreateVolume(ctx, createReq("pvc-v", 8*mib))
	if err != nil {
		t.Fatal(err)
	}
	id := v.GetVolume().GetVolumeId()
	validate := func(caps ...*csi.VolumeCapability) (*csi.ValidateVolumeCapabilitiesResponse, error) {
		return d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: caps})
	}
	resp, err := validate(mountCap(rwo, ""), mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, "ext4"))
	if err != nil || resp.GetConfirmed() == nil {
		t.Errorf("mount capabilities: %v, %v", resp, err)
	}
	for _, c := range []*csi.VolumeCapability{blockCap(rwo), mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, "")} {
		resp, err = validate(c)
		if err != nil || resp.GetConfirmed() != nil || resp.GetMessage() == "" {
			t.Errorf("%v: %v, %v; want unconfirmed with a message", c, resp, err)
		}
	}
	_, err = validate(&csi.VolumeCapability{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "nope", VolumeCapabilities: []*csi.VolumeCapability{mountCap(rwo, "")}})
	wantCode(t, err, codes.NotFound)
}

func TestListVolumesPages(t *testing.T) {
	d, _ := newDriver(t)
	var all []string
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		v, err := d.CreateVolume(ctx, createReq(name, mib))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, v.GetVolume().GetVolumeId())
	}
	slices.Sort(all)
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		resp, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(resp.GetEntries())...)
		if pages == 0 { // a volume deleted between pages loses nothing else
			if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: got[1]}); err != nil {
				t.Fatal(err)
			}
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if !slices.Equal(got, all) {
		t.Errorf("pages gave %v, want %v", got, all)
	}
	_, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "bogus"})
	wantCode(t, err, codes.Aborted)
}

func TestRestartFinishesInterruptedWork(t *testing.T) {
	d, _ := newDriver(t)
	v, err := d.CreateVolume(ctx, createReq("kept", 8*mib))
	if err != nil {
		t.Fatal(err)
	}
	kept := v.GetVolume().GetVolumeId()
	// A create that crashed before its record, a delete that crashed
	// before removing its record, an atomic write cut short.
	halfMade := d.imagePath(volumeID("half-made"))
	if err := makeImage(halfMade, mib); err != nil {
		t.Fatal(err)
	}
	halfGone := &volume{ID: volumeID("half-gone"), Name: "half-gone", Capacity: mib, FSType: fsExt4}
	if err := d.saveVolume(halfGone); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(d.volDir, "."+kept+".json.tmp-123")
	if err := os.WriteFile(tmp, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}

	d2 := openDriver(t, d.dataDir)
	resp, err := d2.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(resp.GetEntries()); !slices.Equal(got, []string{kept}) {
		t.Errorf("after a restart: volumes %v, want [%s]", got, kept)
	}
	mustNotExist(t, halfMade, d.recordPath(halfGone.ID), tmp)
	again, err := d2.CreateVolume(ctx, createReq("kept", 8*mib))
	if err != nil || again.GetVolume().GetVolumeId() != kept {
		t.Errorf("CreateVolume after a restart: %v, %v", again, err)
	}
}

func TestSocketPath(t *testing.T) {
	if p, err := socketPath("unix:///run/csi/local.sock"); err != nil || p != "/run/csi/local.sock" {
		t.Errorf("got %q, %v", p, err)
	}
	for _, bad := range []string{"/run/x.sock", "unix://run/x.sock", "tcp://127.0.0.1:1", "unix:relative"} {
		if _, err := socketPath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
