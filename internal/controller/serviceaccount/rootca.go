package serviceaccount

import (
	"context"
	"errors"
	"log/slog"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// PublisherComponent names the root CA publisher, as upstream.
const PublisherComponent = "root-ca-cert-publisher"

// The ConfigMap the publisher keeps in every namespace, as upstream.
const (
	RootCAConfigMap       = "kube-root-ca.crt"
	RootCAKey             = "ca.crt"
	DescriptionAnnotation = "kubernetes.io/description"
	Description           = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. " +
		"No other usage is guaranteed across distributions of Kubernetes clusters."
)

// PublisherOptions configure the root CA publisher.
type PublisherOptions struct {
	// RootCA is the PEM of the cluster's CA; required.
	RootCA []byte
}

// Publisher is upstream's root CA certificate publisher.
type Publisher struct {
	log        *slog.Logger
	client     kubernetes.Interface
	factories  []informers.SharedInformerFactory
	configMaps corelisters.ConfigMapLister
	namespaces corelisters.NamespaceLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string] // namespace names
	rootCA     string
}

// NewPublisher builds the publisher on a client of the API.
func NewPublisher(cfg *rest.Config, log *slog.Logger, opts PublisherOptions) (*Publisher, error) {
	if len(opts.RootCA) == 0 {
		return nil, errors.New(PublisherComponent + ": RootCA is required")
	}
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), PublisherComponent))
	if err != nil {
		return nil, err
	}
	// Only the ConfigMaps it keeps: a cluster may hold many others.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", RootCAConfigMap).String()
	}))
	nsFactory := informers.NewSharedInformerFactory(client, 0)
	p := &Publisher{
		log: log.With("controller", PublisherComponent), client: client, rootCA: string(opts.RootCA),
		factories:  []informers.SharedInformerFactory{factory, nsFactory},
		configMaps: factory.Core().V1().ConfigMaps().Lister(),
		namespaces: nsFactory.Core().V1().Namespaces().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "root_ca_cert_publisher"}),
	}
	cmInformer := factory.Core().V1().ConfigMaps().Informer()
	nsInformer := nsFactory.Core().V1().Namespaces().Informer()
	p.synced = []cache.InformerSynced{cmInformer.HasSynced, nsInformer.HasSynced}
	if _, err := cmInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { p.queue.Add(obj.(*corev1.ConfigMap).Namespace) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				p.queue.Add(cm.Namespace)
			}
		},
	}); err != nil {
		return nil, err
	}
	if _, err := nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { p.queue.Add(obj.(*corev1.Namespace).Name) },
		UpdateFunc: func(_, obj any) {
			if ns := obj.(*corev1.Namespace); ns.Status.Phase == corev1.NamespaceActive {
				p.queue.Add(ns.Name)
			}
		},
	}); err != nil {
		return nil, err
	}
	return p, nil
}

// Run keeps the ConfigMaps until ctx is done.
func (p *Publisher) Run(ctx context.Context) {
	runQueue(ctx, p.factories, p.synced, p.queue, p.log, p.sync)
}

// sync makes a namespace's kube-root-ca.crt hold the CA and the
// description, and only them.
func (p *Publisher) sync(ctx context.Context, ns string) error {
	if n, err := p.namespaces.Get(ns); apierrors.IsNotFound(err) || (err == nil && n.Status.Phase != corev1.NamespaceActive) {
		return nil
	}
	want := map[string]string{RootCAKey: p.rootCA}
	cm, err := p.configMaps.ConfigMaps(ns).Get(RootCAConfigMap)
	if apierrors.IsNotFound(err) {
		_, err = p.client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCAConfigMap, Annotations: map[string]string{DescriptionAnnotation: Description}},
			Data:       want,
		}, metav1.CreateOptions{})
		if gone(err) || apierrors.IsAlreadyExists(err) {
			return nil // an update, if one is needed, comes as an event
		}
		return err
	}
	if err != nil {
		return err
	}
	if maps.Equal(cm.Data, want) && cm.Annotations[DescriptionAnnotation] != "" {
		return nil
	}
	cm = cm.DeepCopy()
	cm.Data = want
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[DescriptionAnnotation] = Description
	_, err = p.client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: the delete event brings it back
	}
	return err
}
