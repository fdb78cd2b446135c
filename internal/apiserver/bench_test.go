package apiserver_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/testserver"
)

// These benchmarks drive a real in-process server through client-go (HTTPS,
// protobuf, fsync'd store) on the same machine: figures are end to end.

func benchClient(b *testing.B) kubernetes.Interface {
	srv := testserver.Start(b)
	return testserver.Client(b, srv)
}

func fill(b *testing.B, c kubernetes.Interface, n int) {
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%05d", i)}, Data: map[string]string{"k": "v"}}
				if _, err := c.CoreV1().ConfigMaps("default").Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
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

// BenchmarkCreate: one create at a time (each waits for its fsync).
func BenchmarkCreate(b *testing.B) {
	c := benchClient(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c-%d", i)}}
		if _, err := c.CoreV1().ConfigMaps("default").Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateParallel: many clients creating at once (group commit).
func BenchmarkCreateParallel(b *testing.B) {
	c := benchClient(b)
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", n.Add(1))}}
			if _, err := c.CoreV1().ConfigMaps("default").Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGet: one object among 10,000.
func BenchmarkGet(b *testing.B) {
	c := benchClient(b)
	fill(b, c, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.CoreV1().ConfigMaps("default").Get(context.Background(), fmt.Sprintf("cm-%05d", i%10000), metav1.GetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList10000: all 10,000 objects in one list.
func BenchmarkList10000(b *testing.B) {
	c := benchClient(b)
	fill(b, c, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := c.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
		if err != nil || len(l.Items) < 10000 { // and kube-root-ca.crt
			b.Fatalf("%v, %d items", err, len(l.Items))
		}
	}
}

// BenchmarkWatchFanout100: one update delivered to 100 watchers; an op ends
// when every watcher has it.
func BenchmarkWatchFanout100(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	obj, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hot"}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	const watchers = 100
	var seen sync.WaitGroup
	for w := 0; w < watchers; w++ {
		wi, err := c.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: obj.ResourceVersion})
		if err != nil {
			b.Fatal(err)
		}
		defer wi.Stop()
		go func() {
			for ev := range wi.ResultChan() {
				if ev.Type == watch.Modified {
					seen.Done()
				} // an ERROR follows Stop at the end
			}
		}()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seen.Add(watchers)
		obj.Data = map[string]string{"i": fmt.Sprint(i)}
		if obj, err = c.CoreV1().ConfigMaps("default").Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		seen.Wait()
	}
}
