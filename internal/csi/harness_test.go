package csi

// Call sequences scripted on csi-test's driver harness
// (github.com/kubernetes-csi/csi-test/v5/driver): gomock identity,
// controller and node servers behind a real unix socket (startDriver).
// Every request is matched field by field (eq) and in order
// (gomock.InOrder, or one expectation registered just before the call that
// must make it); a call that must not reach the driver has no expectation,
// so the harness fails the test if it arrives.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
)

// codeKinds is, for every code a driver may return, what the caller must
// do, written down from the CSI spec v1.12.0 error tables and the sidecars
// (external-provisioner checkError, external-attacher and external-resizer
// isFinalError, the kubelet's isFinalError) independently of Classify.
var codeKinds = []struct {
	code   codes.Code
	kind   Kind // every RPC but CreateVolume
	create Kind // CreateVolume
}{
	// gRPC: the caller cancelled; the driver may go on. Not final anywhere.
	{codes.Canceled, InProgress, InProgress},
	// No recovery named by the spec; neither "in background" nor final-and-infeasible upstream.
	{codes.Unknown, Transient, Transient},
	// Spec: "Caller MUST fix the arguments"; external-resizer: infeasible.
	{codes.InvalidArgument, Final, Final},
	// gRPC timeout: the driver may still be working; every sidecar repeats the call.
	{codes.DeadlineExceeded, InProgress, InProgress},
	// Spec: volume, node or source does not exist; "Caller MUST verify".
	{codes.NotFound, Final, Final},
	// Spec: exists but is incompatible with the request; "Caller MUST fix the arguments".
	{codes.AlreadyExists, Final, Final},
	// Spec (secrets): the administrator must fix permissions.
	{codes.PermissionDenied, Final, Final},
	// Spec CreateVolume: "Unable to provision in accessible_topology" →
	// external-provisioner reschedules. Elsewhere (e.g. ControllerPublish's
	// "Max volumes attached"): not final for the attacher, resizer, kubelet.
	{codes.ResourceExhausted, InProgress, Reschedule},
	// Spec: in use, published elsewhere, exceeds capabilities: wait for a change.
	{codes.FailedPrecondition, Final, Final},
	// Spec: "Operation pending for volume": repeat the same call.
	{codes.Aborted, InProgress, InProgress},
	// Spec: "Unsupported capacity"; external-resizer: infeasible.
	{codes.OutOfRange, Final, Final},
	// Spec: "Caller MUST NOT retry".
	{codes.Unimplemented, Final, Final},
	// Driver-internal: nothing half-done is implied; retry with back-off.
	{codes.Internal, Transient, Transient},
	// gRPC: connection broken or driver restarting; the call may have run.
	{codes.Unavailable, InProgress, InProgress},
	// Unrecoverable data loss: not in progress, no recovery named.
	{codes.DataLoss, Transient, Transient},
	// Spec (secrets): "Caller SHALL either fix the secrets ...".
	{codes.Unauthenticated, Final, Final},
}

func kindOf(code codes.Code, op Op) Kind {
	for _, ck := range codeKinds {
		if ck.code == code {
			if op == OpCreateVolume {
				return ck.create
			}
			return ck.kind
		}
	}
	if code == codes.OK {
		return OK
	}
	panic("no kind for " + code.String())
}

// grpcErr is a driver's answer with code; nil for OK. The text is a
// decoy: only the code may count.
func grpcErr(code codes.Code) error {
	if code == codes.OK {
		return nil
	}
	return status.Error(code, "operation pending; retry later; not found")
}

// checkDriverErr checks that err is the driver's code, wrapped in an *Error
// naming op and volumeID, and classified as the table says.
func checkDriverErr(t *testing.T, err error, code codes.Code, op Op, volumeID string) {
	t.Helper()
	if code == codes.OK {
		if err != nil {
			t.Fatalf("%s: %v, want OK", op, err)
		}
		return
	}
	var e *Error
	if status.Code(err) != code || !errors.As(err, &e) || e.Op != op || e.VolumeID != volumeID {
		t.Fatalf("%s answered %s: got %#v, want an *Error{Op: %s, VolumeID: %q} with that code", op, code, err, op, volumeID)
	}
	if got, want := Classify(err), kindOf(code, op); got != want {
		t.Errorf("%s answered %s: Classify = %s, want %s", op, code, got, want)
	}
}

func pluginCapsResp(types ...csipb.PluginCapability_Service_Type) *csipb.GetPluginCapabilitiesResponse {
	resp := &csipb.GetPluginCapabilitiesResponse{}
	for _, typ := range types {
		resp.Capabilities = append(resp.Capabilities, &csipb.PluginCapability{
			Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{Type: typ}},
		})
	}
	return resp
}

// volCap is the CSI capability expected on the wire: Block carries no
// filesystem type or mount flags, whatever the caller set.
func volCap(mode csipb.VolumeCapability_AccessMode_Mode, block bool, fsType string, flags ...string) *csipb.VolumeCapability {
	c := &csipb.VolumeCapability{AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode}}
	if block {
		c.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}}
	}
	return c
}

