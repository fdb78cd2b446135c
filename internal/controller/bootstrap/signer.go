// Package bootstrap is upstream's two bootstrap token controllers
// (pkg/controller/bootstrap):
//
//   - the bootstrap signer (bootstrap-signer-controller, Signer): the
//     ConfigMap kube-public/cluster-info carries, beside its kubeconfig, one
//     jws-kubeconfig-<token id> signature of it per bootstrap token usable
//     for signing (see package bootstraptoken), and no other;
//   - the token cleaner (token-cleaner-controller, Cleaner): bootstrap token
//     Secrets in kube-system are deleted once they expire.
//
// The server itself writes cluster-info's kubeconfig (internal/app); the
// signer only signs what is there, as upstream's signs what kubeadm wrote.
package bootstrap

import (
	"context"
	"log/slog"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moorage/moorage/internal/bootstraptoken"
)

// SignerComponent names the signer, as upstream.
const SignerComponent = "bootstrap-signer-controller"

// Options tune the signer; zero values are upstream's defaults.
type Options struct {
	// Now is the clock tokens expire by; time.Now when nil.
	Now func() time.Time
}

// Signer is upstream's bootstrap signer.
type Signer struct {
	log        *slog.Logger
	client     kubernetes.Interface
	factories  []informers.SharedInformerFactory
	configMaps corelisters.ConfigMapLister
	secrets    corelisters.SecretLister
	synced     []cache.InformerSynced
	// queue holds one key: cluster-info is the only object signed.
	queue workqueue.TypedRateLimitingInterface[string]
	now   func() time.Time
}

// tokenSecrets is a factory of bootstrap token Secrets in kube-system only.
func tokenSecrets(client kubernetes.Interface) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(metav1.NamespaceSystem),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeBootstrapToken)).String()
		}))
}

// New builds the signer on a client of the API.
func New(cfg *rest.Config, log *slog.Logger, opts Options) (*Signer, error) {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), SignerComponent))
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cmFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(metav1.NamespacePublic),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", bootstraptoken.ConfigMapClusterInfo).String()
		}))
	secretFactory := tokenSecrets(client)
	s := &Signer{
		log: log.With("controller", SignerComponent), client: client, now: opts.Now,
		factories:  []informers.SharedInformerFactory{cmFactory, secretFactory},
		configMaps: cmFactory.Core().V1().ConfigMaps().Lister(),
		secrets:    secretFactory.Core().V1().Secrets().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "bootstrap_signer_queue"}),
	}
	resync := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.queue.Add(bootstraptoken.ConfigMapClusterInfo) },
		UpdateFunc: func(any, any) { s.queue.Add(bootstraptoken.ConfigMapClusterInfo) },
		DeleteFunc: func(any) { s.queue.Add(bootstraptoken.ConfigMapClusterInfo) },
	}
	for _, inf := range []cache.SharedIndexInformer{cmFactory.Core().V1().ConfigMaps().Informer(), secretFactory.Core().V1().Secrets().Informer()} {
		if _, err := inf.AddEventHandler(resync); err != nil {
			return nil, err
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s, nil
}

// Run keeps the signatures until ctx is done. A token that expires is
// dropped at its expiration: the queue is resynced then.
func (s *Signer) Run(ctx context.Context) {
	for _, f := range s.factories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return
	}
	for {
		key, quit := s.queue.Get()
		if quit {
			return
		}
		next, err := s.sign(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.log.Warn("signing cluster-info", "err", err)
			}
			s.queue.AddRateLimited(key)
		case !next.IsZero():
			s.queue.Forget(key)
			s.queue.AddAfter(key, next.Sub(s.now())+time.Second)
		default:
			s.queue.Forget(key)
		}
		s.queue.Done(key)
	}
}

// sign writes the signatures cluster-info should carry, and returns when
// the next of the signing tokens expires (zero if none does).
func (s *Signer) sign(ctx context.Context) (time.Time, error) {
	cm, err := s.configMaps.ConfigMaps(metav1.NamespacePublic).Get(bootstraptoken.ConfigMapClusterInfo)
	if apierrors.IsNotFound(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	content, ok := cm.Data[bootstraptoken.KeyKubeconfig]
	if !ok {
		s.log.Info("no kubeconfig to sign in cluster-info")
		return time.Time{}, nil
	}
	secrets, err := s.secrets.Secrets(metav1.NamespaceSystem).List(labels.Everything())
	if err != nil {
		return time.Time{}, err
	}
	now := s.now()
	want := map[string]string{}
	for k, v := range cm.Data {
		if !strings.HasPrefix(k, bootstraptoken.JWSKeyPrefix) {
			want[k] = v
		}
	}
	var next time.Time
	for _, secret := range secrets {
		t, ok := bootstraptoken.Usable(secret, bootstraptoken.KeyUsageSigning, now)
		if !ok {
			continue
		}
		want[bootstraptoken.JWSKeyPrefix+t.ID] = bootstraptoken.Sign(content, t)
		if at, expires := bootstraptoken.Expiration(secret); expires && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if maps.Equal(want, cm.Data) {
		return next, nil
	}
	cm = cm.DeepCopy()
	cm.Data = want
	_, err = s.client.CoreV1().ConfigMaps(metav1.NamespacePublic).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return next, nil
	}
	return next, err
}
