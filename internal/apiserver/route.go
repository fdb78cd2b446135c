package apiserver

import (
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moorage/moorage/internal/registry"
)

// request is one parsed resource request.
type request struct {
	res         *registry.Resource
	namespace   string // "" for cluster-scoped resources and all-namespace lists
	name        string // "" for collection requests
	subresource string // "", "status", "scale", "finalize", "binding", "token", pod proxies
	watchPath   bool   // the legacy /watch/ path prefix
	// createOnMissing lets an update create the object (server-side apply).
	createOnMissing bool
	// warnings are the resource's API warnings about the object written.
	warnings []string
}

// serveAPI handles /api/... and /apis/...: discovery or a resource request.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, path string) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if s.serveDiscovery(w, r, parts) {
		return
	}
	req, err := s.parse(parts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.serveResource(w, r, req)
}

// parse turns path segments into a request, following upstream's rules:
// /api/v1/[watch/][namespaces/NS/]RESOURCE[/NAME[/SUB]] and the same under
// /apis/GROUP/VERSION; /namespaces/NAME/{status,finalize} are namespace
// subresources, not namespaced resources.
func (s *Server) parse(parts []string) (*request, error) {
	var gv schema.GroupVersion
	switch {
	case parts[0] == "api" && len(parts) >= 2:
		gv, parts = schema.GroupVersion{Version: parts[1]}, parts[2:]
	case parts[0] == "apis" && len(parts) >= 3:
		gv, parts = schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:]
	default:
		return nil, pathNotFound("/" + strings.Join(parts, "/"))
	}
	req := &request{}
	if len(parts) > 0 && parts[0] == "watch" {
		req.watchPath, parts = true, parts[1:]
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 || (len(parts) == 3 && (parts[2] == "status" || parts[2] == "finalize")) {
			// The namespace object itself.
			req.name = parts[1]
			if len(parts) == 3 {
				req.subresource = parts[2]
			}
			parts = []string{"namespaces"}
		} else {
			req.namespace, parts = parts[1], parts[2:]
		}
	}
	if len(parts) == 0 || len(parts) > 3 {
		return nil, pathNotFound("")
	}
	res, ok := s.reg.Lookup(gv.WithResource(parts[0]))
	if !ok {
		return nil, pathNotFound("")
	}
	req.res = res
	if len(parts) >= 2 {
		req.name = parts[1]
	}
	if len(parts) == 3 {
		req.subresource = parts[2]
	}
	if req.namespace != "" && !res.Namespaced {
		return nil, pathNotFound("")
	}
	if res.Namespaced && req.namespace == "" && req.name != "" {
		// Only collections of namespaced resources span all namespaces.
		return nil, pathNotFound("")
	}
	if req.subresource != "" && !hasSubresource(res, req.subresource) {
		return nil, pathNotFound("")
	}
	return req, nil
}

func hasSubresource(res *registry.Resource, sub string) bool {
	for _, s := range subresources(res) {
		if s.name == sub {
			return true
		}
	}
	return false
}

// serveResource dispatches on the HTTP method.
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, req *request) {
	q := r.URL.Query()
	isWatch := req.watchPath || q.Get("watch") == "true" || q.Get("watch") == "1"
	var err error
	switch {
	case podProxySubresources[req.subresource] != "" && req.res.Plural == "pods":
		err = s.servePodProxy(w, r, req)
	case req.subresource == "token":
		err = s.createToken(w, r, req)
	case r.Method == http.MethodGet && req.name == "" && isWatch:
		err = s.watch(w, r, req)
	case r.Method == http.MethodGet && req.name == "":
		err = s.list(w, r, req)
	case r.Method == http.MethodGet && isWatch:
		// /watch/namespaces/ns/things/name: a watch of one object.
		err = s.watch(w, r, req)
	case r.Method == http.MethodGet:
		err = s.get(w, r, req)
	case r.Method == http.MethodPost && req.name == "":
		err = s.create(w, r, req)
	case r.Method == http.MethodPost && req.subresource == "binding":
		err = s.createBinding(w, r, req)
	case r.Method == http.MethodPut && req.name != "":
		err = s.update(w, r, req)
	case r.Method == http.MethodPatch && req.name != "":
		err = s.patch(w, r, req)
	case r.Method == http.MethodDelete && req.name != "" && req.subresource == "":
		err = s.delete(w, r, req)
	case r.Method == http.MethodDelete && req.name == "":
		err = s.deleteCollection(w, r, req)
	default:
		err = apierrors.NewMethodNotSupported(req.res.GroupResource(), strings.ToLower(r.Method))
	}
	if err != nil {
		s.writeError(w, r, err)
	}
}
