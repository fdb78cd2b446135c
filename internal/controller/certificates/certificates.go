// Package certificates holds upstream's CertificateSigningRequest
// controllers: the approver (csrapproving), which approves the client
// certificates nodes ask for when they join with a bootstrap token or
// renew their own, and the signer (csrsigning), which signs approved
// requests of the kubernetes.io signers with the cluster CA.
//
// Both are the same loop over CSRs with a different handler, as upstream's
// CertificateController: a request that already has its certificate is
// done; a handler error retries the request with back-off.
package certificates

import (
	"context"
	"log/slog"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	certificateslisters "k8s.io/client-go/listers/certificates/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/controller/queue"
	"github.com/moorage/moorage/internal/controller/sharedinformers"
)

// Options configure a controller; zero values are upstream's defaults.
type Options struct {
	// Informers, if set, are shared with the process's other controllers
	// (see package sharedinformers); nil makes the controller its own.
	Informers informers.SharedInformerFactory
}

// handler acts on one CSR that has no certificate yet; csr is a copy it
// may change.
type handler func(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) error

// Controller runs a handler for every CertificateSigningRequest that has
// no certificate yet.
type Controller struct {
	name    string
	log     *slog.Logger
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	csrs    certificateslisters.CertificateSigningRequestLister
	synced  cache.InformerSynced
	queue   workqueue.TypedRateLimitingInterface[string]
	handle  handler
}

func newController(cfg *rest.Config, log *slog.Logger, name string, opts Options) (*Controller, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), name))
	if err != nil {
		return nil, err
	}
	factory := sharedinformers.Or(opts.Informers, client)
	informer := factory.Certificates().V1().CertificateSigningRequests()
	c := &Controller{
		name: name, log: log.With("controller", name), client: client, factory: factory,
		csrs: informer.Lister(), synced: informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
	}
	enqueue := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
			c.queue.Add(csr.Name)
		}
	}
	_, err = informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	return c, err
}

// Run handles requests until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	go queue.Work(ctx, c.queue, c.sync, func(name string, err error) {
		c.log.Info("handling certificate signing request failed", "csr", name, "err", err)
	})
	<-ctx.Done()
}

func (c *Controller) sync(ctx context.Context, name string) error {
	csr, err := c.csrs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(csr.Status.Certificate) > 0 {
		return nil // issued: nothing left to do
	}
	return c.handle(ctx, csr.DeepCopy())
}

// approval tells whether csr has an Approved or a Denied condition.
func approval(csr *certificatesv1.CertificateSigningRequest) (approved, denied bool) {
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved:
			approved = true
		case certificatesv1.CertificateDenied:
			denied = true
		}
	}
	return approved, denied
}

// hasTrueCondition tells whether csr has a condition of type t that is True.
func hasTrueCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && (c.Status == "" || c.Status == corev1.ConditionTrue) {
			return true
		}
	}
	return false
}
