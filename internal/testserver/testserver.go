// Package testserver starts a real moorage server in-process for tests: a
// fresh data directory, a random loopback port, stopped at the test's end.
package testserver

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/testserver/etcdtest"
)

// Start starts a server and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *app.Server {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartWithout starts a server without the named controllers (the names
// of kube-controller-manager's --controllers, e.g.
// "statefulset-controller"), for tests that run their own.
func StartWithout(t testing.TB, controllers ...string) *app.Server {
	t.Helper()
	list := []string{"*"}
	for _, c := range controllers {
		list = append(list, "-"+c)
	}
	if _, err := app.LeftOut(list); err != nil {
		t.Fatal(err)
	}
	return start(t, t.TempDir(), controllers)
}

// StartIn starts a server on dataDir (to test restarts on the same state).
func StartIn(t testing.TB, dataDir string) *app.Server {
	t.Helper()
	return start(t, dataDir, nil)
}

// StartOnEtcd starts a server on a new one-member etcd (etcdtest).
func StartOnEtcd(t testing.TB) *app.Server {
	t.Helper()
	c := etcdtest.StartCluster(t, 1)
	return startWith(t, app.ServerOptions{DataDir: t.TempDir(), Etcd: app.EtcdOptions{Endpoints: c.Endpoints()}})
}

func start(t testing.TB, dataDir string, without []string) *app.Server {
	t.Helper()
	return startWith(t, app.ServerOptions{DataDir: dataDir, WithoutControllers: without})
}

func startWith(t testing.TB, opts app.ServerOptions) *app.Server {
	t.Helper()
	opts.Listen = "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := app.StartServer(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting moorage: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// Client returns a typed client-go clientset for srv (it sends protobuf).
func Client(t testing.TB, srv *app.Server) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(srv.Loopback)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
