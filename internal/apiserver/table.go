package apiserver

import (
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/registry/printers"
)

// toTable prints objects as a meta.k8s.io/v1 Table with upstream's columns;
// rows carry the object as the request's includeObject asks (metadata by
// default, which kubectl needs for -A, --show-labels and -L).
func (s *Server) toTable(r *http.Request, res *registry.Resource, objs []runtime.Object, withHeaders bool) (*metav1.Table, error) {
	p, ok := printers.For(res.GroupResource())
	if !ok {
		p = printers.Default()
	}
	include := metav1.IncludeObjectPolicy(r.URL.Query().Get("includeObject"))
	switch include {
	case "":
		include = metav1.IncludeMetadata
	case metav1.IncludeNone, metav1.IncludeMetadata, metav1.IncludeObject:
	default:
		return nil, apierrors.NewBadRequest("includeObject must be one of None, Metadata or Object")
	}
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "Table"}}
	if withHeaders {
		t.ColumnDefinitions = p.Columns
	}
	t.Rows = make([]metav1.TableRow, 0, len(objs))
	now := time.Now()
	for _, obj := range objs {
		cells, err := p.Row(obj, now)
		if err != nil {
			return nil, err
		}
		row := metav1.TableRow{Cells: cells}
		switch include {
		case metav1.IncludeMetadata:
			row.Object.Object = toPartial(obj)
		case metav1.IncludeObject:
			obj.GetObjectKind().SetGroupVersionKind(res.GVK)
			row.Object.Object = obj
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}
