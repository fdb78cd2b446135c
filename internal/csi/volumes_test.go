package csi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
)

const (
	testDriver = "local.csi.moorage.io"
	volID      = "vol-1"
)

var (
	rwo         = VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, FSType: "ext4"}
	rwoCap      = mountCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4")
	stageAndRPC = nodeCaps(csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)
)

// nodeFixture is one agent: a root dir with kubelet-style paths, a state
// dir, and the requests it sends for volume vol-1.
type nodeFixture struct {
	root, stateDir      string
	staging, tA, tB     string
	stageReq            StageRequest
	pubA, pubB          PublishRequest
	wantStage           *csipb.NodeStageVolumeRequest
	wantPubA, wantPubB  *csipb.NodePublishVolumeRequest
	wantUnpubA, wantUnB *csipb.NodeUnpublishVolumeRequest
	wantUnstage         *csipb.NodeUnstageVolumeRequest
}

func newNodeFixture(t *testing.T) *nodeFixture {
	root := t.TempDir()
	f := &nodeFixture{
		root:     root,
		stateDir: filepath.Join(root, "state", testDriver),
		staging:  StagingPath(root, testDriver, volID),
		tA:       PublishPath(root, "pod-a", "pv-1"),
		tB:       PublishPath(root, "pod-b", "pv-1"),
	}
	f.stageReq = StageRequest{VolumeID: volID, StagingPath: f.staging, Capability: rwo, VolumeContext: map[string]string{"k": "v"}}
	f.pubA = PublishRequest{VolumeID: volID, TargetPath: f.tA, Capability: rwo}
	f.pubB = PublishRequest{VolumeID: volID, TargetPath: f.tB, Capability: rwo, ReadOnly: true}
	f.wantStage = &csipb.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: f.staging, VolumeCapability: rwoCap, VolumeContext: map[string]string{"k": "v"}}
	f.wantPubA = &csipb.NodePublishVolumeRequest{VolumeId: volID, StagingTargetPath: f.staging, TargetPath: f.tA, VolumeCapability: rwoCap}
	f.wantPubB = &csipb.NodePublishVolumeRequest{VolumeId: volID, StagingTargetPath: f.staging, TargetPath: f.tB, VolumeCapability: rwoCap, Readonly: true}
	f.wantUnpubA = &csipb.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: f.tA}
	f.wantUnB = &csipb.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: f.tB}
	f.wantUnstage = &csipb.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: f.staging}
	return f
}

func (f *nodeFixture) open(t *testing.T, c *Client) *NodeVolumes {
	t.Helper()
	nv, err := OpenNodeVolumes(f.stateDir, c)
	if err != nil {
		t.Fatalf("OpenNodeVolumes: %v", err)
	}
	return nv
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, what string, err, target error, kind Kind) {
	t.Helper()
	if !errors.Is(err, target) || Classify(err) != kind {
		t.Fatalf("%s: got %v (%s), want %v (%s)", what, err, Classify(err), target, kind)
	}
}

func wantState(t *testing.T, nv *NodeVolumes, stage State, targets map[string]State) {
	t.Helper()
	v, ok := nv.Volume(volID)
	if stage == "" {
		if ok {
			t.Fatalf("volume recorded as %+v, want absent", v)
		}
		return
	}
	if !ok || v.Stage != stage || len(v.Targets) != len(targets) {
		t.Fatalf("volume = %+v (recorded %v), want stage %s targets %v", v, ok, stage, targets)
	}
	for p, s := range targets {
		if v.Targets[p] != s {
			t.Fatalf("target %s = %q, want %q", p, v.Targets[p], s)
		}
	}
}

var okResp = struct {
	stage     *csipb.NodeStageVolumeResponse
	publish   *csipb.NodePublishVolumeResponse
	unpublish *csipb.NodeUnpublishVolumeResponse
	unstage   *csipb.NodeUnstageVolumeResponse
}{&csipb.NodeStageVolumeResponse{}, &csipb.NodePublishVolumeResponse{}, &csipb.NodeUnpublishVolumeResponse{}, &csipb.NodeUnstageVolumeResponse{}}

