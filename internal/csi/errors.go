package csi

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Op names the CSI RPC an Error came from. The values are the RPC names of
// the CSI spec, so they can go into events and logs as they are.
type Op string

// The operations a Client performs. OpDial is not an RPC: it is the
// connection setup in Dial.
const (
	OpDial                       Op = "Dial"
	OpGetPluginInfo              Op = "GetPluginInfo"
	OpGetPluginCapabilities      Op = "GetPluginCapabilities"
	OpProbe                      Op = "Probe"
	OpCreateVolume               Op = "CreateVolume"
	OpDeleteVolume               Op = "DeleteVolume"
	OpControllerPublishVolume    Op = "ControllerPublishVolume"
	OpControllerUnpublishVolume  Op = "ControllerUnpublishVolume"
	OpValidateVolumeCapabilities Op = "ValidateVolumeCapabilities"
	OpGetCapacity                Op = "GetCapacity"
	OpControllerGetCapabilities  Op = "ControllerGetCapabilities"
	OpControllerExpandVolume     Op = "ControllerExpandVolume"
	OpNodeStageVolume            Op = "NodeStageVolume"
	OpNodeUnstageVolume          Op = "NodeUnstageVolume"
	OpNodePublishVolume          Op = "NodePublishVolume"
	OpNodeUnpublishVolume        Op = "NodeUnpublishVolume"
	OpNodeGetVolumeStats         Op = "NodeGetVolumeStats"
	OpNodeExpandVolume           Op = "NodeExpandVolume"
	OpNodeGetCapabilities        Op = "NodeGetCapabilities"
	OpNodeGetInfo                Op = "NodeGetInfo"
)

// Error is what every Client and NodeVolumes method returns on failure. It
// records which operation failed and for which volume; Err is the gRPC
// status error from the driver or one of the sentinel errors below.
type Error struct {
	Op       Op
	VolumeID string // empty for calls that are not about one volume
	Err      error
}

