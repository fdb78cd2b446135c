// Package app wires moorage's parts into the processes the CLI starts: the
// server (API server, store, controllers) and, in `moorage up`, the agent. It
// is the only package that imports everything.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/apiserver"
	"github.com/moorage/moorage/internal/apiserver/openapi"
	"github.com/moorage/moorage/internal/fsutil"
	"github.com/moorage/moorage/internal/loopback"
	"github.com/moorage/moorage/internal/memtrim"
	"github.com/moorage/moorage/internal/pki"
	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/serviceaccount"
	"github.com/moorage/moorage/internal/store"
	"github.com/moorage/moorage/internal/store/embedded"
	"github.com/moorage/moorage/internal/store/etcd"
)

// Version is moorage's own version, set at build time with -ldflags.
var Version = "v0.1.0-dev"

// KubernetesVersion is the Kubernetes API version moorage serves; /version
// reports it, and the kubectl dispatcher picks its kubectl by its minor.
var KubernetesVersion = version.Info{Major: "1", Minor: "33", GitVersion: "v1.33.0-moorage"}

// ServerOptions configure a server.
type ServerOptions struct {
	DataDir string // state, certificates, kubeconfig
	Listen  string // host:port; port 0 picks a free one
	Logger  *slog.Logger
	// Agent runs this machine's node agent in the process too (moorage up),
	// with its state under DataDir/agent.
	Agent bool
	// NodeName names this machine's Node; "" means the host name.
	NodeName string
	// ShimCommand starts the container shim (the moorage binary's hidden
	// container-shim command); needed with Agent.
	ShimCommand []string
	// NoBuiltinCSIDriver leaves the built-in CSI driver
	// local.csi.moorage.io (and its provisioner) out of the agent.
	NoBuiltinCSIDriver bool
	// DriverControllers runs the sidecar controllers of each CSI driver
	// the agent registers (agent.Options.DriverControllers).
	DriverControllers func(ctx context.Context, d agent.CSIDriver) error
	// WithoutControllers leaves out the server's controllers of these
	// names (upstream's, e.g. "statefulset-controller"): for tests that
	// run their own.
	WithoutControllers []string
	// Etcd, if it has endpoints, keeps the objects in an etcd cluster
	// instead of the embedded store (DataDir/state.db). Several servers
	// may share one etcd (and prefix): they share the CA, the admin token
	// and the service account key through it (see clusterSecrets), and
	// elect one leader to run the controllers and the scheduler.
	Etcd EtcdOptions
	// LeaderElection times that election.
	LeaderElection LeaderElection
	// Tuning sets the controllers' flags.
	Tuning Tuning
}

// EtcdOptions say how to reach etcd (kube-apiserver's --etcd-* flags).
type EtcdOptions struct {
	Endpoints []string
	// Prefix of every key; "" means DefaultEtcdPrefix.
	Prefix                    string
	CAFile, CertFile, KeyFile string
}

// DefaultEtcdPrefix is the prefix of moorage's keys in etcd.
const DefaultEtcdPrefix = etcd.DefaultPrefix

// Server is a running moorage server.
type Server struct {
	URL        string
	Kubeconfig string
	// Loopback is a client configuration for this server over the network
	// (TLS to its address, the admin token), as an external client has.
	Loopback *rest.Config
	Ready    time.Duration
	// Identity is this server's holderIdentity in the leader Lease, when
	// it shares etcd with others ("" with the embedded store).
	Identity string
	// Agent is this machine's node agent, when the server runs one.
	Agent *agent.Agent
	// agentAPI is the local agent's own API, once it runs.
	agentAPI atomic.Pointer[localAgent]
	// remoteAgents reaches the agents of other machines.
	remoteAgents atomic.Pointer[remoteAgents]

	log    *slog.Logger
	http   *http.Server
	store  store.Store
	lock   *fsutil.Lock
	cancel context.CancelFunc
	// cancelServe ends the context of every request in flight.
	cancelServe context.CancelFunc
	wg          sync.WaitGroup
	// leading is the leader election and what it runs: Shutdown waits for
	// it before it stops serving, so that the lease is given up through
	// the API.
	leading sync.WaitGroup
}

