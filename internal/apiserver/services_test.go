package apiserver_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/testserver"
)

func service(name, clusterIP string, typ corev1.ServiceType) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Type: typ, ClusterIP: clusterIP, Ports: []corev1.ServicePort{{Port: 80}}}}
}

func TestServiceAllocation(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	svcs := c.CoreV1().Services("default")

	k, err := svcs.Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || k.Spec.ClusterIP != "10.96.0.1" {
		t.Fatalf("the kubernetes Service: %v %+v", err, k)
	}
	// Concurrent creates never share an IP.
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := svcs.Create(ctx, service(fmt.Sprintf("s%d", i), "", ""), metav1.CreateOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := seen[s.Spec.ClusterIP]; dup {
				t.Errorf("%s and %s share %s", s.Name, other, s.Spec.ClusterIP)
			}
			seen[s.Spec.ClusterIP] = s.Name
			if !strings.HasPrefix(s.Spec.ClusterIP, "10.") || len(s.Spec.IPFamilies) != 1 || *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
				t.Errorf("allocation: %+v", s.Spec)
			}
		}(i)
	}
	wg.Wait()

	fixed, err := svcs.Create(ctx, service("fixed", "10.96.0.42", ""), metav1.CreateOptions{})
	if err != nil || fixed.Spec.ClusterIPs[0] != "10.96.0.42" {
		t.Fatalf("a requested IP: %v", err)
	}
	_, err = svcs.Create(ctx, service("clash", "10.96.0.42", ""), metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "provided IP is already allocated") {
		t.Fatalf("a taken IP: want 422, got %v", err)
	}
	if _, err := svcs.Get(ctx, "clash", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the refused Service was written: %v", err)
	}
	if err := svcs.Delete(ctx, "fixed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, service("again", "10.96.0.42", ""), metav1.CreateOptions{}); err != nil {
		t.Fatalf("the IP of a deleted Service is free again: %v", err)
	}

	headless, err := svcs.Create(ctx, service("headless", corev1.ClusterIPNone, ""), metav1.CreateOptions{})
	if err != nil || headless.Spec.ClusterIPs[0] != corev1.ClusterIPNone {
		t.Fatalf("headless: %v %+v", err, headless)
	}
	np, err := svcs.Create(ctx, service("np", "", corev1.ServiceTypeNodePort), metav1.CreateOptions{})
	if err != nil || np.Spec.Ports[0].NodePort < 30000 || np.Spec.Ports[0].NodePort > 32767 {
		t.Fatalf("node port: %v %+v", err, np)
	}
	// A replace without the allocated values keeps them.
	np.Spec.ClusterIP, np.Spec.ClusterIPs, np.Spec.Ports[0].NodePort = "", nil, 0
	got, err := svcs.Update(ctx, np, metav1.UpdateOptions{})
	if err != nil || got.Spec.ClusterIP == "" || got.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("update without allocations: %v %+v", err, got)
	}
}