// records returns what NodeVolumes holds, after checking that a restarted
// agent would read the same from disk.
func records(t *testing.T, nv *NodeVolumes, dir string) []VolumeState {
	t.Helper()
	mem := nv.Volumes()
	reopened, err := OpenNodeVolumes(dir, nil)
	if err != nil {
		t.Fatalf("reopen state: %v", err)
	}
	if disk := reopened.Volumes(); !reflect.DeepEqual(mem, disk) {
		t.Fatalf("records in memory %+v differ from disk %+v", mem, disk)
	}
	return mem
}

// The calls a provisioner makes (external-provisioner's order: who are you,
// what can you do, what can your controller do, then CreateVolume), with
// every field of CreateVolume. Capabilities are fetched once: a repeated
// CreateVolume (same name, as after a lost answer) sends only itself.
// GetCapacity and DeleteVolume close the volume's life.
func TestHarnessProvisioningCalls(t *testing.T) {
	const (
		zone = "topology.example.com/zone"
		name = "pvc-6f1c0e8a-0c4e-4bb1-9d0f-2f6f5c1b7a11"
	)
	z1, z2 := Topology{zone: "z1"}, Topology{zone: "z2"}
	seg := func(ts ...Topology) []*csipb.Topology { return toCSITopologies(ts) }
	rwo, rox, rwx, rwop := corev1.ReadWriteOnce, corev1.ReadOnlyMany, corev1.ReadWriteMany, corev1.ReadWriteOncePod

	for _, tc := range []struct {
		name     string
		ctrlCaps []csipb.ControllerServiceCapability_RPC_Type
		req      CreateVolumeRequest
		want     *csipb.CreateVolumeRequest
	}{{
		name:     "filesystem RWO+ROX with size, limit, parameters, secrets and topology",
		ctrlCaps: []csipb.ControllerServiceCapability_RPC_Type{csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME},
		req: CreateVolumeRequest{
			Name: name, RequiredBytes: 1 << 30, LimitBytes: 2 << 30,
			Capability: VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{rwo, rox}, FSType: "xfs", MountFlags: []string{"noatime", "discard"}},
			Parameters: map[string]string{"type": "ssd"},
			Secrets:    map[string]string{"password": "s3cret"},
			Requisite:  []Topology{z1, z2},
			Preferred:  []Topology{z2, z1},
		},
		want: &csipb.CreateVolumeRequest{
			Name:          name,
			CapacityRange: &csipb.CapacityRange{RequiredBytes: 1 << 30, LimitBytes: 2 << 30},
			VolumeCapabilities: []*csipb.VolumeCapability{ // one per access mode, as external-provisioner
				volCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, false, "xfs", "noatime", "discard"),
				volCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, false, "xfs", "noatime", "discard"),
			},
			Parameters:                map[string]string{"type": "ssd"},
			Secrets:                   map[string]string{"password": "s3cret"},
			AccessibilityRequirements: &csipb.TopologyRequirement{Requisite: seg(z1, z2), Preferred: seg(z2, z1)},
		},
	}, {
		name: "block RWOP on a SINGLE_NODE_MULTI_WRITER controller, no size, no topology",
		ctrlCaps: []csipb.ControllerServiceCapability_RPC_Type{
			csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
			csipb.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		},
		req: CreateVolumeRequest{Name: name, Capability: VolumeCapability{
			AccessModes: []corev1.PersistentVolumeAccessMode{rwop}, Block: true, FSType: "ext4", MountFlags: []string{"ro"},
		}},
		want: &csipb.CreateVolumeRequest{
			Name:               name,
			VolumeCapabilities: []*csipb.VolumeCapability{volCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, true, "")},
		},
	}, {
		name:     "filesystem RWX without fsType, requisite only",
		ctrlCaps: []csipb.ControllerServiceCapability_RPC_Type{csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME},
		req: CreateVolumeRequest{Name: name, RequiredBytes: 5 << 20, Requisite: []Topology{z1},
			Capability: VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{rwx}}},
		want: &csipb.CreateVolumeRequest{
			Name:                      name,
			CapacityRange:             &csipb.CapacityRange{RequiredBytes: 5 << 20},
			VolumeCapabilities:        []*csipb.VolumeCapability{volCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, false, "")},
			AccessibilityRequirements: &csipb.TopologyRequirement{Requisite: seg(z1)},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDriver(t, t.TempDir(), "d")
			ctx := context.Background()
			created := &csipb.Volume{
				VolumeId: "vol-9", CapacityBytes: 2 << 30,
				VolumeContext:      map[string]string{"pool": "a"},
				AccessibleTopology: seg(z2),
			}
			capsReq := &csipb.GetCapacityRequest{
				VolumeCapabilities: tc.want.VolumeCapabilities[:1],
				Parameters:         map[string]string{"type": "ssd"},
				AccessibleTopology: &csipb.Topology{Segments: z1},
			}
			gomock.InOrder(
				d.identity.EXPECT().GetPluginInfo(gomock.Any(), eq(&csipb.GetPluginInfoRequest{})).
					Return(&csipb.GetPluginInfoResponse{Name: testDriver, VendorVersion: "v1.2.3"}, nil),
				d.identity.EXPECT().GetPluginCapabilities(gomock.Any(), eq(&csipb.GetPluginCapabilitiesRequest{})).
					Return(pluginCapsResp(csipb.PluginCapability_Service_CONTROLLER_SERVICE, csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS), nil),
				d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), eq(&csipb.ControllerGetCapabilitiesRequest{})).
					Return(controllerCaps(tc.ctrlCaps...), nil),
				d.controller.EXPECT().CreateVolume(gomock.Any(), eq(tc.want)).
					Return(&csipb.CreateVolumeResponse{Volume: created}, nil).Times(2),
				d.controller.EXPECT().GetCapacity(gomock.Any(), eq(capsReq)).
					Return(&csipb.GetCapacityResponse{AvailableCapacity: 7 << 30, MinimumVolumeSize: wrapperspb.Int64(1 << 20)}, nil),
				d.controller.EXPECT().DeleteVolume(gomock.Any(), eq(&csipb.DeleteVolumeRequest{VolumeId: "vol-9", Secrets: tc.req.Secrets})).
					Return(&csipb.DeleteVolumeResponse{}, nil),
			)
			c := d.dial(t)

			info, err := c.PluginInfo(ctx)
			if err != nil || info.Name != testDriver || info.VendorVersion != "v1.2.3" {
				t.Fatalf("PluginInfo = %+v, %v", info, err)
			}
			for range 2 {
				pc, err := c.PluginCapabilities(ctx)
				if err != nil || pc != (PluginCapabilitySet{ControllerService: true, AccessibilityConstraints: true}) {
					t.Fatalf("PluginCapabilities = %+v, %v", pc, err)
				}
				if _, err := c.ControllerCapabilities(ctx); err != nil {
					t.Fatalf("ControllerCapabilities: %v", err)
				}
			}
			wantVol := Volume{ID: "vol-9", CapacityBytes: 2 << 30, Context: map[string]string{"pool": "a"}, AccessibleTopology: []Topology{z2}}
			for i := range 2 {
				vol, err := c.CreateVolume(ctx, tc.req)
				if err != nil || !reflect.DeepEqual(vol, wantVol) {
					t.Fatalf("CreateVolume #%d = %+v, %v; want %+v", i+1, vol, err, wantVol)
				}
			}
			capability := tc.req.Capability
			capability.AccessModes = capability.AccessModes[:1]
			got, err := c.GetCapacity(ctx, CapacityRequest{Capability: &capability, Parameters: map[string]string{"type": "ssd"}, Topology: z1})
			if err != nil || got.AvailableBytes != 7<<30 || got.MaximumVolumeSize != nil || got.MinimumVolumeSize == nil || *got.MinimumVolumeSize != 1<<20 {
				t.Fatalf("GetCapacity = %+v, %v", got, err)
			}
			mustOK(t, "DeleteVolume", c.DeleteVolume(ctx, "vol-9", tc.req.Secrets))
		})
	}
}