// inClusterNames are the server's names for pods, which reach it through
// the kubernetes Service (the agents proxy it): its cluster IP and DNS
// names, as upstream's serving certificate has them.
var inClusterNames = []string{"10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

// StartServer starts the API server on opts.Listen with its state under
// opts.DataDir and returns once it serves requests.
func StartServer(ctx context.Context, opts ServerOptions) (*Server, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	lock, err := fsutil.TryLock(filepath.Join(dir, "moorage.lock"))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("another moorage is already running with data dir %s: %w; stop it first, or use another --data-dir", dir, err)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{log: log, lock: lock}
	ok := false
	defer func() {
		if !ok {
			s.closeResources()
		}
	}()

	if e := opts.Etcd; len(e.Endpoints) > 0 {
		s.store, err = etcd.Open(ctx, etcd.Config{Endpoints: e.Endpoints, Prefix: e.Prefix, CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile})
	} else {
		s.store, err = embedded.Open(filepath.Join(dir, "state.db"), embedded.Options{})
	}
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	secrets, err := shareSecrets(ctx, s.store, dir)
	if err != nil {
		return nil, err
	}
	token, caPEM := secrets.Token, secrets.CA.CertPEM
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", opts.Listen, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	cert, err := pki.ServingCert(pki.Files{Dir: filepath.Join(dir, "tls")}, secrets.CA, append([]string{host, "127.0.0.1", "::1", "localhost"}, inClusterNames...))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("certificates: %w", err)
	}
	s.URL = "https://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
	saTokens, err := serviceaccount.NewSigner(secrets.SAKey)
	if err != nil {
		ln.Close()
		return nil, err
	}

	scheme := NewScheme()
	reg := registry.Builtin()
	info := KubernetesVersion
	info.GoVersion, info.Compiler, info.Platform = runtime.Version(), runtime.Compiler, runtime.GOOS+"/"+runtime.GOARCH
	info.GitTreeState, info.BuildDate = "clean", "1970-01-01T00:00:00Z"
	api, err := apiserver.New(apiserver.Config{
		Store: s.store, Registry: reg, Scheme: scheme,
		Authenticate:         apiserver.TokenAuthenticator(token),
		ServiceAccountTokens: saTokens,
		OpenAPI:              lazyOpenAPI(reg),
		Version:              info,
		ExternalAddress:      net.JoinHostPort(host, strconv.Itoa(addr.Port)),
		Logger:               log,
		Nodes:                s.nodeHandler,
		SharedStore:          len(opts.Etcd.Endpoints) > 0,
		ClientCAs:            secrets.CA.Pool(),
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	// Requests run in serveCtx, which Shutdown cancels first so that long
	// watches end at once instead of holding the shutdown up.
	serveCtx, cancelServe := context.WithCancel(context.Background())
	s.cancelServe = cancelServe
	s.http = &http.Server{
		Handler:           api,
		BaseContext:       func(net.Listener) context.Context { return serveCtx },
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: secrets.CA.Pool()},
		ReadHeaderTimeout: 30 * time.Second,
		// Informers keep one watch per resource on one connection; upstream
		// allows 1,000 streams per HTTP/2 connection (Go's default is 250).
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("API server stopped", "err", err)
		}
	}()

	if err := api.Bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	s.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(s.Kubeconfig, s.URL, caPEM, token); err != nil {
		return nil, err
	}
	s.Loopback = restConfig(s.URL, caPEM, token)
	// The server's own controllers call the handler in-process: the same
	// requests, without TLS and sockets in between.
	inProcess := rest.CopyConfig(s.Loopback)
	inProcess.Host, inProcess.TLSClientConfig = "http://in-process", rest.TLSClientConfig{}
	inProcess.Transport = &loopback.Transport{Handler: api, BaseContext: func() context.Context { return serveCtx }}
	api.MarkReady()

	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := publishClusterInfo(ctx, inProcess, s.URL, caPEM); err != nil {
		return nil, err
	}
	// What changes the cluster on its own (controllers, the scheduler, the
	// identity controllers, compaction) runs once per cluster: in the one
	// server of an embedded store, or in the leader of those sharing etcd.
	startOnce := func(ctx context.Context, wg *sync.WaitGroup) error {
		wg.Go(func() { store.RunCompactor(ctx, s.store, 5*time.Minute) })
		if err := startControllers(ctx, wg, inProcess, reg, log, opts.WithoutControllers, opts.Tuning); err != nil {
			return err
		}
		if err := startCertificateControllers(ctx, wg, inProcess, secrets.CA, log); err != nil {
			return err
		}
		return startIdentity(ctx, wg, inProcess, caPEM, log)
	}
	if len(opts.Etcd.Endpoints) == 0 {
		// Nothing else can share the store: the data dir is locked.
		if err := startOnce(bg, &s.wg); err != nil {
			return nil, err
		}
	} else {
		if s.Identity, err = leaderIdentity(dir); err != nil {
			return nil, err
		}
		err := runWhileLeading(bg, &s.leading, inProcess, opts.LeaderElection, s.Identity, log, func(term context.Context) {
			var wg sync.WaitGroup
			if err := startOnce(term, &wg); err != nil {
				log.Error("starting the controllers", "err", err)
			}
			wg.Go(func() { repairServiceAllocations(term, api, log) })
			<-term.Done()
			wg.Wait()
		})
		if err != nil {
			return nil, err
		}
	}
	nodesClient, err := kubernetes.NewForConfig(inProcess)
	if err != nil {
		return nil, err
	}
	kubeletTLS, err := kubeletClientTLS(secrets.CA)
	if err != nil {
		return nil, err
	}
	s.remoteAgents.Store(&remoteAgents{client: nodesClient, token: token, tls: kubeletTLS})
	if opts.Agent {
		node, err := agent.New(inProcess, log, agent.Options{
			NodeName: opts.NodeName, DataDir: filepath.Join(dir, "agent"),
			Version: KubernetesVersion.GitVersion, RuntimeVersion: "runc://1",
			ShimCommand:        opts.ShimCommand,
			NoBuiltinCSIDriver: opts.NoBuiltinCSIDriver, DriverVersion: Version,
			DriverControllers: opts.DriverControllers,
		})
		if err != nil {
			return nil, fmt.Errorf("node agent: %w", err)
		}
		s.Agent = node
		s.agentAPI.Store(&localAgent{name: node.NodeName(), api: node.Handler()})
		s.wg.Go(func() {
			if err := node.Run(bg); err != nil && bg.Err() == nil {
				log.Error("node agent stopped", "err", err)
			}
		})
	}
	s.Ready = time.Since(start)
	ok = true
	// Give back the executable pages only start-up touched (see memtrim),
	// once the first requests have had a moment to fault in what they use.
	time.AfterFunc(2*time.Second, func() { _, _ = memtrim.ReleaseExecutablePages() })
	return s, nil
}

