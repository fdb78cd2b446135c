package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ioBenchSettle is how long a run waits before measuring.
const ioBenchSettle = 2 * time.Second

// ioResult is one run of ioWorkload.
type ioResult struct {
	SeqWriteMBps, SeqReadMBps float64
	RandReadIOPS, RandWrIOPS  float64
}

// ioWorkload measures a directory: 256 MiB written sequentially (1 MiB
// writes, then fsync), read back with O_DIRECT, then 20,000 random 4 KiB
// O_DIRECT reads and 2,000 random 4 KiB writes (each O_DSYNC).
func ioWorkload(dir string) (ioResult, error) {
	var r ioResult
	path := filepath.Join(dir, "io.bench")
	defer os.Remove(path)
	const size, block = 256 << 20, 1 << 20
	buf := alignedBuf(block)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return r, err
	}
	for off := 0; off < size; off += block {
		if _, err := f.Write(buf); err != nil {
			return r, err
		}
	}
	if err := f.Sync(); err != nil {
		return r, err
	}
	f.Close()
	r.SeqWriteMBps = size / (1 << 20) / time.Since(start).Seconds()

	fd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return r, err
	}
	defer unix.Close(fd)
	start = time.Now()
	for off := int64(0); off < size; off += block {
		if _, err := unix.Pread(fd, buf, off); err != nil {
			return r, err
		}
	}
	r.SeqReadMBps = size / (1 << 20) / time.Since(start).Seconds()

	small := alignedBuf(4096)
	rng := rand.New(rand.NewSource(1))
	const ops, readOps = 2000, 20000 // reads are ~10× faster: as many seconds
	start = time.Now()
	for i := 0; i < readOps; i++ {
		if _, err := unix.Pread(fd, small, rng.Int63n(size/4096)*4096); err != nil {
			return r, err
		}
	}
	r.RandReadIOPS = readOps / time.Since(start).Seconds()
	dfd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		return r, err
	}
	defer unix.Close(dfd)
	start = time.Now()
	for i := 0; i < ops; i++ {
		if _, err := unix.Pwrite(dfd, small, rng.Int63n(size/4096)*4096); err != nil {
			return r, err
		}
	}
	r.RandWrIOPS = ops / time.Since(start).Seconds()
	return r, nil
}

func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptr(unsafePointer(b))&4095)
	return b[off%4096 : off%4096+n]
}

// ioBenchMain is the test binary run as a container: it measures
// $MOORAGE_IO_BENCH_DIR and writes the result there.
func ioBenchMain(dir string) int {
	// Both sides start measuring on a quiet machine: in a pod, the agent
	// and the server are still busy with the pod's start (status, events)
	// for a moment, and the small random I/Os are bound by CPU latency.
	time.Sleep(ioBenchSettle)
	r, err := ioWorkload(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, _ := json.Marshal(r)
	if err := os.WriteFile(filepath.Join(dir, "result.json"), b, 0o644); err != nil {
		return 1
	}
	return 0
}

// BenchmarkVolumeIO compares I/O through a pod's mounted volume (a hostPath
// claim, bound into a running container) with the same directory used
// directly, in alternating runs; ratios near 1 mean the mount costs nothing.
func BenchmarkVolumeIO(b *testing.B) {
	c, _ := startNode(b)
	ctx := context.Background()
	hostDir := b.TempDir()
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "io"}, Spec: corev1.PersistentVolumeSpec{
		Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
		PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}}}
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "io"}, Spec: corev1.PersistentVolumeClaimSpec{
		StorageClassName: ptr.To(""), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	var direct, inPod []ioResult
	runDirect := func() {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "MOORAGE_IO_BENCH_DIR="+hostDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("direct run: %v %s", err, out)
		}
		direct = append(direct, readResult(b, hostDir))
	}
	runInPod := func(i int) {
		name := fmt.Sprintf("io-%d", i)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// A cpu request of 1 gives it the cpu.shares of the direct run
			// (1024); a BestEffort pod gets 2 and loses to anything busy.
			Containers: []corev1.Container{{Name: "io", Image: "iobench", ImagePullPolicy: corev1.PullNever,
				Resources:    corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}},
				Env:          []corev1.EnvVar{{Name: "MOORAGE_IO_BENCH_DIR", Value: "/data"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "io"}}}},
		}}
		if _, err := c.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		waitForTimeout(b, 2*time.Minute, func() bool {
			p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err == nil && p.Status.Phase == corev1.PodFailed {
				b.Fatalf("the benchmark pod failed: %+v", p.Status)
			}
			return err == nil && p.Status.Phase == corev1.PodSucceeded
		})
		inPod = append(inPod, readResult(b, hostDir))
	}
	// Alternate which goes first, and start each from a clean page cache
	// writeback, so neither side pays for the other's dirty pages.
	for i := 0; i < b.N; i++ {
		unix.Sync()
		if i%2 == 0 {
			runDirect()
			unix.Sync()
			runInPod(i)
		} else {
			runInPod(i)
			unix.Sync()
			runDirect()
		}
	}
	// The median of each side: single runs on a shared VM disk vary by
	// ±10% either way.
	avg := func(rs []ioResult, f func(ioResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	for _, m := range []struct {
		name string
		f    func(ioResult) float64
	}{
		{"seq-write", func(r ioResult) float64 { return r.SeqWriteMBps }},
		{"seq-read", func(r ioResult) float64 { return r.SeqReadMBps }},
		{"rand-read", func(r ioResult) float64 { return r.RandReadIOPS }},
		{"rand-write", func(r ioResult) float64 { return r.RandWrIOPS }},
	} {
		d, p := avg(direct, m.f), avg(inPod, m.f)
		b.ReportMetric(p/d, m.name+"-ratio")
		b.Logf("%s: direct %.0f, in a pod %.0f (ratio %.3f)", m.name, d, p, p/d)
	}
}

func readResult(tb testing.TB, dir string) ioResult {
	tb.Helper()
	var r ioResult
	b, err := os.ReadFile(filepath.Join(dir, "result.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		tb.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "result.json"))
	return r
}

func waitForTimeout(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