// A volume's life on one node, as the attach controller and the kubelet
// drive it: ControllerPublish, stage, publish for two pods, expansion,
// unpublish both, unstage only after the last one, ControllerUnpublish.
// Each request is checked whole: the kubelet's staging and target paths,
// the capability (access mode chosen by each service's
// SINGLE_NODE_MULTI_WRITER), the publish context that ControllerPublish
// returned, the volume context and each step's secrets. A driver without
// STAGE_UNSTAGE_VOLUME gets no stage or unstage call and no staging path.
func TestHarnessNodeLifecycle(t *testing.T) {
	const (
		handle = "pool-a/disk-42" // a "/" in a handle must not leak into paths
		pvName = "pvc-0b8c"
		nodeID = "node-1"
		size   = 2 << 30
	)
	volCtx := map[string]string{"pool": "a", "storage.kubernetes.io/csiProvisionerIdentity": "123-local"}
	pubCtx := map[string]string{"devicePath": "/dev/fake0"}
	secret := func(step string) map[string]string { return map[string]string{"token": step} }

	for _, tc := range []struct {
		name  string
		stage bool // node STAGE_UNSTAGE_VOLUME
		block bool // volumeMode: Block
		snmw  bool // node SINGLE_NODE_MULTI_WRITER (the controller has not)
	}{
		{name: "filesystem with STAGE_UNSTAGE_VOLUME", stage: true},
		{name: "filesystem without STAGE_UNSTAGE_VOLUME"},
		{name: "block with STAGE_UNSTAGE_VOLUME", stage: true, block: true},
		{name: "block without STAGE_UNSTAGE_VOLUME", block: true},
		{name: "filesystem on a SINGLE_NODE_MULTI_WRITER node", stage: true, snmw: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, stateDir := t.TempDir(), t.TempDir()
			staging := StagingPath(root, testDriver, handle)
			tA, tB := PublishPath(root, "pod-a", pvName), PublishPath(root, "pod-b", pvName)
			if tc.block { // the kubelet's volumeDevices layout
				devices := filepath.Join(root, "plugins", "kubernetes.io", "csi", "volumeDevices")
				staging = filepath.Join(devices, "staging", pvName)
				tA, tB = filepath.Join(devices, "publish", pvName, "pod-a"), filepath.Join(devices, "publish", pvName, "pod-b")
			}
			wantStaging := "" // what NodePublish and NodeExpand get
			var nodeRPCs []csipb.NodeServiceCapability_RPC_Type
			if tc.stage {
				wantStaging = staging
				nodeRPCs = append(nodeRPCs, csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)
			}
			nodeMode := csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
			if tc.snmw {
				nodeRPCs = append(nodeRPCs, csipb.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER)
				nodeMode = csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
			}
			nodeRPCs = append(nodeRPCs, csipb.NodeServiceCapability_RPC_EXPAND_VOLUME)
			vc := VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, Block: tc.block, FSType: "ext4", MountFlags: []string{"noatime"}}
			ctrlCap := volCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, tc.block, "ext4", "noatime")
			nodeCap := volCap(nodeMode, tc.block, "ext4", "noatime")

			d := startDriver(t, t.TempDir(), "d")
			publish := func(target string, readOnly bool) *gomock.Call {
				return d.node.EXPECT().NodePublishVolume(gomock.Any(), eq(&csipb.NodePublishVolumeRequest{
					VolumeId: handle, PublishContext: pubCtx, StagingTargetPath: wantStaging, TargetPath: target,
					VolumeCapability: nodeCap, Readonly: readOnly, Secrets: secret("node-publish"), VolumeContext: volCtx,
				})).Return(&csipb.NodePublishVolumeResponse{}, nil)
			}
			unpublish := func(target string) *gomock.Call {
				return d.node.EXPECT().NodeUnpublishVolume(gomock.Any(), eq(&csipb.NodeUnpublishVolumeRequest{VolumeId: handle, TargetPath: target})).
					Return(&csipb.NodeUnpublishVolumeResponse{}, nil)
			}
			calls := []*gomock.Call{
				d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).Return(controllerCaps(
					csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME, csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME), nil),
				d.controller.EXPECT().ControllerPublishVolume(gomock.Any(), eq(&csipb.ControllerPublishVolumeRequest{
					VolumeId: handle, NodeId: nodeID, VolumeCapability: ctrlCap, VolumeContext: volCtx, Secrets: secret("controller-publish"),
				})).Return(&csipb.ControllerPublishVolumeResponse{PublishContext: pubCtx}, nil),
				d.node.EXPECT().NodeGetCapabilities(gomock.Any(), eq(&csipb.NodeGetCapabilitiesRequest{})).Return(nodeCaps(nodeRPCs...), nil),
			}
			if tc.stage {
				calls = append(calls, d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(&csipb.NodeStageVolumeRequest{
					VolumeId: handle, PublishContext: pubCtx, StagingTargetPath: staging,
					VolumeCapability: nodeCap, Secrets: secret("node-stage"), VolumeContext: volCtx,
				})).Return(&csipb.NodeStageVolumeResponse{}, nil))
			}
			calls = append(calls,
				publish(tA, false),
				publish(tB, true),
				d.controller.EXPECT().ControllerExpandVolume(gomock.Any(), eq(&csipb.ControllerExpandVolumeRequest{
					VolumeId: handle, CapacityRange: &csipb.CapacityRange{RequiredBytes: size},
					Secrets: secret("controller-expand"), VolumeCapability: ctrlCap,
				})).Return(&csipb.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: true}, nil),
				d.node.EXPECT().NodeExpandVolume(gomock.Any(), eq(&csipb.NodeExpandVolumeRequest{
					VolumeId: handle, VolumePath: tA, StagingTargetPath: wantStaging,
					CapacityRange: &csipb.CapacityRange{RequiredBytes: size}, VolumeCapability: nodeCap, Secrets: secret("node-expand"),
				})).Return(&csipb.NodeExpandVolumeResponse{CapacityBytes: size}, nil),
				unpublish(tA),
				unpublish(tB),
			)
			if tc.stage {
				calls = append(calls, d.node.EXPECT().NodeUnstageVolume(gomock.Any(), eq(&csipb.NodeUnstageVolumeRequest{VolumeId: handle, StagingTargetPath: staging})).
					Return(&csipb.NodeUnstageVolumeResponse{}, nil))
			}
			calls = append(calls, d.controller.EXPECT().ControllerUnpublishVolume(gomock.Any(), eq(&csipb.ControllerUnpublishVolumeRequest{
				VolumeId: handle, NodeId: nodeID, Secrets: secret("controller-unpublish"),
			})).Return(&csipb.ControllerUnpublishVolumeResponse{}, nil))
			gomock.InOrder(calls...)

			c := d.dial(t)
			nv, err := OpenNodeVolumes(stateDir, c)
			mustOK(t, "OpenNodeVolumes", err)
			ctx := context.Background()
			wantRecord := func(stage State, targets map[string]State) {
				t.Helper()
				got := records(t, nv, stateDir)
				if stage == "" {
					if len(got) != 0 {
						t.Fatalf("records = %+v, want none", got)
					}
					return
				}
				want := []VolumeState{{VolumeID: handle, Stage: stage, StagingPath: wantStaging, Targets: targets}}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("records = %+v, want %+v", got, want)
				}
			}

			pc, err := c.ControllerPublish(ctx, ControllerPublishRequest{
				VolumeID: handle, NodeID: nodeID, Capability: vc, VolumeContext: volCtx, Secrets: secret("controller-publish"),
			})
			mustOK(t, "ControllerPublish", err)
			mustOK(t, "Stage", nv.Stage(ctx, StageRequest{
				VolumeID: handle, StagingPath: staging, Capability: vc,
				PublishContext: pc, VolumeContext: volCtx, Secrets: secret("node-stage"),
			}))
			wantRecord(StateStaged, map[string]State{})
			for _, p := range []struct {
				target   string
				readOnly bool
			}{{tA, false}, {tB, true}} {
				mustOK(t, "Publish "+p.target, nv.Publish(ctx, PublishRequest{
					VolumeID: handle, TargetPath: p.target, ReadOnly: p.readOnly, Capability: vc,
					PublishContext: pc, VolumeContext: volCtx, Secrets: secret("node-publish"),
				}))
			}
			wantRecord(StateStaged, map[string]State{tA: StatePublished, tB: StatePublished})

			exp, err := c.ControllerExpand(ctx, ExpandRequest{VolumeID: handle, RequiredBytes: size, Capability: &vc, Secrets: secret("controller-expand")})
			if err != nil || !exp.NodeExpansionRequired {
				t.Fatalf("ControllerExpand = %+v, %v", exp, err)
			}
			st, _ := nv.Volume(handle)
			got, err := c.NodeExpand(ctx, ExpandRequest{
				VolumeID: handle, VolumePath: tA, StagingPath: st.StagingPath, RequiredBytes: size,
				Capability: &vc, Secrets: secret("node-expand"),
			})
			if err != nil || got != size {
				t.Fatalf("NodeExpand = %d, %v", got, err)
			}

			mustOK(t, "Unpublish A", nv.Unpublish(ctx, handle, tA))
			wantErr(t, "Unstage with B published", nv.Unstage(ctx, handle), ErrStillPublished, Final)
			wantRecord(StateStaged, map[string]State{tB: StatePublished})
			mustOK(t, "Unpublish B", nv.Unpublish(ctx, handle, tB))
			mustOK(t, "Unstage", nv.Unstage(ctx, handle))
			wantRecord("", nil)
			mustOK(t, "ControllerUnpublish", c.ControllerUnpublish(ctx, handle, nodeID, secret("controller-unpublish")))
			if _, err := os.Stat(staging); !os.IsNotExist(err) {
				t.Errorf("staging path %s left behind: %v", staging, err)
			}
		})
	}
}

