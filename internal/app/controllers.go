package app

import (
	"context"
	"log/slog"
	"sync"

	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/controller/attachdetach"
	"github.com/moorage/moorage/internal/controller/binder"
	"github.com/moorage/moorage/internal/controller/gc"
	"github.com/moorage/moorage/internal/controller/namespace"
	"github.com/moorage/moorage/internal/controller/nodelifecycle"
	"github.com/moorage/moorage/internal/controller/podgc"
	"github.com/moorage/moorage/internal/controller/protection"
	"github.com/moorage/moorage/internal/controller/tainteviction"
	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/scheduler"
)

// startControllers starts the server's reconcile loops, each on its own
// client of the API, as any controller would run against Kubernetes.
func startControllers(ctx context.Context, wg *sync.WaitGroup, cfg *rest.Config, reg *registry.Registry, log *slog.Logger) error {
	collector, err := gc.New(cfg, reg, log, gc.Options{})
	if err != nil {
		return err
	}
	namespaces, err := namespace.New(cfg, reg, log, namespace.Options{})
	if err != nil {
		return err
	}
	protect, err := protection.New(cfg, reg, log, protection.Options{})
	if err != nil {
		return err
	}
	binder, err := binder.New(cfg, log, binder.Options{})
	if err != nil {
		return err
	}
	nodes, err := nodelifecycle.New(cfg, log, nodelifecycle.Options{})
	if err != nil {
		return err
	}
	wg.Go(func() { nodes.Run(ctx) })
	evictor, err := tainteviction.New(cfg, log)
	if err != nil {
		return err
	}
	wg.Go(func() { evictor.Run(ctx) })
	podGC, err := podgc.New(cfg, log, podgc.Options{})
	if err != nil {
		return err
	}
	wg.Go(func() { podGC.Run(ctx) })
	attacher, err := attachdetach.New(cfg, log, attachdetach.Options{})
	if err != nil {
		return err
	}
	wg.Go(func() { attacher.Run(ctx) })
	sched, err := scheduler.New(cfg, log, scheduler.Options{})
	if err != nil {
		return err
	}
	wg.Go(func() { sched.Run(ctx) })
	wg.Go(func() { binder.Run(ctx) })
	wg.Go(func() { protect.Run(ctx) })
	wg.Go(func() { collector.Run(ctx) })
	wg.Go(func() { namespaces.Run(ctx) })
	return nil
}
