package replicaset_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/replicaset"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = "default"

// start runs a server with the ReplicaSet and ReplicationController
// controllers (the server itself runs the scheduler and the garbage
// collector, no node agent: tests make pods ready themselves).
func start(t *testing.T) kubernetes.Interface {
	t.Helper()
	srv := testserver.StartWithout(t, replicaset.Component, "replicationcontroller-controller")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rs, err := replicaset.New(srv.Loopback, log, replicaset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := replicaset.NewForReplicationControllers(srv.Loopback, log, replicaset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { rs.Run(ctx); done <- struct{}{} }()
	go func() { rc.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return testserver.Client(t, srv)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func template(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}
}

func createRS(t *testing.T, c kubernetes.Interface, name string, replicas int32, mutate ...func(*appsv1.ReplicaSet)) *appsv1.ReplicaSet {
	t.Helper()
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: template(name),
		},
	}
	for _, m := range mutate {
		m(rs)
	}
	rs, err := c.AppsV1().ReplicaSets(ns).Create(t.Context(), rs, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func getRS(t *testing.T, c kubernetes.Interface, name string) *appsv1.ReplicaSet {
	t.Helper()
	rs, err := c.AppsV1().ReplicaSets(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func scaleRS(t *testing.T, c kubernetes.Interface, name string, replicas int32) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rs := getRS(t, c, name)
		rs.Spec.Replicas = ptr.To(replicas)
		_, err := c.AppsV1().ReplicaSets(ns).Update(t.Context(), rs, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// activePods lists the pods of app not being deleted, oldest first.
func activePods(t *testing.T, c kubernetes.Interface, app string) []corev1.Pod {
	t.Helper()
	list, err := c.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// setReady marks a pod Running and Ready, as a node agent would.
func setReady(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := c.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		_, err = c.CoreV1().Pods(ns).UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// events returns the messages of the events with reason about the object.
func events(t *testing.T, c kubernetes.Interface, kind, name, reason string) []string {
	t.Helper()
	list, err := c.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

func TestReplicaSetScalesUpAndDown(t *testing.T) {
	c := start(t)
	rs := createRS(t, c, "web", 3)
	eventually(t, "3 pods", func() bool { return len(activePods(t, c, "web")) == 3 })
	pods := activePods(t, c, "web")
	for _, p := range pods {
		ref := metav1.GetControllerOf(&p)
		if !strings.HasPrefix(p.Name, "web-") || p.GenerateName != "web-" || ref == nil || ref.UID != rs.UID || ref.Kind != "ReplicaSet" || !ptr.Deref(ref.BlockOwnerDeletion, false) {
			t.Fatalf("pod %s: generateName %q, controller %+v", p.Name, p.GenerateName, ref)
		}
	}
	eventually(t, "a SuccessfulCreate event for every pod", func() bool {
		got := events(t, c, "ReplicaSet", "web", replicaset.ReasonSuccessfulCreate)
		for _, p := range pods {
			if !slices.Contains(got, "Created pod: "+p.Name) {
				return false
			}
		}
		return true
	})
	eventually(t, "status.replicas 3", func() bool {
		s := getRS(t, c, "web").Status
		return s.Replicas == 3 && s.FullyLabeledReplicas == 3 && s.ReadyReplicas == 0 && s.ObservedGeneration == 1
	})

	setReady(t, c, pods[0].Name)
	setReady(t, c, pods[1].Name)
	eventually(t, "2 ready and available", func() bool {
		s := getRS(t, c, "web").Status
		return s.ReadyReplicas == 2 && s.AvailableReplicas == 2
	})

	// Scale-down deletes the pod that is not ready first.
	scaleRS(t, c, "web", 2)
	eventually(t, "2 pods", func() bool { return len(activePods(t, c, "web")) == 2 })
	for _, p := range activePods(t, c, "web") {
		if p.Name == pods[2].Name {
			t.Fatalf("the ready pods went first: %s remains", p.Name)
		}
	}
	eventually(t, "a SuccessfulDelete event", func() bool {
		return slices.Contains(events(t, c, "ReplicaSet", "web", replicaset.ReasonSuccessfulDelete), "Deleted pod: "+pods[2].Name)
	})
	eventually(t, "status after the scale-down", func() bool {
		s := getRS(t, c, "web").Status
		return s.Replicas == 2 && s.ReadyReplicas == 2 && s.ObservedGeneration == 2
	})

	// A deleted pod is replaced.
	if err := c.CoreV1().Pods(ns).Delete(t.Context(), pods[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a replacement", func() bool {
		ps := activePods(t, c, "web")
		return len(ps) == 2 && !slices.ContainsFunc(ps, func(p corev1.Pod) bool { return p.Name == pods[0].Name })
	})
	scaleRS(t, c, "web", 0)
	eventually(t, "no pods", func() bool { return len(activePods(t, c, "web")) == 0 })
}

func TestReplicaSetNeverOverCreates(t *testing.T) {
	c := start(t)
	w, err := c.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{LabelSelector: "app=many"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	createRS(t, c, "many", 30)
	added, deleted := 0, 0
	eventually(t, "30 pods in status", func() bool {
		for {
			select {
			case ev := <-w.ResultChan():
				switch ev.Type {
				case watch.Added:
					added++
				case watch.Deleted:
					deleted++
				}
				continue
			default:
			}
			return getRS(t, c, "many").Status.Replicas == 30
		}
	})
	// One more sync of a settled owner creates nothing either.
	scaleRS(t, c, "many", 31)
	eventually(t, "31 pods in status", func() bool {
		for {
			select {
			case ev := <-w.ResultChan():
				switch ev.Type {
				case watch.Added:
					added++
				case watch.Deleted:
					deleted++
				}
				continue
			default:
			}
			return getRS(t, c, "many").Status.Replicas == 31 && added >= 31
		}
	})
	if added != 31 || deleted != 0 {
		t.Fatalf("%d pods created and %d deleted, want 31 and 0", added, deleted)
	}
}

func TestReplicaSetAdoptsAndReleases(t *testing.T) {
	c := start(t)
	orphan := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan", Labels: map[string]string{"app": "adopt"}},
		Spec:       template("adopt").Spec,
	}
	if _, err := c.CoreV1().Pods(ns).Create(t.Context(), orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod another controller owns is left alone even if it matches.
	other, err := c.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owned := orphan.DeepCopy()
	owned.Name = "owned"
	owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: other.Name, UID: other.UID, Controller: ptr.To(true)}}
	if _, err := c.CoreV1().Pods(ns).Create(t.Context(), owned, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rs := createRS(t, c, "adopt", 2)
	eventually(t, "the orphan adopted and one pod created", func() bool {
		var mine int
		for _, p := range activePods(t, c, "adopt") {
			if ref := metav1.GetControllerOf(&p); ref != nil && ref.UID == rs.UID {
				mine++
			}
		}
		return mine == 2
	})
	pod, err := c.CoreV1().Pods(ns).Get(t.Context(), "orphan", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ref := metav1.GetControllerOf(pod); ref == nil || ref.UID != rs.UID || ref.APIVersion != "apps/v1" {
		t.Fatalf("orphan's controller = %+v", ref)
	}
	if got := activePods(t, c, "adopt"); len(got) != 3 {
		t.Fatalf("%d pods, want the orphan, the other controller's and one created", len(got))
	}
	eventually(t, "one SuccessfulCreate event", func() bool {
		return len(events(t, c, "ReplicaSet", "adopt", replicaset.ReasonSuccessfulCreate)) == 1
	})

	// A pod whose labels stop matching is released, and replaced.
	pod.Labels = map[string]string{"app": "elsewhere"}
	if _, err := c.CoreV1().Pods(ns).Update(t.Context(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pod released", func() bool {
		p, err := c.CoreV1().Pods(ns).Get(t.Context(), "orphan", metav1.GetOptions{})
		return err == nil && metav1.GetControllerOf(p) == nil
	})
	eventually(t, "a replacement", func() bool {
		s := getRS(t, c, "adopt").Status
		return s.Replicas == 2 && len(events(t, c, "ReplicaSet", "adopt", replicaset.ReasonSuccessfulCreate)) == 2
	})
	p, err := c.CoreV1().Pods(ns).Get(t.Context(), "owned", metav1.GetOptions{})
	if err != nil || metav1.GetControllerOf(p).Kind != "ConfigMap" {
		t.Fatalf("the pod of another controller: %+v, %v", p.OwnerReferences, err)
	}
}

func TestReplicaSetReportsCreateFailures(t *testing.T) {
	c := start(t)
	// Pod Security admission refuses the pods, not the ReplicaSet.
	setEnforce := func(level string) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := c.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels["pod-security.kubernetes.io/enforce"] = level
			_, err = c.CoreV1().Namespaces().Update(t.Context(), n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setEnforce("restricted")
	createRS(t, c, "refused", 3, func(rs *appsv1.ReplicaSet) {
		rs.Spec.Template.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	})
	var cond *appsv1.ReplicaSetCondition
	eventually(t, "the ReplicaFailure condition", func() bool {
		for _, c := range getRS(t, c, "refused").Status.Conditions {
			if c.Type == appsv1.ReplicaSetReplicaFailure {
				cond = &c
				return true
			}
		}
		return false
	})
	if cond.Status != corev1.ConditionTrue || cond.Reason != replicaset.ReasonFailedCreateCondition || !strings.Contains(cond.Message, "violates PodSecurity") {
		t.Fatalf("condition = %+v", cond)
	}
	eventually(t, "a FailedCreate event", func() bool {
		got := events(t, c, "ReplicaSet", "refused", replicaset.ReasonFailedCreate)
		return len(got) > 0 && strings.HasPrefix(got[0], "Error creating: ") && strings.Contains(got[0], "forbidden")
	})

	setEnforce("privileged")
	eventually(t, "3 pods and no condition", func() bool {
		rs := getRS(t, c, "refused")
		return rs.Status.Replicas == 3 && len(rs.Status.Conditions) == 0
	})
}

func TestReplicaSetMinReadySeconds(t *testing.T) {
	c := start(t)
	createRS(t, c, "slow", 1, func(rs *appsv1.ReplicaSet) { rs.Spec.MinReadySeconds = 2 })
	eventually(t, "a pod", func() bool { return len(activePods(t, c, "slow")) == 1 })
	setReady(t, c, activePods(t, c, "slow")[0].Name)
	eventually(t, "ready, not yet available", func() bool {
		s := getRS(t, c, "slow").Status
		return s.ReadyReplicas == 1 && s.AvailableReplicas == 0
	})
	// Nothing but the controller's own timer makes it available.
	eventually(t, "available after minReadySeconds", func() bool { return getRS(t, c, "slow").Status.AvailableReplicas == 1 })
}

func TestReplicationController(t *testing.T) {
	c := start(t)
	rc := &corev1.ReplicationController{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy"},
		Spec: corev1.ReplicationControllerSpec{
			Replicas: ptr.To[int32](2),
			Selector: map[string]string{"app": "legacy"},
			Template: ptr.To(template("legacy")),
		},
	}
	rc, err := c.CoreV1().ReplicationControllers(ns).Create(t.Context(), rc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 pods", func() bool { return len(activePods(t, c, "legacy")) == 2 })
	for _, p := range activePods(t, c, "legacy") {
		ref := metav1.GetControllerOf(&p)
		if p.GenerateName != "legacy-" || ref == nil || ref.Kind != "ReplicationController" || ref.APIVersion != "v1" || ref.UID != rc.UID {
			t.Fatalf("pod %s: generateName %q, controller %+v", p.Name, p.GenerateName, ref)
		}
		setReady(t, c, p.Name)
	}
	eventually(t, "the RC's status", func() bool {
		rc, err := c.CoreV1().ReplicationControllers(ns).Get(t.Context(), "legacy", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := rc.Status
		return s.Replicas == 2 && s.ReadyReplicas == 2 && s.AvailableReplicas == 2 && s.FullyLabeledReplicas == 2 && s.ObservedGeneration == rc.Generation
	})
	list, err := c.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var created int
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "ReplicationController" && e.Reason == replicaset.ReasonSuccessfulCreate {
			created++
			if e.Source.Component != replicaset.ReplicationComponent || !strings.HasPrefix(e.Message, "Created pod: legacy-") {
				t.Fatalf("event %+v", e)
			}
		}
	}
	if created != 2 {
		t.Fatalf("%d SuccessfulCreate events on the RC, want 2", created)
	}

	// Scale through the scale subresource, as kubectl scale does.
	scale, err := c.CoreV1().ReplicationControllers(ns).GetScale(t.Context(), "legacy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 0
	if _, err := c.CoreV1().ReplicationControllers(ns).UpdateScale(t.Context(), "legacy", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no pods", func() bool { return len(activePods(t, c, "legacy")) == 0 })
}

func TestReplicaSetDeletedOrphansOrCascades(t *testing.T) {
	c := start(t)
	createRS(t, c, "gone", 2)
	eventually(t, "2 pods", func() bool { return len(activePods(t, c, "gone")) == 2 })
	if err := c.AppsV1().ReplicaSets(ns).Delete(t.Context(), "gone", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationOrphan)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "orphaned pods", func() bool {
		ps := activePods(t, c, "gone")
		return len(ps) == 2 && metav1.GetControllerOf(&ps[0]) == nil && metav1.GetControllerOf(&ps[1]) == nil
	})
	// A new ReplicaSet of the same name adopts them and creates nothing.
	eventually(t, "the old ReplicaSet gone", func() bool {
		_, err := c.AppsV1().ReplicaSets(ns).Get(t.Context(), "gone", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	createRS(t, c, "gone", 2)
	eventually(t, "the pods adopted", func() bool {
		ps := activePods(t, c, "gone")
		return len(ps) == 2 && metav1.GetControllerOf(&ps[0]) != nil && metav1.GetControllerOf(&ps[1]) != nil
	})
	sel := labels.SelectorFromSet(labels.Set{"app": "gone"}).String()
	list, err := c.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(list.Items) != 2 {
		t.Fatal(fmt.Sprint(len(list.Items), err))
	}
}
