// Package registration is the kubelet's plugin-registration protocol, as
// CSI drivers use it to announce themselves on a node: the driver's side
// (upstream's node-driver-registrar sidecar) serves a small gRPC service
// on a socket in the node's registration directory
// (<kubelet root>/plugins_registry/<driver>-reg.sock); the node (the
// kubelet's plugin watcher, here the agent) finds the socket, asks it for
// the driver's name, CSI endpoint and supported versions (GetInfo), and
// tells it whether the driver was registered (NotifyRegistrationStatus).
// The messages are k8s.io/kubelet's pluginregistration/v1.
package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/version"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// SupportedVersions are the CSI versions a driver registers with (those
// node-driver-registrar reports).
var SupportedVersions = []string{"1.0.0"}

// SocketName is the registration socket node-driver-registrar creates for
// a driver.
func SocketName(driver string) string { return driver + "-reg.sock" }

// Info is what a plugin says about itself.
type Info struct {
	Type     string // registerapi.CSIPlugin for CSI drivers
	Name     string
	Endpoint string // the driver's CSI socket (a path, or unix://path)
	Versions []string
}

// Validate checks Info as the kubelet's CSI registration handler does
// (type, then versions), returning the highest supported version.
func (in Info) Validate() (*version.Version, error) {
	if in.Type != registerapi.CSIPlugin {
		return nil, fmt.Errorf("plugin type %q is not supported: only %s plugins are", in.Type, registerapi.CSIPlugin)
	}
	if in.Name == "" {
		return nil, errors.New("plugin returned an empty name")
	}
	if in.Endpoint == "" {
		return nil, fmt.Errorf("kubernetes.io/csi: ValidatePlugin for CSI driver %q failed. Plugin returned an empty endpoint", in.Name)
	}
	if len(in.Versions) == 0 {
		return nil, fmt.Errorf("kubernetes.io/csi: ValidatePlugin for CSI driver %q failed. Plugin returned an empty list for supported versions", in.Name)
	}
	v, err := version.HighestSupportedVersion(in.Versions)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.io/csi: ValidatePlugin for CSI driver %q failed. None of the versions specified %q are supported. err=%v", in.Name, in.Versions, err)
	}
	return v, nil
}

// callTimeout bounds each call to a plugin's registration service (the
// kubelet's plugin manager uses one second).
const callTimeout = time.Second

// Plugin is the node's connection to one registration socket.
type Plugin struct {
	conn   *grpc.ClientConn
	client registerapi.RegistrationClient
}

// Dial connects to a registration socket (an absolute path).
func Dial(socket string) (*Plugin, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &Plugin{conn: conn, client: registerapi.NewRegistrationClient(conn)}, nil
}

// Close closes the connection.
func (p *Plugin) Close() error { return p.conn.Close() }

// Info asks the plugin who it is.
func (p *Plugin) Info(ctx context.Context) (Info, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	in, err := p.client.GetInfo(ctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return Info{}, fmt.Errorf("failed to get plugin info using RPC GetInfo: %w", err)
	}
	return Info{Type: in.Type, Name: in.Name, Endpoint: in.Endpoint, Versions: in.SupportedVersions}, nil
}

// Notify tells the plugin whether it was registered (regErr nil) or not.
func (p *Plugin) Notify(ctx context.Context, regErr error) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st := &registerapi.RegistrationStatus{PluginRegistered: regErr == nil}
	if regErr != nil {
		st.Error = regErr.Error()
	}
	_, err := p.client.NotifyRegistrationStatus(ctx, st)
	return err
}

// Registrar is the driver's side: node-driver-registrar.
type Registrar struct {
	registerapi.UnimplementedRegistrationServer
	info Info
	log  *slog.Logger

	mu         sync.Mutex
	registered bool
	lastErr    string
	changed    chan struct{} // closed and replaced at each status
}

// GetInfo answers with the driver's name, endpoint and versions.
func (r *Registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: r.info.Type, Name: r.info.Name, Endpoint: r.info.Endpoint, SupportedVersions: r.info.Versions}, nil
}

// NotifyRegistrationStatus records what the node said.
func (r *Registrar) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	r.mu.Lock()
	r.registered, r.lastErr = st.PluginRegistered, st.Error
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if st.PluginRegistered {
		r.log.Info("registered with the node", "driver", r.info.Name)
	} else {
		r.log.Error("the node refused the registration", "driver", r.info.Name, "err", st.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Status is the last status the node sent (registered, or the node's
// error), and a channel closed at the next one.
func (r *Registrar) Status() (registered bool, errMsg string, next <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registered, r.lastErr, r.changed
}

// Serve serves the registration of the driver named by info (Type and
// Versions default to a CSI plugin of SupportedVersions) on
// dir/SocketName(info.Name) until ctx ends, then removes the socket. A
// stale socket from an earlier run is replaced. ready, if not nil, is
// called with the Registrar once the socket accepts connections.
func Serve(ctx context.Context, dir string, info Info, log *slog.Logger, ready func(*Registrar)) error {
	if info.Type == "" {
		info.Type = registerapi.CSIPlugin
	}
	if len(info.Versions) == 0 {
		info.Versions = SupportedVersions
	}
	if _, err := info.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	path := filepath.Join(dir, SocketName(info.Name))
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	r := &Registrar{info: info, log: log, changed: make(chan struct{})}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, r)
	done, served := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-served:
		}
		// Remove the socket first: the node sees the driver go
		// (deregistration) whether or not a call is in flight.
		_ = os.Remove(path)
		srv.Stop()
	}()
	log.Info("serving plugin registration", "driver", info.Name, "socket", path, "endpoint", info.Endpoint)
	if ready != nil {
		ready(r)
	}
	err = srv.Serve(l)
	close(served)
	<-done
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
