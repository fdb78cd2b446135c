package agent

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// The node's status.volumesInUse, as the kubelet reports it: the volumes
// that must be attached to this node and that it has mounted or is about
// to mount (volume.Manager.VolumesInUse). The attach/detach controller
// detaches a volume no pod needs only once the node no longer reports it;
// the volume manager stages such a volume only once it has been reported
// (volume.Options.ReportVolumesInUse), so a detach never races a mount.
// It is written with the rest of the node status, and at once when the
// volume manager asks.

// reportVolumesInUse is volume.Options.ReportVolumesInUse: the heartbeat
// writes the node status at once.
func (a *Agent) reportVolumesInUse() {
	select {
	case a.statusNow <- struct{}{}:
	default: // a write is already due
	}
}

// writeVolumesInUse writes the node status now, retrying a write conflict
// (the attach/detach controller writes status.volumesAttached).
func (a *Agent) writeVolumesInUse(ctx context.Context) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return a.updateNodeStatus(ctx, false) })
	if err != nil && ctx.Err() == nil {
		a.log.Warn("reporting the volumes in use in the node status", "err", err)
	}
}

// volumesInUse is what the node status must report, and whether it differs
// from what cur reports. Until the volume manager exists (the agent is
// starting), what the node reports is kept, as the kubelet keeps it until
// its volume manager has rebuilt its state.
func (a *Agent) volumesInUse(ctx context.Context, cur *corev1.Node) ([]corev1.UniqueVolumeName, bool) {
	if a.volumes == nil {
		return cur.Status.VolumesInUse, false
	}
	inUse := a.volumes.VolumesInUse(ctx)
	return inUse, !slices.Equal(inUse, cur.Status.VolumesInUse)
}

// reportedVolumesInUse tells the volume manager what the node status now
// reports.
func (a *Agent) reportedVolumesInUse(names []corev1.UniqueVolumeName) {
	if a.volumes != nil {
		a.volumes.MarkVolumesReportedInUse(names)
	}
}

func (g apiGetter) VolumeAttachment(ctx context.Context, name string) (*storagev1.VolumeAttachment, error) {
	return g.client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
}
