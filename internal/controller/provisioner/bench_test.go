package provisioner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/csi/local"
	"github.com/moorage/moorage/internal/testserver"
)

// benchEnv is a real server (binder included), the built-in driver on a
// socket and its node-local provisioner, as an agent runs them.
type benchEnv struct {
	kube kubernetes.Interface
	node string
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: the built-in driver uses loop devices")
	}
	srv := testserver.Start(b)
	kube := testserver.Client(b, srv)
	dir := b.TempDir()
	const node = "bench-node"
	ctx, cancel := context.WithCancel(context.Background())
	endpoint := "unix://" + filepath.Join(dir, "csi.sock")
	serving := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = local.Serve(ctx, endpoint, local.Options{NodeID: node, DataDir: filepath.Join(dir, "data"), Serving: func() { close(serving) }})
	}()
	<-serving
	client, err := csi.Dial(ctx, endpoint)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{local.TopologyKey: node}}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	p, err := New(srv.Loopback, client, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
		Mode: NodeLocal, NodeName: node, DriverName: local.DriverName, JournalDir: filepath.Join(dir, "journal"),
		TopologyKeys: []string{local.TopologyKey}, Workers: 8,
	})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
		_ = client.Close()
		<-served
	})
	return &benchEnv{kube: kube, node: node}
}

func (e *benchEnv) class(b *testing.B, name string, params map[string]string) {
	b.Helper()
	wffc, del := storagev1.VolumeBindingWaitForFirstConsumer, corev1.PersistentVolumeReclaimDelete
	_, err := e.kube.StorageV1().StorageClasses().Create(context.Background(), &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: local.DriverName, Parameters: params,
		VolumeBindingMode: &wffc, ReclaimPolicy: &del,
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
}

// boundWatch reports claims as they become Bound, by name.
func (e *benchEnv) boundWatch(b *testing.B) (bound <-chan string, stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := e.kube.CoreV1().PersistentVolumeClaims("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan string, 10000)
	go func() {
		seen := map[string]bool{}
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*corev1.PersistentVolumeClaim); ok && c.Status.Phase == corev1.ClaimBound && !seen[c.Name] {
				seen[c.Name] = true
				out <- c.Name
			}
		}
	}()
	return out, func() { w.Stop(); cancel() }
}

// claimOn is a claim the scheduler has placed on node (selected-node set).
func claimOn(name, class, size, node string, block bool) *corev1.PersistentVolumeClaim {
	c := claim(name, class, size)
	c.Annotations = map[string]string{annSelectedNode: node}
	if block {
		mode := corev1.PersistentVolumeBlock
		c.Spec.VolumeMode = &mode
	}
	return c
}

// BenchmarkClaimToBound: one claim at a time, from its creation (already
// placed on the node, as the scheduler leaves it) until the watch shows it
// Bound: the provisioner's CreateVolume (a sparse image; the file system
// is made at the first mount, see internal/csi/local's
// BenchmarkVolumeLifecycle), the PV's creation and the binder's writes.
func BenchmarkClaimToBound(b *testing.B) {
	for _, tc := range []struct {
		name, size, fsType string
		block              bool
	}{
		{"block-1GiB", "1Gi", "", true},
		{"ext4-1GiB", "1Gi", "ext4", false},
		{"ext4-10GiB", "10Gi", "ext4", false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newBenchEnv(b)
			params := map[string]string{}
			if tc.fsType != "" {
				params["csi.storage.k8s.io/fstype"] = tc.fsType
			}
			e.class(b, "bench", params)
			bound, stop := e.boundWatch(b)
			defer stop()
			for i := 0; b.Loop(); i++ {
				name := fmt.Sprintf("c-%d", i)
				if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").Create(context.Background(), claimOn(name, "bench", tc.size, e.node, tc.block), metav1.CreateOptions{}); err != nil {
					b.Fatal(err)
				}
				select {
				case got := <-bound:
					if got != name {
						b.Fatalf("bound %s, want %s", got, name)
					}
				case <-time.After(time.Minute):
					b.Fatalf("claim %s not Bound within a minute", name)
				}
			}
		})
	}
}

// BenchmarkProvisionStorm: 1,000 claims created at once by 8 clients;
// time until all are Bound (claims/s reported).
func BenchmarkProvisionStorm(b *testing.B) {
	const n = 1000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newBenchEnv(b)
		e.class(b, "bench", map[string]string{"csi.storage.k8s.io/fstype": "ext4"})
		bound, stop := e.boundWatch(b)
		b.StartTimer()
		start := time.Now()
		work := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range work {
					if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").Create(context.Background(), claimOn(fmt.Sprintf("c-%04d", i), "bench", "1Gi", e.node, false), metav1.CreateOptions{}); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
		for range n {
			select {
			case <-bound:
			case <-time.After(5 * time.Minute):
				b.Fatal("claims not all Bound within 5 minutes")
			}
		}
		b.ReportMetric(n/time.Since(start).Seconds(), "claims/s")
		b.StopTimer()
		stop()
		b.StartTimer()
	}
}
