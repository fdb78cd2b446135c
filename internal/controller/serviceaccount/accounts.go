// Package serviceaccount is two of upstream's controllers that give every
// namespace what its pods' identity needs:
//
//   - the serviceaccount-controller (Controller): the `default`
//     ServiceAccount exists in every active namespace, and comes back when
//     deleted;
//   - the root-ca-cert-publisher (Publisher): the ConfigMap kube-root-ca.crt,
//     key ca.crt, holds the cluster's CA in every active namespace, with
//     upstream's kubernetes.io/description annotation, and is restored when
//     deleted or changed.
//
// The ServiceAccount admission plugin (internal/apiserver) refuses pods
// whose account does not exist and projects kube-root-ca.crt into each pod
// beside its token. Both controllers leave a namespace alone once it is
// terminating, so that the namespace controller can empty it.
package serviceaccount

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Component names the service account controller, as upstream.
const Component = "serviceaccount-controller"

// Options tune the service account controller; zero values are upstream's
// defaults.
type Options struct {
	// ServiceAccounts are the accounts every namespace gets (`default`).
	ServiceAccounts []string
}

// Controller is upstream's service account controller.
type Controller struct {
	log        *slog.Logger
	client     kubernetes.Interface
	factory    informers.SharedInformerFactory
	accounts   corelisters.ServiceAccountLister
	namespaces corelisters.NamespaceLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string] // namespace names
	opts       Options
}

// New builds the controller on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), Component))
	if err != nil {
		return nil, err
	}
	if len(opts.ServiceAccounts) == 0 {
		opts.ServiceAccounts = []string{"default"}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	c := &Controller{
		log: log.With("controller", Component), client: client, factory: factory, opts: opts,
		accounts:   factory.Core().V1().ServiceAccounts().Lister(),
		namespaces: factory.Core().V1().Namespaces().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "serviceaccount"}),
	}
	saInformer := factory.Core().V1().ServiceAccounts().Informer()
	nsInformer := factory.Core().V1().Namespaces().Informer()
	c.synced = []cache.InformerSynced{saInformer.HasSynced, nsInformer.HasSynced}
	if _, err := saInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: c.accountDeleted}); err != nil {
		return nil, err
	}
	if _, err := nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.queue.Add(obj.(*corev1.Namespace).Name) },
		UpdateFunc: func(_, obj any) { c.queue.Add(obj.(*corev1.Namespace).Name) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Controller) accountDeleted(obj any) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		tomb, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if sa, ok = tomb.Obj.(*corev1.ServiceAccount); !ok {
			return
		}
	}
	c.queue.Add(sa.Namespace)
}

// Run keeps the accounts until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	runQueue(ctx, []informers.SharedInformerFactory{c.factory}, c.synced, c.queue, c.log, c.sync)
}

// sync creates the missing accounts of an active namespace.
func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Status.Phase != corev1.NamespaceActive {
		return nil
	}
	for _, account := range c.opts.ServiceAccounts {
		if _, err := c.accounts.ServiceAccounts(name).Get(account); err == nil {
			continue
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account, Namespace: name}}
		_, err := c.client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{})
		switch {
		case err == nil:
			c.log.Debug("created service account", "namespace", name, "name", account)
		case apierrors.IsAlreadyExists(err):
		case gone(err):
			return nil // the namespace went, or is going: nothing to keep
		default:
			return err
		}
	}
	return nil
}

// gone: a create failed because its namespace is missing or terminating.
func gone(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// runQueue starts the informers, waits for their caches and runs one
// worker on the queue of namespace names until ctx is done. A failed sync
// is retried with the queue's back-off.
func runQueue(ctx context.Context, factories []informers.SharedInformerFactory, synced []cache.InformerSynced,
	queue workqueue.TypedRateLimitingInterface[string], log *slog.Logger, sync func(context.Context, string) error) {
	for _, f := range factories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	for {
		key, quit := queue.Get()
		if quit {
			return
		}
		if err := sync(ctx, key); err != nil {
			if ctx.Err() == nil {
				log.Warn("syncing namespace", "namespace", key, "err", err)
			}
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}
