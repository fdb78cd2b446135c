package statefulset_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/statefulset"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = "default"

// env is a server (without its own StatefulSet controller) with the
// controller under test running beside it. The server runs the scheduler and
// garbage collector but no node agent: with no Node objects pods stay
// unscheduled (and are deleted at once), and tests play the kubelet by
// writing pod status.
type env struct {
	t *testing.T
	c kubernetes.Interface
	// kubeconfig is the server's, for kubectl.
	kubeconfig string
}

func start(t *testing.T) *env {
	t.Helper()
	srv := testserver.StartWithout(t, statefulset.Component)
	ctrl, err := statefulset.New(srv.Loopback, slog.New(slog.NewTextHandler(io.Discard, nil)), statefulset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &env{t: t, c: testserver.Client(t, srv), kubeconfig: srv.Kubeconfig}
}

// eventually polls cond until it holds, failing the test after 15 s.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setBuilder makes sets: web, selecting app=web, one container.
type setBuilder struct{ set *appsv1.StatefulSet }

func newSet(name string, replicas int32) *setBuilder {
	labels := map[string]string{"app": name}
	return &setBuilder{&appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: name + "-svc",
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1"}}},
			},
		},
	}}
}

func (b *setBuilder) parallel() *setBuilder {
	b.set.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
	return b
}

func (b *setBuilder) withClaim(name string) *setBuilder {
	b.set.Spec.VolumeClaimTemplates = append(b.set.Spec.VolumeClaimTemplates, corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"tier": "data"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	})
	return b
}

func (b *setBuilder) retention(scaled, deleted appsv1.PersistentVolumeClaimRetentionPolicyType) *setBuilder {
	b.set.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenScaled: scaled, WhenDeleted: deleted}
	return b
}

func (b *setBuilder) with(f func(*appsv1.StatefulSet)) *setBuilder {
	f(b.set)
	return b
}

func (e *env) create(b *setBuilder) *appsv1.StatefulSet {
	e.t.Helper()
	set, err := e.c.AppsV1().StatefulSets(ns).Create(e.t.Context(), b.set, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return set
}

// updateSet changes the set's spec, retrying on conflicts.
func (e *env) updateSet(name string, f func(*appsv1.StatefulSet)) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		set, err := e.c.AppsV1().StatefulSets(ns).Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		f(set)
		_, err = e.c.AppsV1().StatefulSets(ns).Update(e.t.Context(), set, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) getSet(name string) *appsv1.StatefulSet {
	e.t.Helper()
	set, err := e.c.AppsV1().StatefulSets(ns).Get(e.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return set
}

// pod returns the pod, or nil when there is none.
func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	pod, err := e.c.CoreV1().Pods(ns).Get(e.t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return pod
}

// podNames lists the pods of app, sorted.
func (e *env) podNames(app string) []string {
	e.t.Helper()
	list, err := e.c.CoreV1().Pods(ns).List(e.t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

func (e *env) waitPods(app string, want ...string) {
	e.t.Helper()
	sort.Strings(want)
	e.eventually(fmt.Sprintf("pods %v", want), func() bool { return slices.Equal(e.podNames(app), want) })
}

// setPodStatus plays the kubelet: it writes phase and Ready on a pod.
func (e *env) setPodStatus(name string, phase corev1.PodPhase, ready bool) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := e.c.CoreV1().Pods(ns).Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Phase = phase
		cond := corev1.PodCondition{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}
		replaced := false
		for i := range pod.Status.Conditions {
			if pod.Status.Conditions[i].Type == corev1.PodReady {
				pod.Status.Conditions[i], replaced = cond, true
			}
		}
		if !replaced {
			pod.Status.Conditions = append(pod.Status.Conditions, cond)
		}
		_, err = e.c.CoreV1().Pods(ns).UpdateStatus(e.t.Context(), pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// ready waits for the pod and makes it Running and Ready.
func (e *env) ready(name string) {
	e.t.Helper()
	e.eventually("pod "+name, func() bool { p := e.pod(name); return p != nil && p.DeletionTimestamp == nil })
	e.setPodStatus(name, corev1.PodRunning, true)
}

// readyInOrder makes pods ready one by one as the controller creates them.
func (e *env) readyInOrder(names ...string) {
	e.t.Helper()
	for _, n := range names {
		e.ready(n)
	}
}

func (e *env) claim(name string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	claim, err := e.c.CoreV1().PersistentVolumeClaims(ns).Get(e.t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return claim
}

// events returns "Reason: message" of the events about the named set.
func (e *env) events(set string) []string {
	e.t.Helper()
	list, err := e.c.CoreV1().Events(ns).List(e.t.Context(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", set).String(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		out = append(out, ev.Reason+": "+ev.Message)
	}
	return out
}

func (e *env) waitEvent(set, want string) {
	e.t.Helper()
	e.eventually("event "+want, func() bool {
		return slices.ContainsFunc(e.events(set), func(s string) bool { return strings.Contains(s, want) })
	})
}

// revisions lists the set's revisions by number.
func (e *env) revisions(app string) []appsv1.ControllerRevision {
	e.t.Helper()
	list, err := e.c.AppsV1().ControllerRevisions(ns).List(e.t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Revision < list.Items[j].Revision })
	return list.Items
}

// waitStatus waits for the set's status to satisfy cond.
func (e *env) waitStatus(name, what string, cond func(appsv1.StatefulSetStatus) bool) appsv1.StatefulSetStatus {
	e.t.Helper()
	var set *appsv1.StatefulSet
	e.eventually(name+" status: "+what, func() bool {
		set = e.getSet(name)
		return set.Status.ObservedGeneration == set.Generation && cond(set.Status)
	})
	return set.Status
}

func image(pod *corev1.Pod) string { return pod.Spec.Containers[0].Image }
