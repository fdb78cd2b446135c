package apiserver

import (
	"sync"

	"k8s.io/apimachinery/pkg/util/managedfields"
	"sigs.k8s.io/structured-merge-diff/v4/fieldpath"

	"github.com/moorage/moorage/internal/registry"
)

// fieldManagers holds one managedfields.FieldManager per resource and
// subresource ("" or "status"). The schema behind them is parsed on first use,
// not at start-up, so that `moorage up` is ready at once.
type fieldManagers struct {
	mu       sync.Mutex
	tc       managedfields.TypeConverter
	managers map[managerKey]*managedfields.FieldManager
}

type managerKey struct {
	res         *registry.Resource
	subresource string
}

func (s *Server) fieldManager(res *registry.Resource, subresource string) (*managedfields.FieldManager, error) {
	s.managersOnce.Do(func() {
		s.managers = &fieldManagers{managers: map[managerKey]*managedfields.FieldManager{}}
	})
	fms := s.managers
	fms.mu.Lock()
	defer fms.mu.Unlock()
	key := managerKey{res, subresource}
	if fm, ok := fms.managers[key]; ok {
		return fm, nil
	}
	if fms.tc == nil {
		fms.tc = newTypeConverter(s.scheme)
	}
	// As upstream: a main-resource write never owns status, and a status
	// write never owns the spec.
	var reset map[fieldpath.APIVersion]*fieldpath.Set
	if res.Status {
		path := "status"
		if subresource != "" { // status, or a subresource like it (approval)
			path = "spec"
		}
		reset = map[fieldpath.APIVersion]*fieldpath.Set{
			fieldpath.APIVersion(res.GVK.GroupVersion().String()): fieldpath.NewSet(fieldpath.MakePathOrDie(path)),
		}
	}
	filters := map[fieldpath.APIVersion]fieldpath.Filter{}
	for v, set := range reset {
		filters[v] = fieldpath.NewExcludeSetFilter(set)
	}
	fm, err := managedfields.NewDefaultFieldManager(fms.tc, s.scheme, s.scheme, s.scheme, res.GVK, res.GVK.GroupVersion(), subresource, filters)
	if err != nil {
		return nil, err
	}
	fms.managers[key] = fm
	return fm, nil
}
