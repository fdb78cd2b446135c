package nodeipam

import (
	"net/netip"

	corelisters "k8s.io/client-go/listers/core/v1"
)

// For the tests of the block choice, without a running informer.
func (c *Controller) Free(node string) (netip.Prefix, bool)  { return c.free(node) }
func (c *Controller) SetNodeLister(l corelisters.NodeLister) { c.nodes = l }
