// Package provisioner is external-provisioner for one CSI driver: it creates
// a volume (CSI CreateVolume) and its PersistentVolume for every claim the
// PV controller hands to the driver, and deletes the volume (DeleteVolume)
// and the PV when a Released PV's reclaim policy is Delete — with the
// semantics of kubernetes-csi/external-provisioner and
// sig-storage-lib-external-provisioner: the same annotations, finalizer,
// events, volume names and PV fields. It runs next to the driver, in the
// node agent, in one of two modes (Central, NodeLocal; see Mode and own).
//
// The handshake: the binder (internal/controller/binder) names the driver
// in a claim's volume.kubernetes.io/storage-provisioner annotation; this
// controller calls CreateVolume with the name pvc-<claim uid> and creates a
// PV whose claimRef names the claim; the binder binds them.
//
// # No volume is leaked
//
// CreateVolume creates a volume that only its answer names (the volume ID),
// and the PV that records it is written afterwards. Upstream loses a
// volume when it stops between the two and the claim is deleted meanwhile
// (external-provisioner#486). Here, before the first CreateVolume for a
// claim, the request is written to a journal (Options.JournalDir; one JSON
// file per volume, temp file + fsync + rename + fsync of the directory).
// The record goes once the PV exists, or once the driver definitively
// refuses the request (a Final error, or RESOURCE_EXHAUSTED). Every sync of
// a claim, and every start, looks at its record:
//
//   - claim still waiting for the volume: the recorded request is sent
//     again as it was (CreateVolume is idempotent by name) and the PV is
//     created once;
//   - claim deleted, bound elsewhere or moved to another node: the recorded
//     request is replayed to learn the volume ID, then DeleteVolume.
//
// Why a journal rather than a finalizer on the claim (external-provisioner
// PR #673): the exact request is replayed — a driver may answer
// ALREADY_EXISTS to a request rebuilt from a class, mount options or node
// labels that changed in between, and the volume would be lost; it costs
// no API write per volume; and a Pending claim can be deleted at once even
// while the driver is down. The journal lives with the driver (the agent's
// state directory); a provisioner started elsewhere does not see it, which
// in NodeLocal mode is moot (the volumes are on this node too).
//
// # Errors and retries
//
// Errors are classified by csi.Classify (external-provisioner's checkError).
// Every failure is a ProvisioningFailed event and a retry with per-claim
// exponential back-off (Options.RetryStart, RetryMax: upstream's 1 s and
// 5 min), forever. InProgress and Transient errors keep the record, so the
// same CreateVolume is repeated until it answers; RESOURCE_EXHAUSTED for a
// claim with a selected node (topology-aware driver) removes the
// annotation so that the scheduler picks another node.
package provisioner
