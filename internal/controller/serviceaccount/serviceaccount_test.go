package serviceaccount_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/serviceaccount"
	"github.com/moorage/moorage/internal/testserver"
)

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

func waitForDefaultAccount(t *testing.T, c kubernetes.Interface, ns string) *corev1.ServiceAccount {
	t.Helper()
	var sa *corev1.ServiceAccount
	eventually(t, "the default service account in "+ns, func() bool {
		var err error
		sa, err = c.CoreV1().ServiceAccounts(ns).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil
	})
	return sa
}

// The server runs both controllers with upstream's defaults.
func TestDefaultAccountAndRootCAInEveryNamespace(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := t.Context()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod at once: admission waits for the controller's default account.
	if _, err := c.CoreV1().Pods("fresh").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "early"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "busybox"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a pod right after its namespace: %v", err)
	}
	sa := waitForDefaultAccount(t, c, "fresh")
	ca := srv.Loopback.TLSClientConfig.CAData
	var cm *corev1.ConfigMap
	eventually(t, "kube-root-ca.crt in fresh", func() bool {
		var err error
		cm, err = c.CoreV1().ConfigMaps("fresh").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil
	})
	if cm.Data["ca.crt"] != string(ca) || !strings.HasPrefix(cm.Annotations["kubernetes.io/description"], "Contains a CA bundle") {
		t.Fatalf("kube-root-ca.crt %+v", cm)
	}
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		waitForDefaultAccount(t, c, ns)
	}

	// Deleted: back, as a new object. Changed: restored.
	if err := c.CoreV1().ServiceAccounts("fresh").Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the default account to come back", func() bool {
		got, err := c.CoreV1().ServiceAccounts("fresh").Get(ctx, "default", metav1.GetOptions{})
		return err == nil && got.UID != sa.UID
	})
	cm.Data["ca.crt"] = "tampered"
	if _, err := c.CoreV1().ConfigMaps("fresh").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "kube-root-ca.crt restored", func() bool {
		got, err := c.CoreV1().ConfigMaps("fresh").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil && got.Data["ca.crt"] == string(ca)
	})
	if err := c.CoreV1().ConfigMaps("fresh").Delete(ctx, "kube-root-ca.crt", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "kube-root-ca.crt recreated", func() bool {
		got, err := c.CoreV1().ConfigMaps("fresh").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil && got.Data["ca.crt"] == string(ca)
	})

	// A terminating namespace empties and goes: nothing is recreated in it.
	if err := c.CoreV1().Pods("fresh").Delete(ctx, "early", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().Namespaces().Delete(ctx, "fresh", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace fresh to go", func() bool {
		_, err := c.CoreV1().Namespaces().Get(ctx, "fresh", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// Options.ServiceAccounts: every namespace gets each account named.
func TestMoreAccounts(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctrl, err := serviceaccount.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), serviceaccount.Options{ServiceAccounts: []string{"default", "builder"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := c.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"default", "team"} {
		eventually(t, "builder in "+ns, func() bool {
			_, err := c.CoreV1().ServiceAccounts(ns).Get(t.Context(), "builder", metav1.GetOptions{})
			return err == nil
		})
	}
	if _, err := serviceaccount.NewPublisher(srv.Loopback, slog.Default(), serviceaccount.PublisherOptions{}); err == nil || !strings.Contains(err.Error(), "RootCA is required") {
		t.Fatalf("a publisher without a CA: %v", err)
	}
}
