package csi

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
)

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///run/csi/x.sock": "unix:///run/csi/x.sock",
		"/run/csi/x.sock":        "unix:///run/csi/x.sock",
		"/run/csi/../csi/x.sock": "unix:///run/csi/x.sock",
		"unix://run/x.sock":      "", // relative
		"run/x.sock":             "",
		"tcp://127.0.0.1:10000":  "",
		"":                       "",
	} {
		got, err := parseEndpoint(in)
		if want == "" {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("parseEndpoint(%q) = %q, %v; want ErrInvalidRequest", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("parseEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestDialBarePathAndIdentity(t *testing.T) {
	dir := t.TempDir()
	d := startDriver(t, dir, "d")
	ctx := context.Background()
	gomock.InOrder(
		d.identity.EXPECT().GetPluginInfo(gomock.Any(), eq(&csipb.GetPluginInfoRequest{})).
			Return(&csipb.GetPluginInfoResponse{Name: "local.csi.moorage.io", VendorVersion: "v1"}, nil),
		d.identity.EXPECT().GetPluginCapabilities(gomock.Any(), gomock.Any()).
			Return(&csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{
				{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE}}},
				{Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS}}},
				{Type: &csipb.PluginCapability_VolumeExpansion_{VolumeExpansion: &csipb.PluginCapability_VolumeExpansion{Type: csipb.PluginCapability_VolumeExpansion_ONLINE}}},
			}}, nil).Times(1), // cached: the second PluginCapabilities sends nothing
		d.identity.EXPECT().Probe(gomock.Any(), gomock.Any()).Return(&csipb.ProbeResponse{}, nil),
		d.identity.EXPECT().Probe(gomock.Any(), gomock.Any()).Return(&csipb.ProbeResponse{Ready: wrapperspb.Bool(false)}, nil),
	)

	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := Dial(dialCtx, filepath.Join(dir, "d.sock")) // bare path
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	info, err := c.PluginInfo(ctx)
	if err != nil || info.Name != "local.csi.moorage.io" || info.VendorVersion != "v1" {
		t.Fatalf("PluginInfo = %+v, %v", info, err)
	}
	want := PluginCapabilitySet{ControllerService: true, AccessibilityConstraints: true, OnlineExpansion: true}
	for range 2 {
		got, err := c.PluginCapabilities(ctx)
		if err != nil || got != want {
			t.Fatalf("PluginCapabilities = %+v, %v; want %+v", got, err, want)
		}
	}
	if ready, err := c.Probe(ctx); err != nil || !ready {
		t.Errorf("Probe with ready unset = %v, %v; want true", ready, err)
	}
	if ready, err := c.Probe(ctx); err != nil || ready {
		t.Errorf("Probe with ready=false = %v, %v; want false", ready, err)
	}
}

func TestDialMissingSocketIsInProgress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, "unix://"+filepath.Join(t.TempDir(), "absent.sock"))
	if err == nil {
		t.Fatal("Dial to a missing socket succeeded")
	}
	if got := Classify(err); got != InProgress {
		t.Errorf("Classify(%v) = %s, want InProgress (retry)", err, got)
	}
}

func TestPerCallTimeout(t *testing.T) {
	d := startDriver(t, t.TempDir(), "d")
	d.controller.EXPECT().DeleteVolume(gomock.Any(), gomock.Any()).
		DoAndReturn(func(ctx context.Context, _ *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
			<-ctx.Done() // the client's deadline reaches the server
			return nil, ctx.Err()
		})
	c := d.dial(t, WithTimeout(100*time.Millisecond))
	start := time.Now()
	err := c.DeleteVolume(context.Background(), "vol-1", nil)
	if got := Classify(err); got != InProgress {
		t.Fatalf("DeleteVolume after timeout: Classify(%v) = %s, want InProgress", err, got)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("DeleteVolume took %v, timeout was 100ms", el)
	}
}

