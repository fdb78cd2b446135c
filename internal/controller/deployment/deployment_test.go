package deployment_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/deployment"
	"github.com/moorage/moorage/internal/controller/replicaset"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = "default"

// neverReady is an image whose pods the test kubelet leaves Pending.
const neverReady = "example.com/never-ready"

// start runs a server with the Deployment and ReplicaSet controllers and a
// stand-in for the node agent that makes every pod Running and Ready as
// soon as it exists (but those of the neverReady image). It returns a
// client and the server's kubeconfig.
func start(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	srv := testserver.StartWithout(t, replicaset.Component, deployment.Component)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rs, err := replicaset.New(srv.Loopback, log, replicaset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dc, err := deployment.New(srv.Loopback, log, deployment.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := testserver.Client(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { rs.Run(ctx); done <- struct{}{} }()
	go func() { dc.Run(ctx); done <- struct{}{} }()
	go func() { runKubelet(ctx, c); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done; <-done })
	return c, srv.Kubeconfig
}

// runKubelet makes pods Running and Ready, as a node agent would once their
// containers run, until ctx is done.
func runKubelet(ctx context.Context, c kubernetes.Interface) {
	factory := informers.NewSharedInformerFactory(c, 0)
	pods := factory.Core().V1().Pods().Informer()
	todo := make(chan *corev1.Pod, 1000)
	enqueue := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && p.DeletionTimestamp == nil && !isReady(p) && p.Spec.Containers[0].Image != neverReady {
			select {
			case todo <- p:
			case <-ctx.Done():
			}
		}
	}
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-todo:
			_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				cur, err := c.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
				if err != nil || cur.DeletionTimestamp != nil || isReady(cur) {
					return nil
				}
				now := metav1.Now()
				cur.Status.Phase = corev1.PodRunning
				cur.Status.Conditions = []corev1.PodCondition{
					{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
					{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				}
				_, err = c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
				return err
			})
		}
	}
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newDeployment(name string, replicas int32, mutate ...func(*appsv1.Deployment)) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox:1"}}},
			},
		},
	}
	for _, m := range mutate {
		m(d)
	}
	return d
}

