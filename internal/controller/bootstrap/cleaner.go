package bootstrap

import (
	"context"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/bootstraptoken"
)

// CleanerComponent names the token cleaner, as upstream.
const CleanerComponent = "token-cleaner-controller"

// Cleaner is upstream's token cleaner.
type Cleaner struct {
	log     *slog.Logger
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	secrets corelisters.SecretLister
	synced  cache.InformerSynced
	queue   workqueue.TypedRateLimitingInterface[string] // Secret names in kube-system
	now     func() time.Time
}

// NewCleaner builds the token cleaner on a client of the API.
func NewCleaner(cfg *rest.Config, log *slog.Logger, opts Options) (*Cleaner, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), CleanerComponent))
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	factory := tokenSecrets(client)
	c := &Cleaner{
		log: log.With("controller", CleanerComponent), client: client, factory: factory, now: opts.Now,
		secrets: factory.Core().V1().Secrets().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "token_cleaner"}),
	}
	inf := factory.Core().V1().Secrets().Informer()
	c.synced = inf.HasSynced
	enqueue := func(obj any) {
		if s, ok := obj.(*corev1.Secret); ok {
			c.queue.Add(s.Name)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run deletes expired tokens until ctx is done; each token is looked at
// again when it expires.
func (c *Cleaner) Run(ctx context.Context) {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	for {
		name, quit := c.queue.Get()
		if quit {
			return
		}
		wait, err := c.clean(ctx, name)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				c.log.Warn("deleting expired bootstrap token", "secret", name, "err", err)
			}
			c.queue.AddRateLimited(name)
		case wait > 0:
			c.queue.Forget(name)
			c.queue.AddAfter(name, wait+time.Second)
		default:
			c.queue.Forget(name)
		}
		c.queue.Done(name)
	}
}

// clean deletes the Secret if it expired, or returns how long until it does.
func (c *Cleaner) clean(ctx context.Context, name string) (time.Duration, error) {
	secret, err := c.secrets.Secrets(metav1.NamespaceSystem).Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	at, expires := bootstraptoken.Expiration(secret)
	if !expires || secret.DeletionTimestamp != nil {
		return 0, nil
	}
	if left := at.Sub(c.now()); left > 0 {
		return left, nil
	}
	err = c.client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(secret.UID))})
	if err == nil {
		c.log.Info("deleted expired bootstrap token", "secret", name)
	}
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return 0, nil
	}
	return 0, err
}
