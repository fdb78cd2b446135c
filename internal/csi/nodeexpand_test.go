package csi

import (
	"context"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
)

// Expand sends NodeExpandVolume only for a published target, with the
// recorded staging path, and only to a driver with node EXPAND_VOLUME.
func TestNodeVolumesExpand(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	caps := nodeCaps(csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME, csipb.NodeServiceCapability_RPC_EXPAND_VOLUME)
	d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(caps, nil).Times(1)
	d.node.EXPECT().NodeStageVolume(gomock.Any(), gomock.Any()).Return(okResp.stage, nil)
	d.node.EXPECT().NodePublishVolume(gomock.Any(), gomock.Any()).Return(okResp.publish, nil)
	d.node.EXPECT().NodeExpandVolume(gomock.Any(), eq(&csipb.NodeExpandVolumeRequest{
		VolumeId: volID, VolumePath: f.tA, StagingTargetPath: f.staging,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: 2 << 30}, VolumeCapability: rwoCap,
	})).Return(&csipb.NodeExpandVolumeResponse{CapacityBytes: 2 << 30}, nil)
	nv := f.open(t, d.dial(t))
	ctx := context.Background()
	req := ExpandRequest{VolumeID: volID, RequiredBytes: 2 << 30, Capability: &rwo, VolumePath: f.tA, StagingPath: "/ignored"}

	_, err := nv.Expand(ctx, req)
	wantErr(t, "Expand before anything is staged", err, ErrInvalidRequest, Final)
	mustOK(t, "Stage", nv.Stage(ctx, f.stageReq))
	_, err = nv.Expand(ctx, req)
	wantErr(t, "Expand of a target not published", err, ErrInvalidRequest, Final)
	mustOK(t, "Publish", nv.Publish(ctx, f.pubA))
	got, err := nv.Expand(ctx, req)
	if err != nil || got != 2<<30 {
		t.Fatalf("Expand = %d, %v", got, err)
	}
}

// A driver without node EXPAND_VOLUME gets no NodeExpandVolume.
func TestNodeVolumesExpandUnsupported(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil).Times(1)
	d.node.EXPECT().NodeStageVolume(gomock.Any(), gomock.Any()).Return(okResp.stage, nil)
	d.node.EXPECT().NodePublishVolume(gomock.Any(), gomock.Any()).Return(okResp.publish, nil)
	nv := f.open(t, d.dial(t))
	ctx := context.Background()
	mustOK(t, "Stage", nv.Stage(ctx, f.stageReq))
	mustOK(t, "Publish", nv.Publish(ctx, f.pubA))
	_, err := nv.Expand(ctx, ExpandRequest{VolumeID: volID, RequiredBytes: 1 << 30, VolumePath: f.tA})
	wantErr(t, "Expand without the capability", err, ErrInvalidRequest, Final)
}