func create(t *testing.T, c kubernetes.Interface, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	d, err := c.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func get(t *testing.T, c kubernetes.Interface, name string) *appsv1.Deployment {
	t.Helper()
	d, err := c.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func update(t *testing.T, c kubernetes.Interface, name string, mutate func(*appsv1.Deployment)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := get(t, c, name)
		mutate(d)
		_, err := c.AppsV1().Deployments(ns).Update(t.Context(), d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func setImage(image string) func(*appsv1.Deployment) {
	return func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = image }
}

// replicaSets lists the ReplicaSets of the Deployment, by revision.
func replicaSets(t *testing.T, c kubernetes.Interface, name string) []appsv1.ReplicaSet {
	t.Helper()
	list, err := c.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		t.Fatal(err)
	}
	revision := func(rs appsv1.ReplicaSet) int {
		n, _ := strconv.Atoi(rs.Annotations[deployment.RevisionAnnotation])
		return n
	}
	slices.SortFunc(list.Items, func(a, b appsv1.ReplicaSet) int { return revision(a) - revision(b) })
	return list.Items
}

// complete tells whether the rollout is over, as kubectl rollout status
// decides it.
func complete(d *appsv1.Deployment) bool {
	s := d.Status
	return d.Generation <= s.ObservedGeneration && s.UpdatedReplicas == *d.Spec.Replicas &&
		s.Replicas == s.UpdatedReplicas && s.AvailableReplicas == s.UpdatedReplicas
}

func condition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) appsv1.DeploymentCondition {
	for _, c := range d.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return appsv1.DeploymentCondition{}
}

func events(t *testing.T, c kubernetes.Interface, name, reason string) []string {
	t.Helper()
	list, err := c.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Deployment" && e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

func TestDeploymentCreatesItsReplicaSet(t *testing.T) {
	c, _ := start(t)
	d := create(t, c, newDeployment("web", 3))
	eventually(t, "the rollout to complete", func() bool { return complete(get(t, c, "web")) })

	d = get(t, c, "web")
	rss := replicaSets(t, c, "web")
	if len(rss) != 1 {
		t.Fatalf("%d ReplicaSets", len(rss))
	}
	rs := rss[0]
	hash := deployment.ComputeHash(&d.Spec.Template, nil)
	if rs.Name != "web-"+hash || rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash ||
		rs.Spec.Selector.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] != hash ||
		rs.Spec.Template.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash {
		t.Fatalf("ReplicaSet %s, labels %v, selector %v; want the hash %s", rs.Name, rs.Labels, rs.Spec.Selector, hash)
	}
	if ref := metav1.GetControllerOf(&rs); ref == nil || ref.UID != d.UID || ref.Kind != "Deployment" {
		t.Fatalf("controller %+v", ref)
	}
	for k, v := range map[string]string{deployment.RevisionAnnotation: "1", deployment.DesiredReplicasAnnotation: "3", deployment.MaxReplicasAnnotation: "4"} {
		if rs.Annotations[k] != v {
			t.Errorf("ReplicaSet annotation %s = %q, want %q", k, rs.Annotations[k], v)
		}
	}
	if got := d.Annotations[deployment.RevisionAnnotation]; got != "1" {
		t.Errorf("Deployment revision %q, want 1", got)
	}
	s := d.Status
	if s.Replicas != 3 || s.UpdatedReplicas != 3 || s.ReadyReplicas != 3 || s.AvailableReplicas != 3 || s.UnavailableReplicas != 0 || s.ObservedGeneration != d.Generation {
		t.Errorf("status %+v", s)
	}
	if a := condition(d, appsv1.DeploymentAvailable); a.Status != corev1.ConditionTrue || a.Reason != deployment.ReasonMinimumReplicasAvailable {
		t.Errorf("Available %+v", a)
	}
	eventually(t, "Progressing NewReplicaSetAvailable", func() bool {
		p := condition(get(t, c, "web"), appsv1.DeploymentProgressing)
		return p.Status == corev1.ConditionTrue && p.Reason == deployment.ReasonNewReplicaSetAvailable &&
			p.Message == fmt.Sprintf("ReplicaSet %q has successfully progressed.", rs.Name)
	})
	eventually(t, "the scaling event", func() bool {
		return slices.Contains(events(t, c, "web", deployment.ReasonScalingReplicaSet), fmt.Sprintf("Scaled up replica set %s from 0 to 3", rs.Name))
	})
}

// watchSizes follows the ReplicaSets of a Deployment and reports a violation
// of the rolling update's bounds: spec.replicas summed over them above max.
func watchSizes(t *testing.T, c kubernetes.Interface, app string, max int32) func() {
	t.Helper()
	w, err := c.AppsV1().ReplicaSets(ns).Watch(t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int32{}
	var violation string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			rs, ok := ev.Object.(*appsv1.ReplicaSet)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(sizes, rs.Name)
			} else {
				sizes[rs.Name] = *rs.Spec.Replicas
			}
			var total int32
			for _, n := range sizes {
				total += n
			}
			if total > max && violation == "" {
				violation = fmt.Sprintf("%v sums to %d > %d", sizes, total, max)
			}
		}
	}()
	return func() {
		t.Helper()
		w.Stop()
		<-done
		if violation != "" {
			t.Errorf("surge exceeded: %s", violation)
		}
	}
}

func TestRollingUpdate(t *testing.T) {
	c, _ := start(t)
	create(t, c, newDeployment("web", 4, func(d *appsv1.Deployment) {
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0))}
	}))
	eventually(t, "the first rollout", func() bool { return complete(get(t, c, "web")) })
	check := watchSizes(t, c, "web", 5)
	update(t, c, "web", setImage("busybox:2"))
	eventually(t, "the second rollout", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "2"
	})
	check()

	rss := replicaSets(t, c, "web")
	if len(rss) != 2 {
		t.Fatalf("%d ReplicaSets, want the old one kept", len(rss))
	}
	old, cur := rss[0], rss[1]
	if old.Annotations[deployment.RevisionAnnotation] != "1" || *old.Spec.Replicas != 0 ||
		cur.Annotations[deployment.RevisionAnnotation] != "2" || *cur.Spec.Replicas != 4 || cur.Spec.Template.Spec.Containers[0].Image != "busybox:2" {
		t.Fatalf("old %s rev %s ×%d, new %s rev %s ×%d", old.Name, old.Annotations[deployment.RevisionAnnotation], *old.Spec.Replicas,
			cur.Name, cur.Annotations[deployment.RevisionAnnotation], *cur.Spec.Replicas)
	}
	got := events(t, c, "web", deployment.ReasonScalingReplicaSet)
	for _, want := range []string{
		fmt.Sprintf("Scaled up replica set %s from 0 to 1", cur.Name),
		fmt.Sprintf("Scaled down replica set %s from 4 to 3", old.Name),
		fmt.Sprintf("Scaled down replica set %s from 1 to 0", old.Name),
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no event %q in %q", want, got)
		}
	}
}