func TestAccessModeMapping(t *testing.T) {
	const (
		rwo  = corev1.ReadWriteOnce
		rox  = corev1.ReadOnlyMany
		rwx  = corev1.ReadWriteMany
		rwop = corev1.ReadWriteOncePod
	)
	for _, tc := range []struct {
		modes      []corev1.PersistentVolumeAccessMode
		plain, mw  csipb.VolumeCapability_AccessMode_Mode // without / with SINGLE_NODE_MULTI_WRITER
		impossible bool
	}{
		{modes: []corev1.PersistentVolumeAccessMode{rwo}, plain: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, mw: csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER},
		{modes: []corev1.PersistentVolumeAccessMode{rox}, plain: csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, mw: csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
		{modes: []corev1.PersistentVolumeAccessMode{rwx}, plain: csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, mw: csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		{modes: []corev1.PersistentVolumeAccessMode{rwop}, plain: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, mw: csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER},
		{modes: []corev1.PersistentVolumeAccessMode{rwo, rwx, rox}, plain: csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, mw: csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		{modes: []corev1.PersistentVolumeAccessMode{rwo, rox}, impossible: true},
		{modes: []corev1.PersistentVolumeAccessMode{rwop, rwo}, impossible: true},
		{modes: nil, impossible: true},
	} {
		for _, snmw := range []bool{false, true} {
			got, err := accessMode(tc.modes, snmw)
			want := tc.plain
			if snmw {
				want = tc.mw
			}
			if tc.impossible {
				if !errors.Is(err, ErrInvalidRequest) {
					t.Errorf("accessMode(%v, %v) = %s, %v; want ErrInvalidRequest", tc.modes, snmw, got, err)
				}
				continue
			}
			if err != nil || got != want {
				t.Errorf("accessMode(%v, %v) = %s, %v; want %s", tc.modes, snmw, got, err, want)
			}
		}
	}
}

func TestControllerCalls(t *testing.T) {
	d := startDriver(t, t.TempDir(), "d")
	ctx := context.Background()
	rwoRox := VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadOnlyMany}, FSType: "ext4"}
	rwo := VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, FSType: "ext4"}
	node1 := Topology{"topology.moorage.io/node": "n1"}

	gomock.InOrder(
		d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).Return(controllerCaps(
			csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
			csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
			csipb.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		), nil).Times(1), // cached for every later call
		d.controller.EXPECT().CreateVolume(gomock.Any(), eq(&csipb.CreateVolumeRequest{
			Name:          "pvc-1",
			CapacityRange: &csipb.CapacityRange{RequiredBytes: 1 << 30},
			// one capability per access mode, as external-provisioner
			VolumeCapabilities: []*csipb.VolumeCapability{
				mountCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, "ext4"),
				mountCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, "ext4"),
			},
			Parameters:                map[string]string{"k": "v"},
			AccessibilityRequirements: &csipb.TopologyRequirement{Requisite: []*csipb.Topology{{Segments: node1}}},
		})).Return(&csipb.CreateVolumeResponse{Volume: &csipb.Volume{
			VolumeId: "vol-1", CapacityBytes: 1 << 30,
			AccessibleTopology: []*csipb.Topology{{Segments: node1}},
		}}, nil),
		d.controller.EXPECT().ControllerPublishVolume(gomock.Any(), eq(&csipb.ControllerPublishVolumeRequest{
			VolumeId: "vol-1", NodeId: "n1",
			VolumeCapability: mountCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, "ext4"),
		})).Return(&csipb.ControllerPublishVolumeResponse{PublishContext: map[string]string{"dev": "/dev/x"}}, nil),
		d.controller.EXPECT().ControllerUnpublishVolume(gomock.Any(), eq(&csipb.ControllerUnpublishVolumeRequest{VolumeId: "vol-1", NodeId: "n1"})).
			Return(&csipb.ControllerUnpublishVolumeResponse{}, nil),
		d.controller.EXPECT().GetCapacity(gomock.Any(), eq(&csipb.GetCapacityRequest{AccessibleTopology: &csipb.Topology{Segments: node1}})).
			Return(&csipb.GetCapacityResponse{AvailableCapacity: 5 << 30, MaximumVolumeSize: wrapperspb.Int64(2 << 30)}, nil),
		d.controller.EXPECT().ControllerExpandVolume(gomock.Any(), eq(&csipb.ControllerExpandVolumeRequest{
			VolumeId: "vol-1", CapacityRange: &csipb.CapacityRange{RequiredBytes: 2 << 30},
		})).Return(&csipb.ControllerExpandVolumeResponse{CapacityBytes: 2 << 30, NodeExpansionRequired: true}, nil),
		d.controller.EXPECT().ValidateVolumeCapabilities(gomock.Any(), gomock.Any()).
			Return(&csipb.ValidateVolumeCapabilitiesResponse{Message: "no"}, nil),
		d.controller.EXPECT().DeleteVolume(gomock.Any(), eq(&csipb.DeleteVolumeRequest{VolumeId: "vol-1"})).
			Return(&csipb.DeleteVolumeResponse{}, nil),
	)
	c := d.dial(t)

	caps, err := c.ControllerCapabilities(ctx)
	if err != nil || !caps.CreateDeleteVolume || !caps.PublishUnpublishVolume || !caps.SingleNodeMultiWriter || caps.GetCapacity {
		t.Fatalf("ControllerCapabilities = %+v, %v", caps, err)
	}
	vol, err := c.CreateVolume(ctx, CreateVolumeRequest{
		Name: "pvc-1", RequiredBytes: 1 << 30, Capability: rwoRox,
		Parameters: map[string]string{"k": "v"}, Requisite: []Topology{node1},
	})
	if err != nil || vol.ID != "vol-1" || vol.CapacityBytes != 1<<30 || !reflect.DeepEqual(vol.AccessibleTopology, []Topology{node1}) {
		t.Fatalf("CreateVolume = %+v, %v", vol, err)
	}
	pc, err := c.ControllerPublish(ctx, ControllerPublishRequest{VolumeID: "vol-1", NodeID: "n1", Capability: rwo})
	if err != nil || pc["dev"] != "/dev/x" {
		t.Fatalf("ControllerPublish = %v, %v", pc, err)
	}
	if err := c.ControllerUnpublish(ctx, "vol-1", "n1", nil); err != nil {
		t.Fatalf("ControllerUnpublish: %v", err)
	}
	capacity, err := c.GetCapacity(ctx, CapacityRequest{Topology: node1})
	if err != nil || capacity.AvailableBytes != 5<<30 || capacity.MaximumVolumeSize == nil || *capacity.MaximumVolumeSize != 2<<30 || capacity.MinimumVolumeSize != nil {
		t.Fatalf("GetCapacity = %+v, %v", capacity, err)
	}
	exp, err := c.ControllerExpand(ctx, ExpandRequest{VolumeID: "vol-1", RequiredBytes: 2 << 30})
	if err != nil || exp != (ExpandResult{CapacityBytes: 2 << 30, NodeExpansionRequired: true}) {
		t.Fatalf("ControllerExpand = %+v, %v", exp, err)
	}
	val, err := c.ValidateVolumeCapabilities(ctx, ValidateRequest{VolumeID: "vol-1", Capability: rwo})
	if err != nil || val.Confirmed || val.Message != "no" {
		t.Fatalf("ValidateVolumeCapabilities = %+v, %v", val, err)
	}
	if err := c.DeleteVolume(ctx, "vol-1", nil); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}

	// Refused before sending: nothing reaches the driver, Final.
	_, err = c.CreateVolume(ctx, CreateVolumeRequest{Name: "pvc-2", Capability: VolumeCapability{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod, corev1.ReadWriteOnce}}})
	if Classify(err) != Final || !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("CreateVolume with RWOP+RWO: %v (%s), want Final ErrInvalidRequest", err, Classify(err))
	}
}

