// Package apiserver serves moorage's Kubernetes-compatible HTTP API: routing,
// authentication, discovery, content negotiation (JSON, YAML, protobuf,
// Table), the REST verbs with upstream's semantics (create, get, list, watch,
// update, the three patch types and server-side apply, delete with finalizers
// and propagation), and the status and scale subresources.
//
// It is generic over the resources of package registry and keeps objects in a
// store.Store; nothing else in moorage reaches the store.
//
// Requests authenticate with a client certificate of the cluster CA or a
// bearer token: the admin token, a bootstrap token, or a service account
// token from the TokenRequest API (authn.go). There is no authorization
// (RBAC) in moorage: every authenticated user is served like the admin.
package apiserver

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/version"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/serviceaccount"
	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/user"
)

// MaxBodyBytes is the largest request body accepted, as upstream (3 MiB).
const MaxBodyBytes = 3 * 1024 * 1024

// Config is what a Server needs.
type Config struct {
	Store    store.Store
	Registry *registry.Registry
	Scheme   *runtime.Scheme
	// Authenticate reports whether a bearer token is the admin's (see
	// authn.go for the other tokens the server accepts).
	Authenticate func(token string) bool
	// ClientCAs verify client certificates (upstream's --client-ca-file):
	// a request with one it issued for client auth is its common name's.
	// Nil accepts no client certificates. The TLS listener should ask
	// for them (tls.VerifyClientCertIfGiven with the same pool).
	ClientCAs *x509.CertPool
	// ServiceAccountTokens signs the tokens of the TokenRequest API
	// (serviceaccounts/NAME/token) and checks them on requests; nil
	// serves neither.
	ServiceAccountTokens *serviceaccount.Signer
	// OpenAPI serves /openapi/...; nil answers 404.
	OpenAPI http.Handler
	// Version is served at /version.
	Version version.Info
	// ExternalAddress is advertised in /api's serverAddressByClientCIDRs.
	ExternalAddress string
	Logger          *slog.Logger
	// Nodes reaches node agents for pod logs and exec; nil answers 503.
	Nodes NodeConnector
	// SharedStore: other API servers write to the same store (etcd).
	// Bootstrap then leaves the repair of Service IP and port reservations
	// to RepairServiceAllocations, which the leader runs.
	SharedStore bool
}

// Server is the API server's HTTP handler.
type Server struct {
	cfg     Config
	reg     *registry.Registry
	scheme  *runtime.Scheme
	codecs  serializer.CodecFactory
	objects *objects
	hubs    *watchHubs
	log     *slog.Logger

	managersOnce sync.Once
	managers     *fieldManagers

	discovery discoveryDocs
	ready     chan struct{}
}

// New returns a Server; call MarkReady once start-up work is done.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Registry == nil || cfg.Scheme == nil || cfg.Authenticate == nil {
		return nil, errors.New("apiserver: Store, Registry, Scheme and Authenticate are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:     cfg,
		reg:     cfg.Registry,
		scheme:  cfg.Scheme,
		codecs:  serializer.NewCodecFactory(cfg.Scheme), // lenient; each SerializerInfo also has a strict one
		objects: newObjects(cfg.Store, cfg.Scheme),
		hubs:    &watchHubs{st: cfg.Store, hubs: map[*registry.Resource]*watchHub{}},
		log:     cfg.Logger,
		ready:   make(chan struct{}),
	}
	if err := s.buildDiscovery(); err != nil {
		return nil, err
	}
	return s, nil
}

// MarkReady makes /readyz answer ok.
func (s *Server) MarkReady() { close(s.ready) }

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			s.writeError(w, r, apierrors.NewInternalError(fmt.Errorf("%v", p)))
		}
	}()
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/healthz" || path == "/livez" || path == "/readyz" ||
		strings.HasPrefix(path, "/healthz/") || strings.HasPrefix(path, "/livez/") || strings.HasPrefix(path, "/readyz/"):
		s.serveHealth(w, r, path)
		return
	case path == "/version":
		writeJSON(w, http.StatusOK, s.cfg.Version)
		return
	}
	who, ok := s.authenticate(r)
	if !ok {
		if !anonymousAllowed(r, path) {
			s.writeError(w, r, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		who = anonymousUser
	}
	r = r.WithContext(user.WithUser(r.Context(), who))
	if r.ContentLength > MaxBodyBytes {
		s.writeError(w, r, tooLarge())
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)

	switch {
	case strings.HasPrefix(path, "/openapi/"):
		if s.cfg.OpenAPI == nil {
			s.writeError(w, r, apierrors.NewNotFound(schema.GroupResource{}, path))
			return
		}
		s.cfg.OpenAPI.ServeHTTP(w, r)
		return
	case path == "/api" || path == "/apis" || strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/apis/"):
		s.serveAPI(w, r, path)
		return
	}
	s.writeError(w, r, pathNotFound(path))
}

// TokenAuthenticator returns an Authenticate func accepting exactly tokens.
func TokenAuthenticator(tokens ...string) func(string) bool {
	return func(t string) bool {
		for _, want := range tokens {
			if subtle.ConstantTimeCompare([]byte(t), []byte(want)) == 1 {
				return true
			}
		}
		return false
	}
}

var emptyGR = schema.GroupResource{}

func pathNotFound(path string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: "the server could not find the requested resource",
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeUnexpectedServerResponse, Message: "404 page not found: " + path}}},
	}}
}

func tooLarge() error {
	return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", MaxBodyBytes))
}

// writeError answers with err as a metav1.Status.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		err = tooLarge()
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = apierrors.NewTimeoutError("request did not complete within the allowed duration", 0)
		} else {
			s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
			err = apierrors.NewInternalError(err)
		}
		errors.As(err, &status)
	}
	st := status.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	code := int(st.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, &st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(code)
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("\n"))
}

func writePlain(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text))
}

func now() metav1.Time { return metav1.NewTime(time.Now().Truncate(time.Second)) }