// Stage → Publish → Unpublish → Unstage, each asked twice: exactly one RPC
// each, in that order, and the capability fetched once.
func TestNodeVolumesSequenceAndIdempotence(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	gomock.InOrder(
		d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil).Times(1),
		d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).Return(okResp.stage, nil),
		d.node.EXPECT().NodePublishVolume(gomock.Any(), eq(f.wantPubA)).Return(okResp.publish, nil),
		d.node.EXPECT().NodeUnpublishVolume(gomock.Any(), eq(f.wantUnpubA)).Return(okResp.unpublish, nil),
		d.node.EXPECT().NodeUnstageVolume(gomock.Any(), eq(f.wantUnstage)).Return(okResp.unstage, nil),
	)
	nv := f.open(t, d.dial(t))
	ctx := context.Background()

	for range 2 {
		mustOK(t, "Stage", nv.Stage(ctx, f.stageReq))
	}
	if fi, err := os.Stat(f.staging); err != nil || !fi.IsDir() {
		t.Fatalf("staging dir not created: %v", err)
	}
	wantState(t, nv, StateStaged, nil)
	for range 2 {
		mustOK(t, "Publish", nv.Publish(ctx, f.pubA))
	}
	wantState(t, nv, StateStaged, map[string]State{f.tA: StatePublished})
	wantErr(t, "Unstage while published", nv.Unstage(ctx, volID), ErrStillPublished, Final)
	for range 2 {
		mustOK(t, "Unpublish", nv.Unpublish(ctx, volID, f.tA))
	}
	wantState(t, nv, StateStaged, nil)
	for range 2 {
		mustOK(t, "Unstage", nv.Unstage(ctx, volID))
	}
	wantState(t, nv, "", nil)
	if files, _ := os.ReadDir(f.stateDir); len(files) != 0 {
		t.Errorf("state dir not empty after unstage: %v", files)
	}
	if _, err := os.Stat(f.staging); !os.IsNotExist(err) {
		t.Errorf("empty staging dir left behind: %v", err)
	}
}

// Without STAGE_UNSTAGE_VOLUME nothing is staged or unstaged, and publish
// gets no staging path.
func TestNodeVolumesNoStageCapability(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	pub := &csipb.NodePublishVolumeRequest{VolumeId: volID, TargetPath: f.tA, VolumeCapability: rwoCap}
	gomock.InOrder(
		d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(nodeCaps(csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS), nil),
		d.node.EXPECT().NodePublishVolume(gomock.Any(), eq(pub)).Return(okResp.publish, nil),
		d.node.EXPECT().NodeUnpublishVolume(gomock.Any(), eq(f.wantUnpubA)).Return(okResp.unpublish, nil),
	)
	nv := f.open(t, d.dial(t))
	ctx := context.Background()

	mustOK(t, "Stage", nv.Stage(ctx, f.stageReq))
	if v, _ := nv.Volume(volID); v.Stage != StateStaged || v.StagingPath != "" {
		t.Fatalf("after Stage without capability: %+v", v)
	}
	mustOK(t, "Publish", nv.Publish(ctx, f.pubA))
	mustOK(t, "Unpublish", nv.Unpublish(ctx, volID, f.tA))
	mustOK(t, "Unstage", nv.Unstage(ctx, volID))
	wantState(t, nv, "", nil)
}

