package cli

import (
	"context"
	"path/filepath"
	"sync"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/controller/attacher"
	"github.com/moorage/moorage/internal/controller/provisioner"
	"github.com/moorage/moorage/internal/controller/resizer"
)

// runDriverControllers runs, for a CSI driver registered on an agent, the
// controllers upstream deploys as the driver's sidecars
// (agent.Options.DriverControllers): external-provisioner,
// external-attacher and external-resizer, until ctx ends. A node-local
// driver's controllers (the built-in driver's) handle this node's volumes
// only, as each node runs them: the provisioner is external-provisioner's
// node deployment, handling the claims whose selected node is the agent's.
//
// They are wired here, not in internal/app or internal/agent, because the
// controllers' own tests start servers through internal/testserver, which
// imports internal/app: an import of them from there would be a cycle.
func runDriverControllers(ctx context.Context, d agent.CSIDriver) error {
	popts := provisioner.Options{
		Mode:         provisioner.Central,
		NodeName:     d.NodeName,
		DriverName:   d.Name,
		JournalDir:   filepath.Join(d.StateDir, "journal"),
		TopologyKeys: d.TopologyKeys,
	}
	aopts := attacher.Options{DriverName: d.Name}
	ropts := resizer.Options{DriverName: d.Name}
	if d.NodeLocal {
		popts.Mode = provisioner.NodeLocal
		aopts.NodeName = d.NodeName
		ropts.NodeLocal, ropts.NodeName = true, d.NodeName
	}
	p, err := provisioner.New(d.Config, d.Client, d.Logger, popts)
	if err != nil {
		return err
	}
	a, err := attacher.New(d.Config, d.Client, d.Logger, aopts)
	if err != nil {
		return err
	}
	// A driver that can expand nothing gets no resizer: its Run returns at
	// once, as the sidecar refuses to start.
	r, err := resizer.New(d.Config, d.Client, d.Logger, ropts)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context){p.Run, a.Run, r.Run} {
		wg.Go(func() { run(ctx) })
	}
	wg.Wait()
	return nil
}