type localAgent struct {
	name string
	api  http.Handler
}

// nodeHandler reaches a node's agent: only this process's own for now.
func (s *Server) nodeHandler(name string) (http.Handler, error) {
	if local := s.agentAPI.Load(); local != nil && local.name == name {
		return local.api, nil
	}
	if remote := s.remoteAgents.Load(); remote != nil {
		return remote.handler(name)
	}
	return nil, fmt.Errorf("node %q has no agent reachable from this server", name)
}

// Shutdown stops serving, ends controllers and releases the store and lock.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.cancel != nil {
		s.cancel()
	}
	s.leading.Wait()
	s.cancelServe()
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	s.wg.Wait()
	s.closeResources()
	return err
}

func (s *Server) closeResources() {
	if s.cancelServe != nil {
		s.cancelServe()
	}
	if s.store != nil {
		_ = s.store.Close()
	}
	if s.lock != nil {
		_ = s.lock.Unlock()
	}
}

// lazyOpenAPI builds the OpenAPI documents on first use: only kubectl's
// create/apply/edit/explain need them, and start-up stays fast.
func lazyOpenAPI(reg *registry.Registry) http.Handler {
	var once sync.Once
	var h http.Handler
	var buildErr error
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			var rs []openapi.Resource
			for _, res := range reg.All() {
				r := openapi.Resource{GVK: res.GVK, ListGVK: res.ListGVK(), Plural: res.Plural, Namespaced: res.Namespaced, Verbs: res.Verbs()}
				if res.Status {
					r.Subresources = append(r.Subresources, "status")
				}
				if res.Scale != nil {
					r.Subresources = append(r.Subresources, "scale")
				}
				if res.Plural == "serviceaccounts" && res.GVK.Group == "" {
					r.Subresources = append(r.Subresources, "token") // the TokenRequest API
				}
				rs = append(rs, r)
			}
			h, buildErr = openapi.New(NewScheme(), rs)
		})
		if buildErr != nil {
			http.Error(w, buildErr.Error(), http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// CompactNow discards all history up to the current revision: watches and
// paged lists from older resourceVersions then get 410 Gone, as after a long
// time in production. For tests and benchmarks.
func (s *Server) CompactNow(ctx context.Context) error {
	rev, err := s.store.CurrentRevision(ctx)
	if err != nil {
		return err
	}
	return s.store.Compact(ctx, rev)
}
