package apiserver

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// SystemNamespaces exist in every cluster, as upstream.
var SystemNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// Bootstrap creates what every cluster starts with: the system namespaces.
func (s *Server) Bootstrap(ctx context.Context) error {
	res, _ := s.reg.Lookup(corev1.SchemeGroupVersion.WithResource("namespaces"))
	req := &request{res: res}
	for _, name := range SystemNamespaces {
		if _, _, err := s.objects.get(ctx, res, "", name); err == nil {
			continue
		}
		ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
		_, err := s.createObject(ctx, req, ns, writeOptions{fieldManager: "moorage"}, func(obj runtime.Object) (runtime.Object, error) { return obj, nil })
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}
