package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// BenchmarkStatefulSetParallel500: a StatefulSet of 500 replicas,
// podManagementPolicy Parallel, one volumeClaimTemplate. Its claims bind to
// 500 volumes made beforehand: hostPath PVs (directories of a temporary
// directory) of a class without a provisioner and with Immediate binding,
// the cheapest real volumes: the binder's ordinary path, and a bind mount
// in the pod. An op is from the set's create until all claims are Bound
// and all pods Running, each counted through a watch. Run with -benchtime 1x.
//
// The pods are spread over 5 nodes (agents in this process): an agent
// offers 110 pods, as the kubelet's default --max-pods, with no option to
// raise it, and a node's pod CIDR is a /24 (253 addresses).
func BenchmarkStatefulSetParallel500(b *testing.B) {
	benchParallelSet(b, 500, 5)
}

func benchParallelSet(b *testing.B, replicas, nodes int) {
	c, _ := startNodes(b, nodes)
	ctx := context.Background()
	waitNodesReady(b, c, nodes)
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "bench-hostpath"}, Provisioner: "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate)}
	if _, err := c.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	hostDir := b.TempDir()
	var allBound, allRunning time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		ns := benchNamespace(b, c, it)
		parallel(b, replicas, func(i int) error {
			dir := filepath.Join(hostDir, fmt.Sprintf("%d-%03d", it, i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			_, err := c.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pv-%d-%03d", it, i)},
				Spec: corev1.PersistentVolumeSpec{
					StorageClassName: class.Name, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
					AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
				}}, metav1.CreateOptions{})
			return err
		})
		set := benchSet(ns, replicas, appsv1.ParallelPodManagement)
		set.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(class.Name), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		}}}
		set.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}

		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		claims, pods := c.CoreV1().PersistentVolumeClaims(ns), c.CoreV1().Pods(ns)
		claimsRV, podsRV := listRV(b, wctx, claims.List), listRV(b, wctx, pods.List)
		bound, running := make(chan time.Time, 1), make(chan time.Time, 1)
		go func() {
			bound <- countUntil(b, wctx, claims.Watch, claimsRV, replicas, func(o runtime.Object) (string, bool) {
				claim := o.(*corev1.PersistentVolumeClaim)
				return claim.Name, claim.Status.Phase == corev1.ClaimBound
			})
		}()
		go func() {
			running <- countUntil(b, wctx, pods.Watch, podsRV, replicas, func(o runtime.Object) (string, bool) {
				pod := o.(*corev1.Pod)
				return pod.Name, pod.Status.Phase == corev1.PodRunning
			})
		}()
		b.StartTimer()
		start := time.Now()
		if _, err := c.AppsV1().StatefulSets(ns).Create(ctx, set, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		allBound += (<-bound).Sub(start)
		allRunning += (<-running).Sub(start)
		b.StopTimer()
		cancel()
		deleteSet(b, c, ns, set.Name, replicas)
	}
	n := float64(b.N)
	b.ReportMetric(allBound.Seconds()/n, "s-all-bound")
	b.ReportMetric(allRunning.Seconds()/n, "s-all-running")
	b.ReportMetric(float64(replicas)*n/allRunning.Seconds(), "pods/s")
}

// BenchmarkStatefulSetOrderedReady20: a StatefulSet of 20 replicas,
// OrderedReady, whose pods are Ready at their first readiness probe (exec
// true, every second). Reported: how long the controller takes from pod N
// turning Ready to pod N+1 being created, median and max (both measured as
// the arrival of the pods' watch events: creationTimestamp has only second
// resolution), and the total from the set's create until the last pod is
// Ready. Run with -benchtime 1x or more.
func BenchmarkStatefulSetOrderedReady20(b *testing.B) {
	const replicas = 20
	c, _ := startNodes(b, 1)
	ctx := context.Background()
	waitNodesReady(b, c, 1)
	var gaps []time.Duration
	var total time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		ns := benchNamespace(b, c, it)
		set := benchSet(ns, replicas, appsv1.OrderedReadyPodManagement)
		set.Spec.Template.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}},
			PeriodSeconds: 1,
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		pods := c.CoreV1().Pods(ns)
		rv := listRV(b, wctx, pods.List)
		created, ready := map[string]time.Time{}, map[string]time.Time{}
		last := fmt.Sprintf("%s-%d", set.Name, replicas-1)
		b.StartTimer()
		start := time.Now()
		if _, err := c.AppsV1().StatefulSets(ns).Create(ctx, set, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		followWatch(b, wctx, pods.Watch, rv, func(ev watch.Event, at time.Time) bool {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				return false
			}
			if _, seen := created[pod.Name]; !seen && ev.Type == watch.Added {
				created[pod.Name] = at
			}
			if _, seen := ready[pod.Name]; !seen && podReady(pod) {
				ready[pod.Name] = at
			}
			_, done := ready[last]
			return done
		})
		total += ready[last].Sub(start)
		b.StopTimer()
		cancel()
		for n := 0; n+1 < replicas; n++ {
			gaps = append(gaps, created[fmt.Sprintf("%s-%d", set.Name, n+1)].Sub(ready[fmt.Sprintf("%s-%d", set.Name, n)]))
		}
		deleteSet(b, c, ns, set.Name, replicas)
	}
	slices.Sort(gaps)
	b.ReportMetric(float64(gaps[len(gaps)/2].Microseconds())/1000, "ms-ready-to-next-p50")
	b.ReportMetric(float64(gaps[len(gaps)-1].Microseconds())/1000, "ms-ready-to-next-max")
	b.ReportMetric(total.Seconds()/float64(b.N), "s-total")
}

