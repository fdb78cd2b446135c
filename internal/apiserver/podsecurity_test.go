package apiserver_test

import (
	"context"
	"testing"

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
