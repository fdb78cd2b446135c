package apiserver_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moorage/moorage/internal/testserver"
)

func TestPodSecurityBaselineRefusesHostPath(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "locked", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name string, hostPath bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if hostPath {
			p.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}}}
		}
		return p
	}
	_, err := c.CoreV1().Pods("locked").Create(ctx, pod("bad", true), metav1.CreateOptions{})
	want := `pods "bad" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "h")`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("hostPath pod in a baseline namespace: got %v, want %s", err, want)
	}
	if _, err := c.CoreV1().Pods("locked").Create(ctx, pod("fine", false), metav1.CreateOptions{}); err != nil {
		t.Fatalf("a baseline pod was refused: %v", err)
	}
	if _, err := c.CoreV1().Pods("default").Create(ctx, pod("elsewhere", true), metav1.CreateOptions{}); err != nil {
		t.Fatalf("hostPath in an unlabelled namespace was refused: %v", err)
	}
}

func TestPodSecurityWarnAndNamespaceLabels(t *testing.T) {
	srv := testserver.Start(t)
	c := testserver.Client(t, srv)
	ctx := context.Background()

	// Invalid labels are refused, naming the label.
	bad := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bad-labels", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "strict"}}}
	_, err := c.CoreV1().Namespaces().Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict"`) {
		t.Fatalf("invalid enforce label: got %v", err)
	}

	// warn=baseline: a hostPath pod is created, with upstream's warning.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "warned", Labels: map[string]string{"pod-security.kubernetes.io/warn": "baseline"}}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	warnings := &recordWarnings{}
	cfg := rest.CopyConfig(srv.Loopback)
	cfg.WarningHandler = warnings
	wc := kubernetes.NewForConfigOrDie(cfg)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hp"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
		Volumes:    []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}}},
	}}
	if _, err := wc.CoreV1().Pods("warned").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("warn mode refused a pod: %v", err)
	}
	want := `would violate PodSecurity "baseline:latest": hostPath volumes (volume "h")`
	if got := warnings.take(); len(got) != 1 || got[0] != want {
		t.Fatalf("warnings = %q, want [%q]", got, want)
	}

	// A workload's template is warned about, never refused.
	one := int32(1)
	deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: appsv1.DeploymentSpec{
		Replicas: &one,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "d"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "d"}}, Spec: *pod.Spec.DeepCopy()},
	}}
	if _, err := wc.AppsV1().Deployments("warned").Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := warnings.take(); len(got) != 1 || got[0] != want {
		t.Fatalf("deployment warnings = %q, want [%q]", got, want)
	}

	// Tightening enforce lists the pods that break it, and changes nothing.
	// Wait for the Deployment's pod first, so that both pods are counted
	// (which of them is named first depends on the listing order).
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err := c.CoreV1().Pods("warned").List(ctx, metav1.ListOptions{LabelSelector: "app=d"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Deployment made no pod in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cur, err := wc.CoreV1().Namespaces().Get(ctx, "warned", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Labels["pod-security.kubernetes.io/enforce"] = "baseline"
	if _, err := wc.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := warnings.take()
	head := `existing pods in namespace "warned" violate the new PodSecurity enforce level "baseline:latest"`
	if len(got) != 2 || got[0] != head || !strings.HasSuffix(got[1], " (and 1 other pod): hostPath volumes") ||
		!(strings.HasPrefix(got[1], "hp ") || strings.HasPrefix(got[1], "d-")) {
		t.Fatalf("namespace update warnings = %q, want [%q, \"hp or d-… (and 1 other pod): hostPath volumes\"]", got, head)
	}
	if _, err := c.CoreV1().Pods("warned").Get(ctx, "hp", metav1.GetOptions{}); err != nil {
		t.Fatalf("existing pod gone after the label change: %v", err)
	}
}

type recordWarnings struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recordWarnings) HandleWarningHeader(code int, agent, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, text)
}

func (r *recordWarnings) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}
