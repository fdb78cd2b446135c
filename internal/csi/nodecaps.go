package csi

import "context"

// NodeCapabilities is the node capabilities of the volumes' driver
// (NodeGetCapabilities, cached by the client): the kubelet reads a volume's
// node-stage secret only for a driver that stages, and so does the volume
// manager.
func (n *NodeVolumes) NodeCapabilities(ctx context.Context) (NodeCapabilitySet, error) {
	return n.client.NodeCapabilities(ctx)
}
