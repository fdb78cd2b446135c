package app

import (
	"context"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/controller/bootstrap"
	"github.com/moorage/moorage/internal/controller/serviceaccount"
)

// startIdentity starts what gives pods and joining agents their identity:
// the default ServiceAccount and kube-root-ca.crt in every namespace, the
// signatures of cluster-info (publishClusterInfo) that `moorage agent
// --token` discovers the server with, and the bootstrap token cleaner.
func startIdentity(ctx context.Context, wg *sync.WaitGroup, cfg *rest.Config, caPEM []byte, log *slog.Logger) error {
	accounts, err := serviceaccount.New(cfg, log, serviceaccount.Options{})
	if err != nil {
		return err
	}
	rootCA, err := serviceaccount.NewPublisher(cfg, log, serviceaccount.PublisherOptions{RootCA: caPEM})
	if err != nil {
		return err
	}
	signer, err := bootstrap.New(cfg, log, bootstrap.Options{})
	if err != nil {
		return err
	}
	cleaner, err := bootstrap.NewCleaner(cfg, log, bootstrap.Options{})
	if err != nil {
		return err
	}
	for _, run := range []func(context.Context){accounts.Run, rootCA.Run, signer.Run, cleaner.Run} {
		wg.Go(func() { run(ctx) })
	}
	return nil
}

// publishClusterInfo writes kube-public/cluster-info's kubeconfig, as
// kubeadm does at init; the bootstrap signer adds the signatures. A server
// whose URL changed (another port) replaces it.
func publishClusterInfo(ctx context.Context, cfg *rest.Config, url string, caPEM []byte) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	kubeconfig, err := bootstraptoken.ClusterInfoKubeconfig(url, caPEM)
	if err != nil {
		return err
	}
	cms := client.CoreV1().ConfigMaps(metav1.NamespacePublic)
	for {
		cur, err := cms.Get(ctx, bootstraptoken.ConfigMapClusterInfo, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: bootstraptoken.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic},
				Data:       map[string]string{bootstraptoken.KeyKubeconfig: kubeconfig},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		if cur.Data[bootstraptoken.KeyKubeconfig] == kubeconfig {
			return nil
		}
		if cur.Data == nil {
			cur.Data = map[string]string{}
		}
		cur.Data[bootstraptoken.KeyKubeconfig] = kubeconfig
		_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		return err
	}
}
