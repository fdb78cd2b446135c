// Package csi is moorage's client of CSI drivers: the one place that speaks
// the CSI gRPC protocol to a driver's socket, for the provisioner, the
// attach controller, the resizer and the agent's CSI volume plugin. The
// built-in driver itself lives in internal/csi/local.
//
// # Layers
//
//	Client       Dial(ctx, "unix:///run/x.sock") → one connection per driver.
//	             Identity, controller and node RPCs with Go-typed requests
//	             (Kubernetes access modes, Topology maps) and answers; each
//	             call gets a timeout (WithTimeout, default 10 s like the
//	             sidecars; WithNodeTimeout, default 2 min like the kubelet);
//	             capability sets are fetched once and cached. Every error is
//	             an *Error carrying the Op and volume ID.
//	NodeVolumes  per driver on a node: Stage → Publish … Unpublish → Unstage,
//	             in the order the spec requires, whatever the driver would
//	             accept, with the state of every volume and target persisted
//	             (one JSON file per volume, temp + fsync + rename) so that an
//	             agent restart resumes where it stopped. The node RPCs that
//	             depend on order are reachable only through it.
//	Classify     one function that turns any error from the two above into
//	             a Kind, by gRPC status code and operation only.
//	StagingPath, PublishPath
//	             the kubelet's directory layout, for callers that want it.
//
// # Error kinds
//
//	OK          no error.
//	Final       failed and not running; will fail again until something
//	            changes (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
//	            FAILED_PRECONDITION, OUT_OF_RANGE, UNIMPLEMENTED,
//	            PERMISSION_DENIED, UNAUTHENTICATED; our own ErrInvalidRequest,
//	            ErrNotStaged, ErrStillPublished).
//	Transient   failed and not running; may succeed unchanged later
//	            (UNKNOWN, INTERNAL, DATA_LOSS).
//	InProgress  may still be running or may have succeeded: repeat the same
//	            call (CANCELED, DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED,
//	            RESOURCE_EXHAUSTED outside CreateVolume, any error without a
//	            gRPC status, ErrInvalidResponse).
//	Reschedule  CreateVolume's RESOURCE_EXHAUSTED: try another node if the
//	            caller can choose one, otherwise treat as Final.
//
// The code sets follow kubernetes-csi/external-provisioner
// pkg/controller/controller.go checkError (commit 0688604f),
// kubernetes-csi/external-attacher pkg/attacher/attacher.go isFinalError
// (e6106024), kubernetes-csi/external-resizer pkg/util/util.go IsFinalError
// and IsInfeasibleError (beef24d8), kubernetes/kubernetes
// pkg/volume/csi/csi_client.go isFinalError, and the error tables of the CSI
// spec v1.12.0. Classify's comments cite each code.
package csi