// nodeStep is one NodeVolumes call on the fixture's volume and what the
// driver answers to it, or (refused) the error NodeVolumes must return
// without calling the driver. Each step's expectation is registered just
// before the call, so any other call reaching the harness fails the test.
type nodeStep struct {
	op      Op     // OpNodeStageVolume, OpNodePublishVolume, OpNodeUnpublishVolume, OpNodeUnstageVolume
	target  string // "A" or "B" for (un)publish
	code    codes.Code
	refused error
	// path, if set, replaces the staging path (stage) or the target path
	// (publish) of the fixture's request.
	path func(f *nodeFixture) string
}

func stage(code codes.Code) nodeStep { return nodeStep{op: OpNodeStageVolume, code: code} }
func publish(target string, code codes.Code) nodeStep {
	return nodeStep{op: OpNodePublishVolume, target: target, code: code}
}
func unpublish(target string, code codes.Code) nodeStep {
	return nodeStep{op: OpNodeUnpublishVolume, target: target, code: code}
}
func unstage(code codes.Code) nodeStep { return nodeStep{op: OpNodeUnstageVolume, code: code} }

// refusedWith is s, to be refused locally with sentinel.
func (s nodeStep) refusedWith(sentinel error) nodeStep { s.refused = sentinel; return s }

func (s nodeStep) String() string {
	out := string(s.op) + s.target
	if s.refused != nil {
		return out + " (refused)"
	}
	return out + " → " + s.code.String()
}

