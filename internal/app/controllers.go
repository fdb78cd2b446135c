package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/controller/attachdetach"
	"github.com/moorage/moorage/internal/controller/binder"
	"github.com/moorage/moorage/internal/controller/daemonset"
	"github.com/moorage/moorage/internal/controller/deployment"
	"github.com/moorage/moorage/internal/controller/endpoints"
	"github.com/moorage/moorage/internal/controller/endpointslice"
	"github.com/moorage/moorage/internal/controller/gc"
	"github.com/moorage/moorage/internal/controller/namespace"
	"github.com/moorage/moorage/internal/controller/nodeipam"
	"github.com/moorage/moorage/internal/controller/nodelifecycle"
	"github.com/moorage/moorage/internal/controller/podgc"
	"github.com/moorage/moorage/internal/controller/protection"
	"github.com/moorage/moorage/internal/controller/replicaset"
	"github.com/moorage/moorage/internal/controller/sharedinformers"
	"github.com/moorage/moorage/internal/controller/statefulset"
	"github.com/moorage/moorage/internal/controller/tainteviction"
	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/scheduler"
)

// runner is a reconcile loop: it runs until ctx is done.
type runner interface{ Run(ctx context.Context) }

// controllers are the server's reconcile loops by the names of
// kube-controller-manager's --controllers flag (and the scheduler's), each
// writing through its own client of the API, as any controller would run
// against Kubernetes, and all reading through one informer factory, as
// kube-controller-manager's do. pvc-protection-controller protects volumes
// too.
func controllers(reg *registry.Registry, tune Tuning) []struct {
	name  string
	build func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error)
} {
	type c = struct {
		name  string
		build func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error)
	}
	return []c{
		{"node-lifecycle-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return nodelifecycle.New(cfg, log, nodelifecycle.Options{Informers: shared, GracePeriod: tune.NodeMonitorGracePeriod})
		}},
		{nodeipam.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return nodeipam.New(cfg, log, nodeipam.Options{Informers: shared})
		}},
		{tainteviction.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return tainteviction.New(cfg, log, tainteviction.Options{Informers: shared})
		}},
		{podgc.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return podgc.New(cfg, log, podgc.Options{Informers: shared})
		}},
		{"persistentvolume-attach-detach-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return attachdetach.New(cfg, log, attachdetach.Options{Informers: shared})
		}},
		{scheduler.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return scheduler.New(cfg, log, scheduler.Options{Informers: shared})
		}},
		{"persistentvolume-binder-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return binder.New(cfg, log, binder.Options{Informers: shared})
		}},
		{"pvc-protection-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return protection.New(cfg, reg, log, protection.Options{Informers: shared})
		}},
		{"garbage-collector-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return gc.New(cfg, reg, log, gc.Options{})
		}},
		{"namespace-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return namespace.New(cfg, reg, log, namespace.Options{Informers: shared})
		}},
		{replicaset.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return replicaset.New(cfg, log, replicaset.Options{Informers: shared})
		}},
		{"replicationcontroller-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return replicaset.NewForReplicationControllers(cfg, log, replicaset.Options{Informers: shared})
		}},
		{deployment.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return deployment.New(cfg, log, deployment.Options{Informers: shared})
		}},
		{statefulset.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return statefulset.New(cfg, log, statefulset.Options{Informers: shared})
		}},
		{daemonset.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return daemonset.New(cfg, log, daemonset.Options{Informers: shared})
		}},
		{"endpoints-controller", func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return endpoints.New(cfg, log, endpoints.Options{Informers: shared})
		}},
		{endpointslice.Component, func(cfg *rest.Config, log *slog.Logger, shared informers.SharedInformerFactory) (runner, error) {
			return endpointslice.New(cfg, log, endpointslice.Options{Informers: shared})
		}},
	}
}

// Tuning holds the controllers' settings that have flags (upstream's
// kube-controller-manager flags); zero values are upstream's defaults.
type Tuning struct {
	// NodeMonitorGracePeriod: how long a node may go without a heartbeat
	// before it is NotReady (--node-monitor-grace-period, 50 s).
	NodeMonitorGracePeriod time.Duration
}

// startControllers builds every controller not left out, then runs each on
// wg until ctx is done.
func startControllers(ctx context.Context, wg *sync.WaitGroup, cfg *rest.Config, reg *registry.Registry, log *slog.Logger, without []string, tune Tuning) error {
	skip := map[string]bool{}
	for _, name := range without {
		skip[name] = true
	}
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "shared-informers"))
	if err != nil {
		return err
	}
	shared := sharedinformers.New(client)
	var built []runner
	for _, c := range controllers(reg, tune) {
		if skip[c.name] {
			continue
		}
		r, err := c.build(cfg, log, shared)
		if err != nil {
			return err
		}
		built = append(built, r)
	}
	for _, r := range built {
		wg.Go(func() { r.Run(ctx) })
	}
	return nil
}

// LeftOut turns kube-controller-manager's --controllers list into the
// controllers to leave out: "*" is every controller, "name" enables one,
// "-name" disables one; without "*" only the named ones run. Unknown names
// are an error naming them.
func LeftOut(list []string) ([]string, error) {
	known := map[string]bool{}
	var all []string
	for _, c := range controllers(nil, Tuning{}) {
		known[c.name] = true
		all = append(all, c.name)
	}
	star, enabled, disabled := false, map[string]bool{}, map[string]bool{}
	for _, item := range list {
		name, off := strings.CutPrefix(strings.TrimSpace(item), "-")
		switch {
		case name == "*" && !off:
			star = true
			continue
		case !known[name]:
			return nil, fmt.Errorf("%q is not in the list of known controllers: %s", item, strings.Join(all, ", "))
		case off:
			disabled[name] = true
		default:
			enabled[name] = true
		}
	}
	var out []string
	for _, name := range all {
		if disabled[name] || (!star && !enabled[name]) {
			out = append(out, name)
		}
	}
	return out, nil
}