// benchSet is a StatefulSet of busybox pods sleeping (killed at once on
// deletion: sleep as PID 1 ignores SIGTERM).
func benchSet(ns string, replicas int, policy appsv1.PodManagementPolicyType) *appsv1.StatefulSet {
	labels := map[string]string{"app": "bench"}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(replicas)), PodManagementPolicy: policy, ServiceName: "bench",
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To(int64(0)),
				Containers:                    []corev1.Container{{Name: "main", Image: "busybox", ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}},
			}},
		},
	}
}

// benchNamespace makes iteration it's namespace.
func benchNamespace(b *testing.B, c kubernetes.Interface, it int) string {
	b.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", it)}}
	if _, err := c.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	return ns.Name
}

func waitNodesReady(b *testing.B, c kubernetes.Interface, n int) {
	b.Helper()
	waitFor(b, func() bool {
		nodes, err := c.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		ready := 0
		for _, node := range nodes.Items {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue && node.Spec.PodCIDR != "" {
					ready++
				}
			}
		}
		return ready == n
	})
}

// deleteSet deletes the set and waits until its pods are gone: the agents
// delete a pod once its containers are stopped and its sandbox removed.
func deleteSet(b *testing.B, c kubernetes.Interface, ns, name string, replicas int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pods := c.CoreV1().Pods(ns)
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if len(list.Items) != replicas {
		b.Errorf("%d pods before deleting the set, want %d", len(list.Items), replicas)
	}
	if err := c.AppsV1().StatefulSets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	left := map[string]bool{}
	for _, p := range list.Items {
		left[p.Name] = true
	}
	if len(left) == 0 {
		return
	}
	followWatch(b, ctx, pods.Watch, list.ResourceVersion, func(ev watch.Event, _ time.Time) bool {
		if pod, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Deleted {
			delete(left, pod.Name)
		}
		return len(left) == 0
	})
}

// parallel runs f(0) … f(n-1) on 8 goroutines, as 8 clients would.
func parallel(b *testing.B, n int, f func(int) error) {
	b.Helper()
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := f(i); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// listRV is the resource version to watch from, before what is watched
// exists.
func listRV[L interface{ GetResourceVersion() string }](b *testing.B, ctx context.Context, list func(context.Context, metav1.ListOptions) (L, error)) string {
	b.Helper()
	l, err := list(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return l.GetResourceVersion()
}

// countUntil follows a watch from rv until n objects satisfy ok (which
// names the object and says whether it counts) and returns the arrival
// time of the event that made it n.
func countUntil(b *testing.B, ctx context.Context, watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), rv string, n int, ok func(runtime.Object) (string, bool)) time.Time {
	counted := map[string]bool{}
	var when time.Time
	followWatch(b, ctx, watchFn, rv, func(ev watch.Event, at time.Time) bool {
		name, yes := ok(ev.Object)
		if yes && ev.Type != watch.Deleted {
			counted[name] = true
		} else {
			delete(counted, name)
		}
		when = at
		return len(counted) == n
	})
	return when
}

// followWatch passes each event of a watch from rv, with its arrival time,
// to f until f returns true; a watch the server ends is resumed from the
// last resource version seen. It fails the benchmark when ctx ends first.
func followWatch(b *testing.B, ctx context.Context, watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), rv string, f func(watch.Event, time.Time) bool) {
	for {
		w, err := watchFn(ctx, metav1.ListOptions{ResourceVersion: rv})
		if err != nil {
			b.Errorf("watch: %v", err)
			return
		}
		for ev := range w.ResultChan() {
			at := time.Now()
			if ev.Type == watch.Error {
				continue
			}
			if o, ok := ev.Object.(metav1.Object); ok {
				rv = o.GetResourceVersion()
			}
			if f(ev, at) {
				w.Stop()
				return
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			b.Errorf("watch from %s: %v", rv, ctx.Err())
			return
		}
	}
}
