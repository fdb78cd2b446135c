// Package sharedinformers lets the server's controllers watch each kind once.
//
// kube-controller-manager gives all its controllers one informer factory, so
// that a pod or a claim is listed, watched, decoded and cached once for the
// whole process rather than once per controller. moorage's controllers run
// in one process too and do the same: each takes an optional factory (nil:
// it makes its own, as when it runs alone in a test), and indexes that more
// than one of them needs are defined here once.
package sharedinformers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Resync is the shared factory's default resync period, kube-controller-
// manager's minimum. A factory whose default is 0 never resyncs, not even
// for handlers that ask for a period of their own; a controller that needs
// one registers its handler with AddEventHandlerWithResyncPeriod.
const Resync = 12 * time.Hour

// New makes the factory the controllers of one process share.
func New(client kubernetes.Interface) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactory(client, Resync)
}

// Or returns shared, or a factory of the controller's own, made as New
// makes the shared one, when it is nil.
func Or(shared informers.SharedInformerFactory, client kubernetes.Interface) informers.SharedInformerFactory {
	if shared != nil {
		return shared
	}
	return New(client)
}

// PodsByNode is the name of the pod index by spec.nodeName.
const PodsByNode = "spec.nodeName"

// IndexPodsByNode adds the PodsByNode index to a pod informer unless another
// controller has added it already.
func IndexPodsByNode(pods cache.SharedIndexInformer) error {
	if _, ok := pods.GetIndexer().GetIndexers()[PodsByNode]; ok {
		return nil
	}
	return pods.AddIndexers(cache.Indexers{PodsByNode: podNode})
}

func podNode(obj any) ([]string, error) {
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" {
		return []string{pod.Spec.NodeName}, nil
	}
	return nil, nil
}