// The driver would happily publish an unstaged volume; we never ask it to.
// An uncertain stage (InProgress error) is repeated with the same request,
// and a Final stage error on a new volume leaves nothing behind.
func TestNodeVolumesNeverPublishBeforeStage(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	stageOK := d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).Return(okResp.stage, nil)
	gomock.InOrder(
		d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil),
		d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).Return(nil, status.Error(codes.InvalidArgument, "bad fs")),
		d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).Return(nil, status.Error(codes.DeadlineExceeded, "slow")),
		stageOK,
	)
	// A permissive driver: publish always succeeds, but only after stageOK.
	d.node.EXPECT().NodePublishVolume(gomock.Any(), gomock.Any()).Return(okResp.publish, nil).After(stageOK).Times(1)
	nv := f.open(t, d.dial(t))
	ctx := context.Background()

	wantErr(t, "Publish before any Stage", nv.Publish(ctx, f.pubA), ErrNotStaged, Final)

	err := nv.Stage(ctx, f.stageReq)
	if Classify(err) != Final || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Stage with INVALID_ARGUMENT: %v (%s)", err, Classify(err))
	}
	wantState(t, nv, "", nil) // nothing happened, nothing recorded
	wantErr(t, "Publish after failed Stage", nv.Publish(ctx, f.pubA), ErrNotStaged, Final)

	err = nv.Stage(ctx, f.stageReq)
	if Classify(err) != InProgress {
		t.Fatalf("Stage with DEADLINE_EXCEEDED: %v (%s), want InProgress", err, Classify(err))
	}
	wantState(t, nv, StateUncertain, nil)
	wantErr(t, "Publish while stage uncertain", nv.Publish(ctx, f.pubA), ErrNotStaged, Final)

	mustOK(t, "Stage again (same call)", nv.Stage(ctx, f.stageReq))
	mustOK(t, "Publish", nv.Publish(ctx, f.pubA))
	wantState(t, nv, StateStaged, map[string]State{f.tA: StatePublished})

	// A different staging path for a staged volume is refused, not sent.
	req := f.stageReq
	req.StagingPath = filepath.Join(f.root, "elsewhere")
	wantErr(t, "Stage at another path", nv.Stage(ctx, req), ErrInvalidRequest, Final)
}

// The state survives the agent: publish B ends uncertain, the agent (client,
// NodeVolumes) and the driver restart, and the new pair carries on:
// A is not republished, B is published again (the same call), then both
// are unpublished and the volume unstaged, in order.
func TestNodeVolumesResumeAfterRestart(t *testing.T) {
	f := newNodeFixture(t)
	ctx := context.Background()
	sockDir := t.TempDir()

	d1 := startDriver(t, sockDir, "d1")
	gomock.InOrder(
		d1.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil),
		d1.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).Return(okResp.stage, nil),
		d1.node.EXPECT().NodePublishVolume(gomock.Any(), eq(f.wantPubA)).Return(okResp.publish, nil),
		d1.node.EXPECT().NodePublishVolume(gomock.Any(), eq(f.wantPubB)).Return(nil, status.Error(codes.Unavailable, "driver restarting")),
	)
	c1 := d1.dial(t)
	nv1 := f.open(t, c1)
	mustOK(t, "Stage", nv1.Stage(ctx, f.stageReq))
	mustOK(t, "Publish A", nv1.Publish(ctx, f.pubA))
	if err := nv1.Publish(ctx, f.pubB); Classify(err) != InProgress {
		t.Fatalf("Publish B with UNAVAILABLE: %v (%s), want InProgress", err, Classify(err))
	}
	_ = c1.Close()

	d2 := startDriver(t, sockDir, "d2")
	gomock.InOrder(
		d2.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil),
		d2.node.EXPECT().NodePublishVolume(gomock.Any(), eq(f.wantPubB)).Return(okResp.publish, nil),
		d2.node.EXPECT().NodeUnpublishVolume(gomock.Any(), eq(f.wantUnpubA)).Return(okResp.unpublish, nil),
		d2.node.EXPECT().NodeUnpublishVolume(gomock.Any(), eq(f.wantUnB)).Return(okResp.unpublish, nil),
		d2.node.EXPECT().NodeUnstageVolume(gomock.Any(), eq(f.wantUnstage)).Return(okResp.unstage, nil),
	)
	nv2 := f.open(t, d2.dial(t))
	wantState(t, nv2, StateStaged, map[string]State{f.tA: StatePublished, f.tB: StateUncertain})
	if vs := nv2.Volumes(); len(vs) != 1 || vs[0].StagingPath != f.staging {
		t.Fatalf("Volumes() after restart = %+v", vs)
	}

	mustOK(t, "Stage (already staged)", nv2.Stage(ctx, f.stageReq))
	mustOK(t, "Publish A (already published)", nv2.Publish(ctx, f.pubA))
	mustOK(t, "Publish B (uncertain: repeat)", nv2.Publish(ctx, f.pubB))
	mustOK(t, "Unpublish A", nv2.Unpublish(ctx, volID, f.tA))
	wantErr(t, "Unstage with B published", nv2.Unstage(ctx, volID), ErrStillPublished, Final)
	mustOK(t, "Unpublish B", nv2.Unpublish(ctx, volID, f.tB))
	mustOK(t, "Unstage", nv2.Unstage(ctx, volID))
	wantState(t, nv2, "", nil)
}

