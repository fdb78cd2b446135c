package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestKillDuringWriteStorm: `kill -9` moorage while clients create objects;
// after a restart on the same data dir every create that was acknowledged is
// there, whole, and the server takes new writes.
func TestKillDuringWriteStorm(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	dir := t.TempDir()
	m, err := launch(dir)
	if err != nil {
		t.Fatal(err)
	}
	client := func(kubeconfig string) kubernetes.Interface {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cfg.QPS = -1 // no client-side throttling: a storm
		return kubernetes.NewForConfigOrDie(cfg)
	}
	c := client(m.Kubeconfig)

	var mu sync.Mutex
	acked := map[string]string{}
	var count atomic.Int64
	killed := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				name, value := fmt.Sprintf("storm-%d-%d", w, i), fmt.Sprintf("value %d/%d", w, i)
				_, err := c.CoreV1().ConfigMaps("default").Create(context.Background(),
					&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": value}}, metav1.CreateOptions{})
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked[name] = value
				mu.Unlock()
				if count.Add(1) == 400 {
					once.Do(func() { m.kill(); close(killed) })
				}
				select {
				case <-killed:
					return
				default:
				}
			}
		}(w)
	}
	wg.Wait()
	<-killed
	t.Logf("killed after %d acknowledged writes", count.Load())
	if m.exit == 0 {
		t.Fatal("moorage exited cleanly; it should have been killed")
	}

	m2 := startMoorageIn(t, dir)
	c2 := client(m2.Kubeconfig)
	list, err := c2.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing after the crash: %v", err)
	}
	got := map[string]string{}
	for _, cm := range list.Items {
		got[cm.Name] = cm.Data["v"]
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 400 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}
	for name, value := range acked {
		if got[name] != value {
			t.Errorf("acknowledged %s=%q is %q after the crash", name, value, got[name])
		}
	}
	if _, err := c2.CoreV1().ConfigMaps("default").Create(context.Background(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-crash"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a write after the restart: %v", err)
	}
	t.Logf("%d writes acknowledged before kill -9, all present after restart (%d objects in all)", len(acked), len(got))
}
