package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/agent"
	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/image"
	"github.com/moorage/moorage/internal/testserver"
)

// The test binary is also the container shim of the agents it starts.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MOORAGE_IO_BENCH_DIR"); dir != "" {
		os.Exit(ioBenchMain(dir))
	}
	if os.Getenv("MOORAGE_TEST_SHIM") == "1" {
		os.Exit(container.ShimMain(os.Args[1:]))
	}
	os.Setenv("MOORAGE_TEST_SHIM", "1")
	os.Exit(m.Run())
}

// startNode runs a server and an agent on a fresh node with busybox named
// as a host image; it returns a client.
func startNode(tb testing.TB) (kubernetes.Interface, string) {
	tb.Helper()
	c, nodes := startNodes(tb, 1)
	return c, nodes[0]
}

// startNodes is startNode with n agents, each its own node (they share
// this machine's address, so the pod network needs no routes between them).
func startNodes(tb testing.TB, n int) (kubernetes.Interface, []string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("the agent runs containers: needs root")
	}
	srv := testserver.Start(tb)
	stamp := time.Now().UnixNano() % 1e6
	var nodes []string
	for i := 0; i < n; i++ {
		node := fmt.Sprintf("bench-%d", stamp)
		if n > 1 {
			node = fmt.Sprintf("bench-%d-%d", stamp, i)
		}
		nodes = append(nodes, node)
		dir := tb.TempDir()
		a, err := agent.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), agent.Options{
			NodeName: node, DataDir: dir, ShimCommand: []string{os.Args[0]},
		})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := a.Images().AddHost("busybox", image.Config{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}); err != nil {
			tb.Fatal(err)
		}
		// This test binary as an image, for workloads measured inside a pod.
		if _, err := a.Images().AddHost("iobench", image.Config{Entrypoint: []string{os.Args[0]}}); err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = a.Run(ctx) }()
		tb.Cleanup(func() {
			cancel()
			<-done
			if err := agent.KillAll(context.Background(), dir, []string{os.Args[0]}); err != nil {
				tb.Errorf("killall: %v", err)
			}
		})
	}
	return testserver.Client(tb, srv), nodes
}

// BenchmarkPodStart: a pod with one claim (a hostPath volume) created, then
// Running as its status says; an op is one pod, created after the last is
// Running. p50 and p99 are reported.
func BenchmarkPodStart(b *testing.B) {
	c, node := startNode(b)
	ctx := context.Background()
	hostDir := b.TempDir()
	for _, obj := range []any{
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}}},
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(""), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}},
	} {
		var err error
		switch o := obj.(type) {
		case *corev1.PersistentVolume:
			_, err = c.CoreV1().PersistentVolumes().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.PersistentVolumeClaim:
			_, err = c.CoreV1().PersistentVolumeClaims("default").Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, func() bool {
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil && len(n.Status.Conditions) > 0
	})
	pods := c.CoreV1().Pods("default")
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var took []time.Duration
	b.ResetTimer()
	for i := -1; i < b.N; i++ { // pod -1 warms up (the first write of a kind parses its schema)
		name := fmt.Sprintf("p-%d", i)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
			Containers: []corev1.Container{{Name: "main", Image: "busybox", ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
		}}
		start := time.Now()
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		var trace []string
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Name == name {
				trace = append(trace, fmt.Sprintf("%v:%s/%s", time.Since(start).Milliseconds(), ev.Type, p.Status.Phase))
				if p.Status.Phase == corev1.PodRunning {
					break
				}
			}
		}
		if i >= 0 {
			took = append(took, time.Since(start))
		}
		if os.Getenv("TRACE") != "" && time.Since(start) > 500*time.Millisecond {
			b.Logf("slow %s: %v", name, trace)
		}
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99-ms")
	for i := -1; i < b.N; i++ {
		_ = pods.Delete(ctx, fmt.Sprintf("p-%d", i), metav1.DeleteOptions{})
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