func TestRecreate(t *testing.T) {
	c, _ := start(t)
	const hold = "example.com/hold"
	create(t, c, newDeployment("db", 2, func(d *appsv1.Deployment) {
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
		d.Spec.Template.Finalizers = []string{hold} // the old pods linger, terminating
	}))
	eventually(t, "the first rollout", func() bool { return complete(get(t, c, "db")) })
	oldRS := replicaSets(t, c, "db")[0]
	update(t, c, "db", func(d *appsv1.Deployment) {
		setImage("busybox:2")(d)
		d.Spec.Template.Finalizers = nil
	})
	eventually(t, "the old pods terminating", func() bool {
		rs, err := c.AppsV1().ReplicaSets(ns).Get(t.Context(), oldRS.Name, metav1.GetOptions{})
		if err != nil || *rs.Spec.Replicas != 0 || rs.Status.Replicas != 0 {
			return false
		}
		d := get(t, c, "db")
		return d.Status.ObservedGeneration == d.Generation && d.Status.Replicas == 0
	})
	if rss := replicaSets(t, c, "db"); len(rss) != 1 {
		t.Fatalf("a new ReplicaSet while old pods still run: %d ReplicaSets", len(rss))
	}
	// The old pods go.
	pods, err := c.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=db"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		p.Finalizers = nil
		if _, err := c.CoreV1().Pods(ns).Update(t.Context(), &p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the second rollout", func() bool {
		d := get(t, c, "db")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "2"
	})
	rss := replicaSets(t, c, "db")
	if len(rss) != 2 || *rss[1].Spec.Replicas != 2 || *rss[0].Spec.Replicas != 0 {
		t.Fatalf("ReplicaSets after Recreate: %d", len(rss))
	}
	if !slices.Contains(events(t, c, "db", deployment.ReasonScalingReplicaSet), fmt.Sprintf("Scaled up replica set %s from 0 to 2", rss[1].Name)) {
		t.Error("no scale-up event of the new ReplicaSet")
	}
}

func TestRollbackThroughTheTemplate(t *testing.T) {
	c, _ := start(t)
	create(t, c, newDeployment("web", 2))
	eventually(t, "revision 1", func() bool { return complete(get(t, c, "web")) })
	first := get(t, c, "web").Spec.Template
	update(t, c, "web", setImage("busybox:2"))
	eventually(t, "revision 2", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "2"
	})
	// Roll back as kubectl rollout undo does: the template of revision 1.
	update(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Template = first })
	eventually(t, "revision 3", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "3"
	})
	rss := replicaSets(t, c, "web")
	if len(rss) != 2 {
		t.Fatalf("%d ReplicaSets, want the first one reused", len(rss))
	}
	back := rss[1]
	if back.Spec.Template.Spec.Containers[0].Image != "busybox:1" || back.Annotations[deployment.RevisionHistoryAnnotation] != "1" || *back.Spec.Replicas != 2 {
		t.Fatalf("the ReplicaSet rolled back to: %s, annotations %v", back.Name, back.Annotations)
	}
}

func TestPausedDeployment(t *testing.T) {
	c, _ := start(t)
	create(t, c, newDeployment("web", 2))
	eventually(t, "the first rollout", func() bool { return complete(get(t, c, "web")) })
	update(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Paused = true })
	eventually(t, "Progressing DeploymentPaused", func() bool {
		p := condition(get(t, c, "web"), appsv1.DeploymentProgressing)
		return p.Status == corev1.ConditionUnknown && p.Reason == deployment.ReasonDeploymentPaused && p.Message == "Deployment is paused"
	})
	// A new template waits; a new size does not.
	update(t, c, "web", func(d *appsv1.Deployment) {
		setImage("busybox:2")(d)
		d.Spec.Replicas = ptr.To[int32](3)
	})
	eventually(t, "the paused Deployment scaled", func() bool {
		d := get(t, c, "web")
		return d.Status.ObservedGeneration == d.Generation && d.Status.Replicas == 3 && d.Status.AvailableReplicas == 3
	})
	rss := replicaSets(t, c, "web")
	if len(rss) != 1 || rss[0].Spec.Template.Spec.Containers[0].Image != "busybox:1" {
		t.Fatalf("a paused Deployment rolled out: %d ReplicaSets", len(rss))
	}
	update(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Paused = false })
	eventually(t, "the rollout after resuming", func() bool {
		d := get(t, c, "web")
		return complete(d) && d.Annotations[deployment.RevisionAnnotation] == "2" && d.Status.Replicas == 3
	})
	p := condition(get(t, c, "web"), appsv1.DeploymentProgressing)
	if p.Status != corev1.ConditionTrue {
		t.Fatalf("Progressing %+v after resuming", p)
	}
}

