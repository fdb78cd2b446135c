package cli

import (
	"context"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/controller/provisioner"
)

// runNodeProvisioner is the agents' provisioner of a CSI driver they run
// (agent.Options.Provisioner): external-provisioner's node deployment,
// handling the claims whose selected node is the agent's. It is wired here,
// not in internal/app or internal/agent, because the provisioner's own
// tests start servers through internal/testserver, which imports
// internal/app: an import of the provisioner from there would be a cycle.
func runNodeProvisioner(ctx context.Context, d agent.CSIDriver) error {
	p, err := provisioner.New(d.Config, d.Client, d.Logger, provisioner.Options{
		Mode:         provisioner.NodeLocal,
		NodeName:     d.NodeName,
		DriverName:   d.Name,
		JournalDir:   d.JournalDir,
		TopologyKeys: d.TopologyKeys,
	})
	if err != nil {
		return err
	}
	p.Run(ctx)
	return nil
}
