package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
)

// objects keeps typed API objects in the Store: protobuf-encoded (as upstream
// keeps them in etcd), without resourceVersion, which is the key's ModRevision.
type objects struct {
	store  store.Store
	scheme *runtime.Scheme
	proto  *protobuf.Serializer
	shared *decodeCache // for watches
}

func newObjects(s store.Store, scheme *runtime.Scheme) *objects {
	return &objects{store: s, scheme: scheme, proto: protobuf.NewSerializer(scheme, scheme), shared: newDecodeCache(decodeCacheSize)}
}

// encode serialises obj for storage. obj's resourceVersion is cleared on a copy.
func (o *objects) encode(res *registry.Resource, obj runtime.Object) ([]byte, error) {
	storageObj := obj
	if res.StorageResource != nil {
		var err error
		if storageObj, err = res.ToStorage(obj); err != nil {
			return nil, err
		}
		res = res.StorageResource
	}
	m, err := meta.Accessor(storageObj)
	if err != nil {
		return nil, err
	}
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	storageObj.GetObjectKind().SetGroupVersionKind(res.GVK)
	data, err := runtime.Encode(o.proto, storageObj)
	m.SetResourceVersion(rv)
	return data, err
}

// decode turns a stored value back into the resource's typed object with its
// resourceVersion set.
func (o *objects) decode(res *registry.Resource, kv store.KeyValue) (runtime.Object, error) {
	storageRes := res
	if res.StorageResource != nil {
		storageRes = res.StorageResource
	}
	into, err := o.scheme.New(storageRes.GVK)
	if err != nil {
		return nil, err
	}
	obj, _, err := o.proto.Decode(kv.Value, nil, into)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	if res.StorageResource != nil {
		if obj, err = res.FromStorage(obj); err != nil {
			return nil, err
		}
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	m.SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
	obj.GetObjectKind().SetGroupVersionKind(res.GVK)
	return obj, nil
}

// decodeShared is decode through the cache shared by watches: the object
// returned may be shared and must not be modified.
func (o *objects) decodeShared(res *registry.Resource, kv store.KeyValue) (*decoded, error) {
	return o.shared.decode(o, res, kv)
}

// get reads one object; a missing one is the API's NotFound.
func (o *objects) get(ctx context.Context, res *registry.Resource, ns, name string) (runtime.Object, store.KeyValue, error) {
	kv, err := o.store.Get(ctx, res.Key(ns, name))
	if errors.Is(err, store.ErrNotFound) {
		return nil, kv, apierrors.NewNotFound(res.GroupResource(), name)
	}
	if err != nil {
		return nil, kv, err
	}
	obj, err := o.decode(res, kv)
	return obj, kv, err
}

// storeError maps a store error on one object to the API's error.
func storeError(res *registry.Resource, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apierrors.NewNotFound(res.GroupResource(), name)
	case errors.Is(err, store.ErrExists):
		return apierrors.NewAlreadyExists(res.GroupResource(), name)
	case errors.Is(err, store.ErrConflict):
		return apierrors.NewConflict(res.GroupResource(), name, errors.New(errModified))
	case errors.Is(err, store.ErrCompacted):
		return apierrors.NewResourceExpired(err.Error())
	}
	return err
}

const errModified = "the object has been modified; please apply your changes to the latest version and try again"
