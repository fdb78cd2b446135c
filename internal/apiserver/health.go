package apiserver

import (
	"fmt"
	"net/http"
	"strings"
)

// healthCheck is one named check of /healthz, /livez and /readyz.
type healthCheck struct {
	name string
	run  func(r *http.Request) error
}

func (s *Server) healthChecks(endpoint string) []healthCheck {
	checks := []healthCheck{
		{"ping", func(*http.Request) error { return nil }},
		{"log", func(*http.Request) error { return nil }},
		{"store", func(r *http.Request) error {
			_, err := s.objects.store.CurrentRevision(r.Context())
			return err
		}},
	}
	if endpoint == "readyz" {
		checks = append(checks, healthCheck{"poststarthook/bootstrap", func(*http.Request) error {
			select {
			case <-s.ready:
				return nil
			default:
				return fmt.Errorf("not finished")
			}
		}})
	}
	return checks
}

// serveHealth answers /healthz, /livez and /readyz as upstream: "ok", the
// list of checks with ?verbose, one check at /readyz/<name>, and 500 naming
// the failed checks.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request, path string) {
	endpoint, only, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	var b strings.Builder
	failed := false
	found := false
	for _, c := range s.healthChecks(endpoint) {
		if only != "" && c.name != only {
			continue
		}
		found = true
		if err := c.run(r); err != nil {
			failed = true
			fmt.Fprintf(&b, "[-]%s failed: reason withheld\n", c.name)
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.name)
		}
	}
	switch {
	case !found:
		writePlain(w, http.StatusNotFound, "404 page not found\n")
	case failed:
		writePlain(w, http.StatusInternalServerError, b.String()+endpoint+" check failed\n")
	case only != "" || r.URL.Query().Has("verbose"):
		if only != "" {
			writePlain(w, http.StatusOK, "ok")
			return
		}
		writePlain(w, http.StatusOK, b.String()+endpoint+" check passed\n")
	default:
		writePlain(w, http.StatusOK, "ok")
	}
}