func TestNodeInfoStatsExpand(t *testing.T) {
	d := startDriver(t, t.TempDir(), "d")
	ctx := context.Background()
	gomock.InOrder(
		d.node.EXPECT().NodeGetInfo(gomock.Any(), gomock.Any()).Return(&csipb.NodeGetInfoResponse{
			NodeId: "n1", MaxVolumesPerNode: 16,
			AccessibleTopology: &csipb.Topology{Segments: map[string]string{"topology.moorage.io/node": "n1"}},
		}, nil),
		d.node.EXPECT().NodeGetInfo(gomock.Any(), gomock.Any()).Return(&csipb.NodeGetInfoResponse{}, nil),
		d.node.EXPECT().NodeGetVolumeStats(gomock.Any(), eq(&csipb.NodeGetVolumeStatsRequest{VolumeId: "vol-1", VolumePath: "/t"})).
			Return(&csipb.NodeGetVolumeStatsResponse{
				Usage: []*csipb.VolumeUsage{
					{Unit: csipb.VolumeUsage_BYTES, Total: 100, Used: 40, Available: 60},
					{Unit: csipb.VolumeUsage_INODES, Total: 10, Used: 1, Available: 9},
				},
				VolumeCondition: &csipb.VolumeCondition{Abnormal: true, Message: "degraded"},
			}, nil),
		d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(nodeCaps(csipb.NodeServiceCapability_RPC_EXPAND_VOLUME), nil),
		d.node.EXPECT().NodeExpandVolume(gomock.Any(), eq(&csipb.NodeExpandVolumeRequest{
			VolumeId: "vol-1", VolumePath: "/t", StagingTargetPath: "/s",
			CapacityRange:    &csipb.CapacityRange{RequiredBytes: 200},
			VolumeCapability: mountCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs"),
		})).Return(&csipb.NodeExpandVolumeResponse{CapacityBytes: 200}, nil),
	)
	c := d.dial(t)

	info, err := c.NodeGetInfo(ctx)
	if err != nil || info.NodeID != "n1" || info.MaxVolumes != 16 || info.Topology["topology.moorage.io/node"] != "n1" {
		t.Fatalf("NodeGetInfo = %+v, %v", info, err)
	}
	if _, err := c.NodeGetInfo(ctx); !errors.Is(err, ErrInvalidResponse) || Classify(err) != InProgress {
		t.Errorf("NodeGetInfo with empty node ID: %v, want ErrInvalidResponse (InProgress)", err)
	}
	stats, err := c.NodeGetVolumeStats(ctx, "vol-1", "/t", "")
	want := VolumeStats{Bytes: Usage{Available: 60, Total: 100, Used: 40}, Inodes: Usage{Available: 9, Total: 10, Used: 1}, Abnormal: true, Message: "degraded"}
	if err != nil || stats != want {
		t.Fatalf("NodeGetVolumeStats = %+v, %v; want %+v", stats, err, want)
	}
	size, err := c.NodeExpand(ctx, ExpandRequest{
		VolumeID: "vol-1", VolumePath: "/t", StagingPath: "/s", RequiredBytes: 200,
		Capability: &VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, FSType: "xfs"},
	})
	if err != nil || size != 200 {
		t.Fatalf("NodeExpand = %d, %v", size, err)
	}
	if !strings.Contains(c.Endpoint(), "d.sock") {
		t.Errorf("Endpoint() = %q", c.Endpoint())
	}
}