func TestProgressDeadlineExceeded(t *testing.T) {
	c, kubeconfig := start(t)
	create(t, c, newDeployment("stuck", 2, func(d *appsv1.Deployment) {
		d.Spec.ProgressDeadlineSeconds = ptr.To[int32](2)
		setImage(neverReady)(d)
	}))
	var d *appsv1.Deployment
	eventually(t, "ProgressDeadlineExceeded", func() bool {
		d = get(t, c, "stuck")
		return condition(d, appsv1.DeploymentProgressing).Reason == deployment.ReasonProgressDeadlineExceeded
	})
	p := condition(d, appsv1.DeploymentProgressing)
	rs := replicaSets(t, c, "stuck")[0]
	if p.Status != corev1.ConditionFalse || p.Message != fmt.Sprintf("ReplicaSet %q has timed out progressing.", rs.Name) {
		t.Fatalf("Progressing %+v", p)
	}
	if p.LastUpdateTime.Sub(d.CreationTimestamp.Time) < 2*time.Second {
		t.Fatalf("timed out at %v, before the deadline of a Deployment created at %v", p.LastUpdateTime, d.CreationTimestamp)
	}
	if a := condition(d, appsv1.DeploymentAvailable); a.Status != corev1.ConditionFalse || a.Reason != deployment.ReasonMinimumReplicasUnavailable {
		t.Fatalf("Available %+v", a)
	}
	if _, err := exec.LookPath("kubectl"); err == nil {
		out, err := runKubectl(t, kubeconfig, "rollout", "status", "deployment/stuck", "--timeout=20s")
		if err == nil || !strings.Contains(out, `deployment "stuck" exceeded its progress deadline`) {
			t.Fatalf("kubectl rollout status of a timed-out rollout: %v\n%s", err, out)
		}
	}
	// A working template makes progress again.
	update(t, c, "stuck", setImage("busybox:1"))
	eventually(t, "the rollout to complete", func() bool {
		d := get(t, c, "stuck")
		return complete(d) && condition(d, appsv1.DeploymentProgressing).Reason == deployment.ReasonNewReplicaSetAvailable
	})
}

func TestRevisionHistoryLimit(t *testing.T) {
	c, _ := start(t)
	create(t, c, newDeployment("web", 1, func(d *appsv1.Deployment) { d.Spec.RevisionHistoryLimit = ptr.To[int32](1) }))
	for i, image := range []string{"busybox:1", "busybox:2", "busybox:3", "busybox:4"} {
		if i > 0 {
			update(t, c, "web", setImage(image))
		}
		eventually(t, "rollout of "+image, func() bool {
			d := get(t, c, "web")
			return complete(d) && d.Annotations[deployment.RevisionAnnotation] == fmt.Sprint(i+1)
		})
	}
	eventually(t, "the oldest ReplicaSets deleted", func() bool { return len(replicaSets(t, c, "web")) == 2 })
	rss := replicaSets(t, c, "web")
	if rss[0].Annotations[deployment.RevisionAnnotation] != "3" || rss[1].Annotations[deployment.RevisionAnnotation] != "4" {
		t.Fatalf("kept revisions %s and %s, want 3 and 4", rss[0].Annotations[deployment.RevisionAnnotation], rss[1].Annotations[deployment.RevisionAnnotation])
	}
}

func TestProportionalScalingMidRollout(t *testing.T) {
	c, _ := start(t)
	create(t, c, newDeployment("web", 10, func(d *appsv1.Deployment) {
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(3)), MaxUnavailable: ptr.To(intstr.FromInt32(2))}
	}))
	eventually(t, "the first rollout", func() bool { return complete(get(t, c, "web")) })
	// A template whose pods never become ready: the rollout stops at
	// 8 old and 5 new (10 + 3 surge; 8 available).
	update(t, c, "web", setImage(neverReady))
	sizes := func() (int32, int32) {
		rss := replicaSets(t, c, "web")
		if len(rss) != 2 {
			return -1, -1
		}
		return *rss[0].Spec.Replicas, *rss[1].Spec.Replicas
	}
	eventually(t, "the rollout stuck at 8 old and 5 new", func() bool {
		o, n := sizes()
		return o == 8 && n == 5
	})
	update(t, c, "web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](20) })
	// 23 allowed, 10 more: 6 to the old (8*23/13 - 8), 4 to the new.
	eventually(t, "the ReplicaSets scaled in proportion", func() bool {
		o, n := sizes()
		return o == 14 && n == 9
	})
	rss := replicaSets(t, c, "web")
	if !slices.Contains(events(t, c, "web", deployment.ReasonScalingReplicaSet), fmt.Sprintf("Scaled up replica set %s from 8 to 14", rss[0].Name)) {
		t.Error("no proportional scaling event")
	}
	for _, rs := range rss {
		if rs.Annotations[deployment.DesiredReplicasAnnotation] != "20" || rs.Annotations[deployment.MaxReplicasAnnotation] != "23" {
			t.Errorf("%s annotations %v", rs.Name, rs.Annotations)
		}
	}
}