func (e *Error) Error() string {
	if e.VolumeID == "" {
		return fmt.Sprintf("csi %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("csi %s %q: %v", e.Op, e.VolumeID, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Errors raised on this side of the socket. They carry no gRPC status, so
// Classify knows them by identity (errors.Is), never by text.
var (
	// ErrInvalidRequest: the request was rejected before anything was
	// sent (missing field, bad endpoint, impossible access-mode mix,
	// a staging path that differs from the recorded one). Final.
	ErrInvalidRequest = errors.New("invalid request")

	// ErrNotStaged: NodeVolumes.Publish was asked for a volume whose
	// NodeStageVolume has not succeeded (absent or uncertain). Final:
	// the caller must Stage first.
	ErrNotStaged = errors.New("volume is not staged")

	// ErrStillPublished: NodeVolumes.Unstage was asked for a volume that
	// still has published (or uncertain) targets. Final: the caller must
	// Unpublish them first.
	ErrStillPublished = errors.New("volume still has published targets")

	// ErrInvalidResponse: the driver answered OK but left out a field
	// the spec requires (a volume ID, a node ID, a plugin name).
	// InProgress: the call may have had its effect, so the caller must
	// repeat it (every such RPC is idempotent per the spec).
	ErrInvalidResponse = errors.New("invalid response from driver")
)

// Kind is what a caller should do after an error. Classify is the only
// place that decides it.
type Kind int

const (
	// OK: no error.
	OK Kind = iota
	// Final: the operation failed and is not running. Repeating the same
	// call will fail the same way until something changes: the
	// arguments, permissions, secrets, or the state of another object.
	// Record it (event, status) and retry only with a long backoff or
	// after a change.
	Final
	// Transient: the operation failed and is not running, but the same
	// call may succeed later unchanged (driver-internal errors). Retry
	// with the usual backoff; nothing is left half-done on our side.
	Transient
	// InProgress: the driver may still be working on the operation, or
	// may have completed it without us hearing back. The caller must
	// repeat the same call (same arguments) until it gets OK or a
	// non-InProgress error, and must treat the object as possibly
	// changed meanwhile ("uncertain" in kubelet, "in background" in
	// external-provisioner).
	InProgress
	// Reschedule: CreateVolume could not place the volume in the
	// requested topology (RESOURCE_EXHAUSTED). A provisioner that can
	// choose another node (topology-aware driver, WaitForFirstConsumer
	// with a selected node) gives up on this node and lets the scheduler
	// pick another; any other caller treats it as Final. This is
	// external-provisioner's ProvisioningReschedule.
	Reschedule
)

func (k Kind) String() string {
	switch k {
	case OK:
		return "OK"
	case Final:
		return "Final"
	case Transient:
		return "Transient"
	case InProgress:
		return "InProgress"
	case Reschedule:
		return "Reschedule"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Classify decides what a caller does after err. It looks only at the gRPC
// status code (found through any wrapping), the Op recorded in an *Error,
// and this package's sentinel errors; it never reads message text.
//
// Sources, all read at the commits named in the package doc:
//   - [EP] kubernetes-csi/external-provisioner pkg/controller/controller.go
//     checkError: Canceled, DeadlineExceeded, Unavailable, Aborted →
//     ProvisioningInBackground; ResourceExhausted → ProvisioningReschedule
//     when the provisioner may reschedule, else ProvisioningFinished; a
//     non-gRPC error → InBackground ("be on the safe side"); all other
//     codes → ProvisioningFinished.
//   - [EA] kubernetes-csi/external-attacher pkg/attacher/attacher.go,
//     [ER] kubernetes-csi/external-resizer pkg/util/util.go IsFinalError,
//     [KL] kubernetes/kubernetes pkg/volume/csi/csi_client.go isFinalError
//     (the kubelet, which turns a non-final error into an
//     UncertainProgressError): Canceled, DeadlineExceeded, Unavailable,
//     ResourceExhausted, Aborted and non-gRPC errors are not final.
//   - [ER] IsInfeasibleError: InvalidArgument, OutOfRange, NotFound are
//     final and infeasible (a subset of final).
//   - [SPEC] container-storage-interface/spec v1.12.0 spec.md "Error
//     Scheme" and the per-RPC error tables (recovery column).
func Classify(err error) Kind {
	if err == nil {
		return OK
	}
	switch {
	case errors.Is(err, ErrInvalidRequest),
		errors.Is(err, ErrNotStaged),
		errors.Is(err, ErrStillPublished):
		// Refused here; nothing reached the driver.
		return Final
	case errors.Is(err, ErrInvalidResponse):
		return InProgress
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: the call may or may not have been sent.
		// [EP], [KL], [EA], [ER] all treat this as in progress.
		return InProgress
	}
	var op Op
	var e *Error
	if errors.As(err, &e) {
		op = e.Op
	}
	switch st.Code() {
	case codes.OK:
		return OK
	case codes.Canceled, // gRPC: the client cancelled [EP][EA][ER][KL]
		codes.DeadlineExceeded, // gRPC: timeout; the driver may still be working [EP][EA][ER][KL]
		codes.Unavailable,      // gRPC: connection broken, server restarting [EP][EA][ER][KL]
		codes.Aborted:          // CSI: "Operation pending for volume" [SPEC][EP][EA][ER][KL]
		return InProgress
	case codes.ResourceExhausted:
		if op == OpCreateVolume {
			// CSI CreateVolume: "Unable to provision in
			// accessible_topology" [SPEC]; [EP] reschedules (or
			// finishes when it cannot).
			return Reschedule
		}
		// [EA][ER][KL]: "Server temporarily out of resources - previous
		// operation may be still in progress". For
		// ControllerPublishVolume the spec's "Max volumes attached"
		// lands here too, as in [EA].
		return InProgress
	case codes.InvalidArgument, // [SPEC] "Caller MUST fix"; [ER] infeasible
		codes.OutOfRange,         // [SPEC] "Caller MUST fix the capacity range"; [ER] infeasible
		codes.NotFound,           // [SPEC] "Caller MUST verify that the volume_id is correct"; [ER] infeasible
		codes.AlreadyExists,      // [SPEC] "Caller MUST fix the arguments"
		codes.FailedPrecondition, // [SPEC] volume in use / published elsewhere: wait for a change
		codes.Unimplemented,      // [SPEC] "Caller MUST NOT retry"
		codes.PermissionDenied,   // [SPEC] "System administrator SHOULD ensure ... permissions"
		codes.Unauthenticated:    // [SPEC] "Caller SHALL either fix the secrets"
		return Final
	default:
		// Unknown, Internal, DataLoss: not in progress per [EP][EA][ER][KL],
		// not infeasible per [ER]; the spec names no recovery.
		return Transient
	}
}
