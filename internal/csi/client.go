package csi

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Default per-call timeouts.
const (
	// DefaultTimeout bounds identity and controller calls: the --timeout
	// default of external-provisioner and external-resizer (10 s;
	// external-attacher uses 15 s).
	DefaultTimeout = 10 * time.Second
	// DefaultNodeTimeout bounds node calls: the kubelet's csiTimeout
	// (kubernetes/kubernetes pkg/volume/csi/csi_plugin.go, 2 min).
	DefaultNodeTimeout = 2 * time.Minute
)

// Option configures a Client.
type Option func(*Client)

// WithTimeout sets the per-call timeout of identity and controller calls.
// A caller's context with an earlier deadline still wins.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithNodeTimeout sets the per-call timeout of node calls.
func WithNodeTimeout(d time.Duration) Option { return func(c *Client) { c.nodeTimeout = d } }

// Client is a connection to one CSI driver's socket. It is safe for
// concurrent use. Capability sets are fetched on first use and then
// cached for the life of the Client: a driver that restarts with other
// capabilities needs a new Client (socket re-registration does that).
type Client struct {
	endpoint    string
	conn        *grpc.ClientConn
	identity    csipb.IdentityClient
	controller  csipb.ControllerClient
	node        csipb.NodeClient
	timeout     time.Duration
	nodeTimeout time.Duration

	pluginCaps     cached[PluginCapabilitySet]
	controllerCaps cached[ControllerCapabilitySet]
	nodeCaps       cached[NodeCapabilitySet]
}

// Dial connects to a driver at endpoint, either "unix:///abs/path" or a bare
// absolute path, and waits until the connection is ready or ctx ends (as the
// sidecars' csi-lib-utils connection.Connect waits). Once connected, a lost
// connection is re-established by gRPC; calls made meanwhile fail with
// UNAVAILABLE, which Classify reports as InProgress.
func Dial(ctx context.Context, endpoint string, opts ...Option) (*Client, error) {
	target, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, &Error{Op: OpDial, Err: err}
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, &Error{Op: OpDial, Err: fmt.Errorf("%w: %v", ErrInvalidRequest, err)}
	}
	conn.Connect()
	for {
		st := conn.GetState()
		if st == connectivity.Ready {
			break
		}
		if !conn.WaitForStateChange(ctx, st) {
			_ = conn.Close()
			return nil, &Error{Op: OpDial, Err: status.Errorf(codes.Unavailable,
				"%s not ready (last state %s): %v", endpoint, st, ctx.Err())}
		}
	}
	c := &Client{
		endpoint:    endpoint,
		conn:        conn,
		identity:    csipb.NewIdentityClient(conn),
		controller:  csipb.NewControllerClient(conn),
		node:        csipb.NewNodeClient(conn),
		timeout:     DefaultTimeout,
		nodeTimeout: DefaultNodeTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

func parseEndpoint(endpoint string) (string, error) {
	p, hadScheme := strings.CutPrefix(endpoint, "unix://")
	if !hadScheme && strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("%w: endpoint %q: only unix:// sockets are supported", ErrInvalidRequest, endpoint)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: endpoint %q: socket path must be absolute", ErrInvalidRequest, endpoint)
	}
	return "unix://" + filepath.Clean(p), nil
}

// Close closes the connection. Calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// Endpoint is the endpoint the Client was dialled with.
func (c *Client) Endpoint() string { return c.endpoint }

func (c *Client) callCtx(ctx context.Context, node bool) (context.Context, context.CancelFunc) {
	d := c.timeout
	if node {
		d = c.nodeTimeout
	}
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// PluginInfo is GetPluginInfo's answer.
type PluginInfo struct {
	Name          string // the driver name, e.g. "local.csi.moorage.io"
	VendorVersion string
	Manifest      map[string]string
}

// PluginInfo calls GetPluginInfo. An empty name is ErrInvalidResponse.
func (c *Client) PluginInfo(ctx context.Context) (PluginInfo, error) {
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.identity.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil {
		return PluginInfo{}, &Error{Op: OpGetPluginInfo, Err: err}
	}
	if resp.GetName() == "" {
		return PluginInfo{}, &Error{Op: OpGetPluginInfo, Err: fmt.Errorf("%w: empty driver name", ErrInvalidResponse)}
	}
	return PluginInfo{Name: resp.GetName(), VendorVersion: resp.GetVendorVersion(), Manifest: resp.GetManifest()}, nil
}

// PluginCapabilities calls GetPluginCapabilities once and caches the result.
func (c *Client) PluginCapabilities(ctx context.Context) (PluginCapabilitySet, error) {
	return c.pluginCaps.get(ctx, func(ctx context.Context) (PluginCapabilitySet, error) {
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := c.identity.GetPluginCapabilities(ctx, &csipb.GetPluginCapabilitiesRequest{})
		if err != nil {
			return PluginCapabilitySet{}, &Error{Op: OpGetPluginCapabilities, Err: err}
		}
		return newPluginCapabilitySet(resp.GetCapabilities()), nil
	})
}

// Probe calls Probe. A driver that leaves "ready" unset is ready (spec:
// "If not present, the caller SHALL assume that the plugin is in a ready
// state").
func (c *Client) Probe(ctx context.Context) (ready bool, err error) {
	ctx, cancel := c.callCtx(ctx, false)
	defer cancel()
	resp, err := c.identity.Probe(ctx, &csipb.ProbeRequest{})
	if err != nil {
		return false, &Error{Op: OpProbe, Err: err}
	}
	if resp.GetReady() == nil {
		return true, nil
	}
	return resp.GetReady().GetValue(), nil
}
