package csi

import (
	"context"
	"fmt"
)

// Expand calls NodeExpandVolume for a volume published at req.VolumePath
// (a publish target recorded as published), with the staging path recorded
// at Stage; req.StagingPath is ignored. Like the other node calls it holds
// the volume's lock, so that it never runs beside a Stage, Publish,
// Unpublish or Unstage of the same volume. It refuses (ErrInvalidRequest;
// nothing is sent) a target that is not published and a driver without
// the node EXPAND_VOLUME capability. It returns the size the driver
// reports, 0 if none.
func (n *NodeVolumes) Expand(ctx context.Context, req ExpandRequest) (int64, error) {
	const op = OpNodeExpandVolume
	unlock, err := n.lock(ctx, op, req.VolumeID)
	if err != nil {
		return 0, err
	}
	defer unlock()

	cur := n.get(req.VolumeID)
	if cur == nil || cur.Targets[req.VolumePath] != StatePublished {
		return 0, &Error{Op: op, VolumeID: req.VolumeID, Err: fmt.Errorf("%w: volume is not published at %s", ErrInvalidRequest, req.VolumePath)}
	}
	caps, err := n.client.NodeCapabilities(ctx)
	if err != nil {
		return 0, err
	}
	if !caps.ExpandVolume {
		return 0, &Error{Op: op, VolumeID: req.VolumeID, Err: fmt.Errorf("%w: the driver does not have the node EXPAND_VOLUME capability", ErrInvalidRequest)}
	}
	req.StagingPath = cur.StagingPath
	return n.client.NodeExpand(ctx, req)
}
