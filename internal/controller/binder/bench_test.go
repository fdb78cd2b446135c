package binder_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/testserver"
)

// BenchmarkBindStorm is the benchmark through the API: N PVs, then N
// claims created by 8 parallel clients; an op is the time until every claim
// is Bound. Run with -benchtime=1x; binds/s is reported.
func BenchmarkBindStorm(b *testing.B) {
	bindStorm(b, testserver.Start)
}

// BenchmarkBindStormOnEtcd is BenchmarkBindStorm with the server on a
// one-member etcd (testserver.StartOnEtcd).
func BenchmarkBindStormOnEtcd(b *testing.B) {
	bindStorm(b, testserver.StartOnEtcd)
}

func bindStorm(b *testing.B, start func(testing.TB) *app.Server) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("claims=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				srv := start(b)
				c := testserver.Client(b, srv)
				parallel(b, n, func(i int) error {
					_, err := c.CoreV1().PersistentVolumes().Create(context.Background(), newPV(fmt.Sprintf("pv-%05d", i), "1Gi").class("bench").PersistentVolume, metav1.CreateOptions{})
					return err
				})
				b.StartTimer()
				start := time.Now()
				parallel(b, n, func(i int) error {
					_, err := c.CoreV1().PersistentVolumeClaims("default").Create(context.Background(), newClaim(fmt.Sprintf("claim-%05d", i), "1Gi").class("bench").PersistentVolumeClaim, metav1.CreateOptions{})
					return err
				})
				created := time.Since(start)
				waitAllBound(b, c, n)
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(n)/elapsed.Seconds(), "binds/s")
				b.ReportMetric(float64(n)/created.Seconds(), "creates/s")
			}
		})
	}
}

func parallel(b *testing.B, n int, f func(int) error) {
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := f(i); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
}

// waitAllBound counts Bound claims through a watch, so that waiting costs the
// server nothing but the events it sends anyway.
func waitAllBound(b *testing.B, c kubernetes.Interface, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	list, err := c.CoreV1().PersistentVolumeClaims("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	bound, k := map[string]bool{}, 0
	set := func(claim *corev1.PersistentVolumeClaim) {
		was, now := bound[claim.Name], claim.Status.Phase == corev1.ClaimBound
		bound[claim.Name] = now
		switch {
		case now && !was:
			k++
		case was && !now:
			k--
		}
	}
	for i := range list.Items {
		set(&list.Items[i])
	}
	count := func() int { return k }
	rv := list.ResourceVersion
	for count() < n {
		w, err := c.CoreV1().PersistentVolumeClaims("default").Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
		if err != nil {
			b.Fatal(err)
		}
		for ev := range w.ResultChan() {
			claim, ok := ev.Object.(*corev1.PersistentVolumeClaim)
			if !ok {
				continue
			}
			rv = claim.ResourceVersion
			set(claim)
			if count() == n {
				break
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			b.Fatalf("only %d of %d claims Bound", count(), n)
		}
	}
}
