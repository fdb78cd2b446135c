package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Serve runs the driver on a unix socket (endpoint "unix:///abs/path")
// until ctx ends, then stops gracefully: calls under way finish (for up to
// 10 seconds) and the socket file goes.
func Serve(ctx context.Context, endpoint string, opts Options) error {
	path, err := socketPath(endpoint)
	if err != nil {
		return err
	}
	d, err := New(opts)
	if err != nil {
		return err
	}
	if err := removeStaleSocket(path); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logCall))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	// Logged before serving: once calls run, d.volumes is d.mu's.
	d.log.Info("CSI driver serving", "driver", DriverName, "endpoint", endpoint, "node", d.nodeID, "dataDir", d.dataDir, "volumes", len(d.volumes))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if opts.Serving != nil {
		opts.Serving()
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
		<-stopped
	}
	d.log.Info("CSI driver stopped", "driver", DriverName)
	return nil
}

// socketPath is the path of a "unix:///abs/path" endpoint.
func socketPath(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" || u.Host != "" || !filepath.IsAbs(u.Path) {
		return "", fmt.Errorf("endpoint %q: want unix:///absolute/path", endpoint)
	}
	return u.Path, nil
}

// removeStaleSocket removes a socket file a previous run left; any other
// kind of file there is an error.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("endpoint %s exists and is not a socket", path)
	}
	return os.Remove(path)
}

// logCall logs each failed call once (and every call at debug level).
func (d *Driver) logCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	if err != nil {
		s := status.Convert(err)
		d.log.Info("CSI call failed", "method", info.FullMethod, "code", s.Code().String(), "error", s.Message(), "duration", time.Since(start))
	} else {
		d.log.Debug("CSI call", "method", info.FullMethod, "duration", time.Since(start))
	}
	return resp, err
}