func (s nodeStep) run(ctx context.Context, t *testing.T, d *mockDriver, nv *NodeVolumes, f *nodeFixture) {
	t.Helper()
	pub, wantPub, wantUnpub, target := f.pubA, f.wantPubA, f.wantUnpubA, f.tA
	if s.target == "B" {
		pub, wantPub, wantUnpub, target = f.pubB, f.wantPubB, f.wantUnB, f.tB
	}
	expect := s.refused == nil
	var err error
	switch s.op {
	case OpNodeStageVolume:
		req := f.stageReq
		if s.path != nil {
			req.StagingPath = s.path(f)
		}
		if expect {
			d.node.EXPECT().NodeStageVolume(gomock.Any(), eq(f.wantStage)).Return(&csipb.NodeStageVolumeResponse{}, grpcErr(s.code))
		}
		err = nv.Stage(ctx, req)
	case OpNodePublishVolume:
		if s.path != nil {
			pub.TargetPath = s.path(f)
		}
		if expect {
			d.node.EXPECT().NodePublishVolume(gomock.Any(), eq(wantPub)).Return(&csipb.NodePublishVolumeResponse{}, grpcErr(s.code))
		}
		err = nv.Publish(ctx, pub)
	case OpNodeUnpublishVolume:
		if expect {
			d.node.EXPECT().NodeUnpublishVolume(gomock.Any(), eq(wantUnpub)).Return(&csipb.NodeUnpublishVolumeResponse{}, grpcErr(s.code))
		}
		err = nv.Unpublish(ctx, volID, target)
	case OpNodeUnstageVolume:
		if expect {
			d.node.EXPECT().NodeUnstageVolume(gomock.Any(), eq(f.wantUnstage)).Return(&csipb.NodeUnstageVolumeResponse{}, grpcErr(s.code))
		}
		err = nv.Unstage(ctx, volID)
	default:
		t.Fatalf("bad step %v", s)
	}
	if !expect {
		var e *Error
		if !errors.Is(err, s.refused) || Classify(err) != Final || !errors.As(err, &e) || e.Op != s.op {
			t.Fatalf("%v: got %v (%s), want %v from %s (Final)", s, err, Classify(err), s.refused, s.op)
		}
		return
	}
	checkDriverErr(t, err, s.code, s.op, volID)
}

