package cli

import (
	"context"
	"path/filepath"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/controller/provisioner"
)

// runDriverControllers runs, for a CSI driver registered on an agent, the
// controllers upstream deploys as the driver's sidecars
// (agent.Options.DriverControllers), until ctx ends. The built-in driver's
// volumes are node-local: its provisioner is external-provisioner's node
// deployment, handling the claims whose selected node is the agent's.
//
// They are wired here, not in internal/app or internal/agent, because the
// controllers' own tests start servers through internal/testserver, which
// imports internal/app: an import of them from there would be a cycle.
func runDriverControllers(ctx context.Context, d agent.CSIDriver) error {
	mode := provisioner.Central
	if d.NodeLocal {
		mode = provisioner.NodeLocal
	}
	p, err := provisioner.New(d.Config, d.Client, d.Logger, provisioner.Options{
		Mode:         mode,
		NodeName:     d.NodeName,
		DriverName:   d.Name,
		JournalDir:   filepath.Join(d.StateDir, "journal"),
		TopologyKeys: d.TopologyKeys,
	})
	if err != nil {
		return err
	}
	// external-attacher runs beside the provisioner (attacher.go).
	stopAttacher, err := startAttacher(ctx, d)
	if err != nil {
		return err
	}
	defer stopAttacher()
	// external-resizer runs beside the provisioner (resizer.go).
	stopResizer, err := startResizer(ctx, d)
	if err != nil {
		return err
	}
	defer stopResizer()
	p.Run(ctx)
	return nil
}
