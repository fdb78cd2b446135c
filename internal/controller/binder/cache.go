package binder

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/moorage/moorage/internal/pvmatch"
)

var everything = labels.Everything()

// latestCache keeps the newest version (by resourceVersion) of every volume
// and claim seen from the informers or written by this controller, so a sync
// never acts on a version older than one it wrote itself.
type latestCache struct {
	mu sync.RWMutex
	// index holds the cached volumes for matching; it changes only under mu,
	// together with volumes, so it never keeps a volume the cache dropped.
	index   *pvmatch.Index
	volumes map[string]*corev1.PersistentVolume
	claims  map[string]*corev1.PersistentVolumeClaim
	// pending holds the keys of claims without a volume, by class.
	pending map[string]map[string]bool
}

func newLatestCache(index *pvmatch.Index) *latestCache {
	return &latestCache{index: index, volumes: map[string]*corev1.PersistentVolume{}, claims: map[string]*corev1.PersistentVolumeClaim{}, pending: map[string]map[string]bool{}}
}

// trackPending files or unfiles a claim as waiting for a volume.
func (l *latestCache) trackPending(claim *corev1.PersistentVolumeClaim, waiting bool) {
	class, key := pvmatch.ClaimClass(claim), claimKey(claim)
	if !waiting {
		if set := l.pending[class]; set != nil {
			delete(set, key)
		}
		return
	}
	if l.pending[class] == nil {
		l.pending[class] = map[string]bool{}
	}
	l.pending[class][key] = true
}

// pendingClaims returns up to limit keys of claims of class without a volume.
func (l *latestCache) pendingClaims(class string, limit int) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []string
	for key := range l.pending[class] {
		if len(out) == limit {
			break
		}
		out = append(out, key)
	}
	return out
}

// put stores obj unless the cache has a newer version; it reports whether
// obj is now the cached one.
func (l *latestCache) put(obj runtime.Object) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch o := obj.(type) {
	case *corev1.PersistentVolume:
		if cur, ok := l.volumes[o.Name]; ok && newer(cur, o) {
			return false
		}
		l.volumes[o.Name] = o
		l.index.Upsert(o)
	case *corev1.PersistentVolumeClaim:
		key := claimKey(o)
		if cur, ok := l.claims[key]; ok && newer(cur, o) {
			return false
		}
		if cur, ok := l.claims[key]; ok && pvmatch.ClaimClass(cur) != pvmatch.ClaimClass(o) {
			l.trackPending(cur, false)
		}
		l.claims[key] = o
		l.trackPending(o, o.Spec.VolumeName == "" && o.DeletionTimestamp == nil)
	}
	return true
}

func (l *latestCache) remove(obj runtime.Object) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch o := obj.(type) {
	case *corev1.PersistentVolume:
		delete(l.volumes, o.Name)
		l.index.Delete(o.Name)
	case *corev1.PersistentVolumeClaim:
		delete(l.claims, claimKey(o))
		l.trackPending(o, false)
	}
}

func (l *latestCache) volume(name string) *corev1.PersistentVolume {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.volumes[name]
}

func (l *latestCache) claim(key string) *corev1.PersistentVolumeClaim {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.claims[key]
}

func metaRV(obj runtime.Object) string {
	m, err := meta.Accessor(obj)
	if err != nil {
		return ""
	}
	return m.GetResourceVersion()
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