// expectNodeCaps lets NodeVolumes fetch the node capabilities (once).
func expectNodeCaps(d *mockDriver, resp *csipb.NodeGetCapabilitiesResponse) {
	d.node.EXPECT().NodeGetCapabilities(gomock.Any(), eq(&csipb.NodeGetCapabilitiesRequest{})).Return(resp, nil).MaxTimes(1)
}

// Calls in the wrong order, from our side, never reach the driver: the
// harness has no expectation for them, the error is Final and names the
// refusing RPC, and the records (memory and disk) are unchanged.
func TestHarnessOutOfOrderRefusedBeforeTheDriver(t *testing.T) {
	ok := codes.OK
	for _, tc := range []struct {
		name    string
		arrange []nodeStep
		bad     nodeStep
	}{
		{"publish before any stage", nil, publish("A", ok).refusedWith(ErrNotStaged)},
		{"publish while the stage is uncertain", []nodeStep{stage(codes.DeadlineExceeded)}, publish("A", ok).refusedWith(ErrNotStaged)},
		{"publish after a final stage failure", []nodeStep{stage(codes.InvalidArgument)}, publish("A", ok).refusedWith(ErrNotStaged)},
		{"publish after a failed unstage", []nodeStep{stage(ok), unstage(codes.Internal)}, publish("A", ok).refusedWith(ErrNotStaged)},
		{"publish after unstage", []nodeStep{stage(ok), unstage(ok)}, publish("A", ok).refusedWith(ErrNotStaged)},
		{"unstage while published", []nodeStep{stage(ok), publish("A", ok)}, unstage(ok).refusedWith(ErrStillPublished)},
		{"unstage while a publish is uncertain", []nodeStep{stage(ok), publish("A", codes.Unavailable)}, unstage(ok).refusedWith(ErrStillPublished)},
		{"unstage after a failed unpublish", []nodeStep{stage(ok), publish("A", ok), unpublish("A", codes.Internal)}, unstage(ok).refusedWith(ErrStillPublished)},
		{"unstage with one of two targets left", []nodeStep{stage(ok), publish("A", ok), publish("B", ok), unpublish("A", ok)}, unstage(ok).refusedWith(ErrStillPublished)},
		{"stage again at another staging path", []nodeStep{stage(ok)}, nodeStep{op: OpNodeStageVolume, refused: ErrInvalidRequest,
			path: func(f *nodeFixture) string { return filepath.Join(f.root, "elsewhere") }}},
		{"stage at a relative staging path", nil, nodeStep{op: OpNodeStageVolume, refused: ErrInvalidRequest,
			path: func(*nodeFixture) string { return "globalmount" }}},
		{"publish at a relative target path", []nodeStep{stage(ok)}, nodeStep{op: OpNodePublishVolume, refused: ErrInvalidRequest,
			path: func(*nodeFixture) string { return "mount" }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNodeFixture(t)
			d := startDriver(t, t.TempDir(), "d")
			expectNodeCaps(d, stageAndRPC)
			nv := f.open(t, d.dial(t))
			ctx := context.Background()
			for _, s := range tc.arrange {
				s.run(ctx, t, d, nv, f)
			}
			before := records(t, nv, f.stateDir)
			tc.bad.run(ctx, t, d, nv, f)
			if after := records(t, nv, f.stateDir); !reflect.DeepEqual(before, after) {
				t.Errorf("refused call changed the records: %+v → %+v", before, after)
			}
		})
	}
}

