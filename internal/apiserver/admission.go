package apiserver

import (
	"context"
	"sort"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/moorage/moorage/internal/store"
)

// Admission that needs other objects than the one written, as upstream's
// admission plugins do it.

// Annotations that mark a StorageClass as the default one.
const (
	isDefaultClassAnnotation     = "storageclass.kubernetes.io/is-default-class"
	betaIsDefaultClassAnnotation = "storageclass.beta.kubernetes.io/is-default-class"
	betaStorageClassAnnotation   = "volume.beta.kubernetes.io/storage-class"
)

// admitCreate runs the admission plugins for a new object, after defaults
// and before validation.
func (s *Server) admitCreate(ctx context.Context, obj runtime.Object) error {
	if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
		return s.defaultStorageClass(ctx, pvc)
	}
	return nil
}

// defaultStorageClass is upstream's DefaultStorageClass plugin: a claim that
// names no class (storageClassName unset, not "", and no beta annotation)
// gets the default class; with several defaults, the newest (then the first
// by name) wins.
func (s *Server) defaultStorageClass(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Spec.StorageClassName != nil {
		return nil
	}
	if _, ok := pvc.Annotations[betaStorageClassAnnotation]; ok {
		return nil
	}
	res := s.resourceByPlural("storageclasses")
	lr, err := s.objects.store.List(ctx, res.KeyPrefix(""), store.ListOptions{})
	if err != nil {
		return err
	}
	var defaults []*storagev1.StorageClass
	for _, kv := range lr.KVs {
		obj, err := s.objects.decode(res, kv)
		if err != nil {
			return err
		}
		sc := obj.(*storagev1.StorageClass)
		if sc.Annotations[isDefaultClassAnnotation] == "true" || sc.Annotations[betaIsDefaultClassAnnotation] == "true" {
			defaults = append(defaults, sc)
		}
	}
	if len(defaults) == 0 {
		return nil
	}
	sort.Slice(defaults, func(i, j int) bool {
		ti, tj := defaults[i].CreationTimestamp, defaults[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return defaults[i].Name < defaults[j].Name
	})
	name := defaults[0].Name
	pvc.Spec.StorageClassName = &name
	return nil
}
