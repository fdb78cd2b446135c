package apiserver_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/moorage/moorage/internal/testserver"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProtobufCreateAndRead(t *testing.T) {
	srv := testserver.Start(t)
	cfg := rest.CopyConfig(srv.Loopback)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf"
	c := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "pb"}, Data: map[string]string{"k": "v"}}
	got, err := c.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("protobuf create: %v", err)
	}
	if got.UID == "" || got.ResourceVersion == "" || got.Data["k"] != "v" {
		t.Fatalf("created object lacks system fields or data: %+v", got)
	}
	list, err := c.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{FieldSelector: notRootCA})
	if err != nil || len(list.Items) != 1 || list.ResourceVersion == "" {
		t.Fatalf("protobuf list: %v %+v", err, list)
	}
	_, err = c.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: want AlreadyExists, got %v", err)
	}
	_, err = c.CoreV1().ConfigMaps("nope").Get(ctx, "pb", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("want NotFound, got %v", err)
	}
}

func TestInformerListWatchAndRelistAfterGone(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("before-%d", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.CompactNow(ctx); err != nil {
		t.Fatal(err)
	}
	// The first list claims an old, compacted resourceVersion, so the
	// informer's watch gets 410 Gone and it must list again.
	var lists, watches atomic.Int32
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			l, err := c.CoreV1().ConfigMaps("").List(ctx, o)
			if err == nil && lists.Add(1) == 1 {
				l.ResourceVersion = "1"
			}
			return l, err
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			watches.Add(1)
			return c.CoreV1().ConfigMaps("").Watch(ctx, o)
		},
	}
	informer := cache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, cache.Indexers{})
	go informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatal("informer never synced")
	}
	if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the informer to see the object created after its relist", func() bool {
		_, ok, _ := informer.GetStore().GetByKey("default/after")
		return ok
	})
	if lists.Load() < 2 {
		t.Fatalf("informer listed %d times; want a relist after 410 Gone", lists.Load())
	}
	if err := c.CoreV1().ConfigMaps("default").Delete(ctx, "before-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the informer to see a delete", func() bool {
		_, ok, _ := informer.GetStore().GetByKey("default/before-0")
		return !ok
	})
}

func TestWatchFromCompactedRevisionIsGone(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.CompactNow(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := c.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	select {
	case ev := <-w.ResultChan():
		st, ok := ev.Object.(*metav1.Status)
		if ev.Type != watch.Error || !ok || st.Code != 410 || st.Reason != metav1.StatusReasonExpired {
			t.Fatalf("want an ERROR event with 410 Expired, got %v %+v", ev.Type, ev.Object)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
}