// Every code a driver may return, through every Client call: the error
// keeps the code, names the RPC and the volume, and Classify gives the kind
// of codeKinds.
func TestHarnessErrorCodesEveryCall(t *testing.T) {
	if len(codeKinds) != 16 {
		t.Fatalf("codeKinds covers %d codes, want the 16 non-OK gRPC codes", len(codeKinds))
	}
	rwo := VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}
	calls := []struct {
		op     Op
		volume string // the VolumeID the *Error must carry
		expect func(d *mockDriver, err error) *gomock.Call
		call   func(ctx context.Context, c *Client) error
	}{
		{OpCreateVolume, "", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().CreateVolume(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.CreateVolume(ctx, CreateVolumeRequest{Name: "pvc-1", Capability: rwo})
			return err
		}},
		{OpDeleteVolume, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().DeleteVolume(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error { return c.DeleteVolume(ctx, "vol-1", nil) }},
		{OpControllerPublishVolume, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().ControllerPublishVolume(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.ControllerPublish(ctx, ControllerPublishRequest{VolumeID: "vol-1", NodeID: "n1", Capability: rwo})
			return err
		}},
		{OpControllerUnpublishVolume, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().ControllerUnpublishVolume(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error { return c.ControllerUnpublish(ctx, "vol-1", "n1", nil) }},
		{OpControllerExpandVolume, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().ControllerExpandVolume(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.ControllerExpand(ctx, ExpandRequest{VolumeID: "vol-1", RequiredBytes: 1 << 30, Capability: &rwo})
			return err
		}},
		{OpValidateVolumeCapabilities, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().ValidateVolumeCapabilities(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.ValidateVolumeCapabilities(ctx, ValidateRequest{VolumeID: "vol-1", Capability: rwo})
			return err
		}},
		{OpGetCapacity, "", func(d *mockDriver, err error) *gomock.Call {
			return d.controller.EXPECT().GetCapacity(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.GetCapacity(ctx, CapacityRequest{Capability: &rwo})
			return err
		}},
		{OpNodeExpandVolume, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.node.EXPECT().NodeExpandVolume(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.NodeExpand(ctx, ExpandRequest{VolumeID: "vol-1", VolumePath: "/t", RequiredBytes: 1 << 30, Capability: &rwo})
			return err
		}},
		{OpNodeGetVolumeStats, "vol-1", func(d *mockDriver, err error) *gomock.Call {
			return d.node.EXPECT().NodeGetVolumeStats(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error {
			_, err := c.NodeGetVolumeStats(ctx, "vol-1", "/t", "")
			return err
		}},
		{OpNodeGetInfo, "", func(d *mockDriver, err error) *gomock.Call {
			return d.node.EXPECT().NodeGetInfo(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error { _, err := c.NodeGetInfo(ctx); return err }},
		{OpGetPluginInfo, "", func(d *mockDriver, err error) *gomock.Call {
			return d.identity.EXPECT().GetPluginInfo(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error { _, err := c.PluginInfo(ctx); return err }},
		{OpGetPluginCapabilities, "", func(d *mockDriver, err error) *gomock.Call {
			return d.identity.EXPECT().GetPluginCapabilities(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error { _, err := c.PluginCapabilities(ctx); return err }},
		{OpProbe, "", func(d *mockDriver, err error) *gomock.Call {
			return d.identity.EXPECT().Probe(gomock.Any(), gomock.Any()).Return(nil, err)
		}, func(ctx context.Context, c *Client) error { _, err := c.Probe(ctx); return err }},
	}
	for _, ck := range codeKinds {
		t.Run(ck.code.String(), func(t *testing.T) {
			d := startDriver(t, t.TempDir(), "d")
			order := []*gomock.Call{
				d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).Return(controllerCaps(), nil),
				d.node.EXPECT().NodeGetCapabilities(gomock.Any(), gomock.Any()).Return(nodeCaps(), nil),
			}
			for _, cl := range calls {
				order = append(order, cl.expect(d, grpcErr(ck.code)))
			}
			gomock.InOrder(order...)
			c := d.dial(t)
			ctx := context.Background()
			// Capabilities first, so that each call below sends only its own RPC.
			if _, err := c.ControllerCapabilities(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := c.NodeCapabilities(ctx); err != nil {
				t.Fatal(err)
			}
			for _, cl := range calls {
				checkDriverErr(t, cl.call(ctx, c), ck.code, cl.op, cl.volume)
			}
		})
	}
}

// A failed capability fetch is not cached and is not the operation's
// error: CreateVolume is not sent, the error names ControllerGetCapabilities
// (so RESOURCE_EXHAUSTED there is InProgress, not Reschedule), and the next
// CreateVolume asks again.
func TestHarnessCapabilityFetchFailure(t *testing.T) {
	d := startDriver(t, t.TempDir(), "d")
	want := &csipb.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: []*csipb.VolumeCapability{
		volCap(csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, false, ""),
	}}
	gomock.InOrder(
		d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).Return(nil, grpcErr(codes.ResourceExhausted)),
		d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).
			Return(controllerCaps(csipb.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER), nil),
		d.controller.EXPECT().CreateVolume(gomock.Any(), eq(want)).
			Return(&csipb.CreateVolumeResponse{Volume: &csipb.Volume{VolumeId: "vol-1"}}, nil),
	)
	c := d.dial(t)
	req := CreateVolumeRequest{Name: "pvc-1", Capability: VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}}
	_, err := c.CreateVolume(context.Background(), req)
	checkDriverErr(t, err, codes.ResourceExhausted, OpControllerGetCapabilities, "")
	if vol, err := c.CreateVolume(context.Background(), req); err != nil || vol.ID != "vol-1" {
		t.Fatalf("CreateVolume after the capabilities answered = %+v, %v", vol, err)
	}
}

// A driver that answers OK without a field the spec requires: the call may
// have had its effect, so the caller repeats it (InProgress).
func TestHarnessInvalidResponses(t *testing.T) {
	d := startDriver(t, t.TempDir(), "d")
	gomock.InOrder(
		d.controller.EXPECT().ControllerGetCapabilities(gomock.Any(), gomock.Any()).Return(controllerCaps(), nil),
		d.controller.EXPECT().CreateVolume(gomock.Any(), gomock.Any()).Return(&csipb.CreateVolumeResponse{}, nil),
		d.identity.EXPECT().GetPluginInfo(gomock.Any(), gomock.Any()).Return(&csipb.GetPluginInfoResponse{}, nil),
		d.node.EXPECT().NodeGetInfo(gomock.Any(), gomock.Any()).Return(&csipb.NodeGetInfoResponse{}, nil),
	)
	c := d.dial(t)
	ctx := context.Background()
	_, errCreate := c.CreateVolume(ctx, CreateVolumeRequest{Name: "pvc-1", Capability: VolumeCapability{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}})
	_, errInfo := c.PluginInfo(ctx)
	_, errNode := c.NodeGetInfo(ctx)
	for op, err := range map[Op]error{OpCreateVolume: errCreate, OpGetPluginInfo: errInfo, OpNodeGetInfo: errNode} {
		var e *Error
		if !errors.Is(err, ErrInvalidResponse) || Classify(err) != InProgress || !errors.As(err, &e) || e.Op != op {
			t.Errorf("%s with an empty answer: %v (%s), want ErrInvalidResponse from %s (InProgress)", op, err, Classify(err), op)
		}
	}
}

// After a driver error on any of the four ordered node RPCs, for every
// code: the records say exactly what may have happened (uncertain when the
// driver may still be at work or the call undid something; unchanged after
// a stage or publish that certainly did nothing), memory and disk agree,
// the order is still enforced, and repeating the call (the OK path) brings
// the volume where it should be.
func TestHarnessNodeErrorsKeepRecordsConsistent(t *testing.T) {
	ok := codes.OK
	type rec struct {
		stage   State            // "" means no record
		targets map[string]State // by "A", "B"
	}
	for _, tc := range []struct {
		rpc    Op
		before []nodeStep
		fail   func(codes.Code) nodeStep
		// what is recorded after the failure: if the driver may still be
		// at work (InProgress), and otherwise
		inProgress, otherwise rec
		// refused: a call that must now be refused without a driver call
		// (whenever the volume is not certainly staged, or the target is
		// uncertain)
		refused nodeStep
		retry   []nodeStep
		end     rec
	}{{
		rpc:        OpNodeStageVolume,
		fail:       stage,
		inProgress: rec{stage: StateUncertain},
		otherwise:  rec{}, // a failed stage of a new volume did nothing: no record
		refused:    publish("A", ok).refusedWith(ErrNotStaged),
		retry:      []nodeStep{stage(ok), publish("A", ok)},
		end:        rec{stage: StateStaged, targets: map[string]State{"A": StatePublished}},
	}, {
		rpc:        OpNodePublishVolume,
		before:     []nodeStep{stage(ok)},
		fail:       func(c codes.Code) nodeStep { return publish("A", c) },
		inProgress: rec{stage: StateStaged, targets: map[string]State{"A": StateUncertain}},
		otherwise:  rec{stage: StateStaged},
		refused:    unstage(ok).refusedWith(ErrStillPublished),
		retry:      []nodeStep{publish("A", ok)},
		end:        rec{stage: StateStaged, targets: map[string]State{"A": StatePublished}},
	}, {
		rpc:    OpNodeUnpublishVolume,
		before: []nodeStep{stage(ok), publish("A", ok)},
		fail:   func(c codes.Code) nodeStep { return unpublish("A", c) },
		// Any failed unpublish may have unmounted part way.
		inProgress: rec{stage: StateStaged, targets: map[string]State{"A": StateUncertain}},
		otherwise:  rec{stage: StateStaged, targets: map[string]State{"A": StateUncertain}},
		refused:    unstage(ok).refusedWith(ErrStillPublished),
		retry:      []nodeStep{unpublish("A", ok), unstage(ok)},
		end:        rec{},
	}, {
		rpc:        OpNodeUnstageVolume,
		before:     []nodeStep{stage(ok)},
		fail:       unstage,
		inProgress: rec{stage: StateUncertain},
		otherwise:  rec{stage: StateUncertain},
		refused:    publish("A", ok).refusedWith(ErrNotStaged),
		retry:      []nodeStep{unstage(ok)},
		end:        rec{},
	}} {
		for _, ck := range codeKinds {
			t.Run(string(tc.rpc)+"/"+ck.code.String(), func(t *testing.T) {
				f := newNodeFixture(t)
				d := startDriver(t, t.TempDir(), "d")
				expectNodeCaps(d, stageAndRPC)
				nv := f.open(t, d.dial(t))
				ctx := context.Background()
				check := func(when string, want rec) {
					t.Helper()
					got := records(t, nv, f.stateDir)
					if want.stage == "" {
						if len(got) != 0 {
							t.Fatalf("%s: records = %+v, want none", when, got)
						}
						return
					}
					targets := map[string]State{}
					for k, s := range want.targets {
						targets[map[string]string{"A": f.tA, "B": f.tB}[k]] = s
					}
					w := []VolumeState{{VolumeID: volID, Stage: want.stage, StagingPath: f.staging, Targets: targets}}
					if !reflect.DeepEqual(got, w) {
						t.Fatalf("%s: records = %+v, want %+v", when, got, w)
					}
				}

				for _, s := range tc.before {
					s.run(ctx, t, d, nv, f)
				}
				tc.fail(ck.code).run(ctx, t, d, nv, f)
				want := tc.otherwise
				if ck.kind == InProgress {
					want = tc.inProgress
				}
				check("after "+ck.code.String(), want)
				if tc.rpc == OpNodeStageVolume && want.stage == "" {
					// Nothing is staged: the directory made for the driver goes too.
					if _, err := os.Stat(f.staging); !os.IsNotExist(err) {
						t.Errorf("staging path %s left after a stage that did nothing: %v", f.staging, err)
					}
				}
				if want.stage != StateStaged || want.targets["A"] == StateUncertain {
					tc.refused.run(ctx, t, d, nv, f)
					check("after the refused call", want)
				}
				for _, s := range tc.retry {
					s.run(ctx, t, d, nv, f)
				}
				check("after the retry", tc.end)
			})
		}
	}
}