// The uncertain record is on disk before the RPC is sent: an agent that
// dies during NodeStageVolume restarts knowing the volume may be staged.
func TestNodeVolumesIntentWrittenBeforeCall(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil)
	var onDisk []VolumeState
	d.node.EXPECT().NodeStageVolume(gomock.Any(), gomock.Any()).
		DoAndReturn(func(context.Context, *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
			vols, err := stateDir(f.stateDir).load() // what a restarted agent would read now
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			for _, v := range vols {
				onDisk = append(onDisk, *v)
			}
			return nil, status.Error(codes.Unavailable, "agent crashed here")
		})
	nv := f.open(t, d.dial(t))
	if err := nv.Stage(context.Background(), f.stageReq); Classify(err) != InProgress {
		t.Fatalf("Stage: %v (%s)", err, Classify(err))
	}
	if len(onDisk) != 1 || onDisk[0].Stage != StateUncertain || onDisk[0].StagingPath != f.staging {
		t.Fatalf("state on disk during NodeStageVolume = %+v, want one uncertain record", onDisk)
	}
	reopened := f.open(t, nil)
	wantState(t, reopened, StateUncertain, nil)
}

// Two concurrent Stage calls for one volume make one NodeStageVolume.
func TestNodeVolumesConcurrentStage(t *testing.T) {
	f := newNodeFixture(t)
	d := startDriver(t, t.TempDir(), "d")
	entered, release := make(chan struct{}), make(chan struct{})
	d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(stageAndRPC, nil)
	d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).
		DoAndReturn(func(context.Context, *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
			close(entered)
			<-release
			return okResp.stage, nil
		}).Times(1)
	nv := f.open(t, d.dial(t))
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(1)
	go func() { defer wg.Done(); errs[0] = nv.Stage(ctx, f.stageReq) }()
	<-entered
	wg.Add(1)
	go func() { defer wg.Done(); errs[1] = nv.Stage(ctx, f.stageReq) }()
	close(release)
	wg.Wait()
	for i, err := range errs {
		mustOK(t, "Stage "+string(rune('A'+i)), err)
	}
}

func TestStateDirRecovery(t *testing.T) {
	dir := t.TempDir()
	sd := stateDir(dir)
	mustOK(t, "save", sd.save(&VolumeState{VolumeID: "a/b:c", Stage: StateStaged, StagingPath: "/s",
		Targets: map[string]State{"/t": StatePublished}}))
	// A crash between CreateTemp and rename leaves a temp file: ignored and removed.
	mustOK(t, "write temp", os.WriteFile(filepath.Join(dir, tmpPrefix+"123"), []byte("{tor"), 0o600))
	vols, err := sd.load()
	if err != nil || len(vols) != 1 || vols["a/b:c"].Targets["/t"] != StatePublished {
		t.Fatalf("load = %+v, %v", vols, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("temp file %s not removed", e.Name())
		}
	}
	// A record that does not parse stops the agent instead of being skipped.
	mustOK(t, "corrupt", os.WriteFile(sd.file("a/b:c"), []byte("{"), 0o600))
	if _, err := OpenNodeVolumes(dir, nil); err == nil {
		t.Error("OpenNodeVolumes accepted a corrupt record")
	}
}

func TestPaths(t *testing.T) {
	// sha256("vol-1"), from sha256sum.
	want := "/var/lib/moorage/plugins/kubernetes.io/csi/local.csi.moorage.io/" +
		"d2e8363faaac7ae76def3b14091d8eb5755f6b92e9531627aeec833a8731cc49/globalmount"
	if got := StagingPath("/var/lib/moorage", "local.csi.moorage.io", "vol-1"); got != want {
		t.Errorf("StagingPath = %q, want %q", got, want)
	}
	if got := PublishPath("/var/lib/moorage", "uid-1", "pv-1"); got != "/var/lib/moorage/pods/uid-1/volumes/kubernetes.io~csi/pv-1/mount" {
		t.Errorf("PublishPath = %q", got)
	}
}
