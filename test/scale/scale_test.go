// Package scale is issue 7's scale benchmark: a real moorage server
// in-process, on the embedded store or on etcd, with 100 hollow nodes — node
// agents that start no containers but talk to the API as kubelets do (see
// hollowNode) — and 10,000 pods, made by 100 ReplicaSets of 100 replicas
// or by 8 clients creating pods directly. It measures what a cluster of
// that size asks of the API server:
//
//   - scheduling throughput: pods bound per second, from the first create
//     until a separate watcher has seen all of them with spec.nodeName (and
//     the time until all are Running and Ready, as the hollow nodes report);
//   - LIST latency: all pods, with and without resourceVersion=0, and one
//     node's pods by field selector (a kubelet's relist), p50 and p99;
//   - watch latency under load: one pod's label written every 20 ms while
//     the pods are being placed, from the write's response until its event
//     reaches a watcher on another connection, p50 and p99;
//   - the CPU time and peak RSS of this process (server, hollow nodes and
//     the benchmark's clients together) and of etcd;
//   - and at the end, the time to delete the workload (graceful deletion,
//     each pod removed by its hollow node).
//
// Run it with
//
//	go test ./test/scale/ -run '^$' -bench . -benchtime 1x -timeout 60m
//
// The etcd runs start Debian's etcd (hack/install-etcd.sh) through
// internal/testserver/etcdtest, which skips them without it (and fails as
// root, where a missing etcd is a setup error). -args -scale.nodes,
// -scale.pods, -scale.via and -scale.stores change the size, the path pods
// take and the backends. It is skipped with -short.
package scale

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/app"
	"github.com/moorage/moorage/internal/testserver/etcdtest"
)

var (
	flagNodes   = flag.Int("scale.nodes", 100, "hollow nodes")
	flagPods    = flag.Int("scale.pods", 10000, "pods")
	flagVia     = flag.String("scale.via", "replicasets", "how pods are made: replicasets (of 100 replicas), pods (8 clients creating them), or both, comma-separated")
	flagStores  = flag.String("scale.stores", "embedded,etcd", "store backends to measure, comma-separated")
	flagTimeout = flag.Duration("scale.timeout", 30*time.Minute, "the longest a phase may take")
)

const (
	namespace     = "scale"
	workloadLabel = "scale=workload"
	perReplicaSet = 100
	podCreators   = 8
	listCalls     = 20
	probeEvery    = 20 * time.Millisecond
	probeSamples  = 1000
)

func BenchmarkScale(b *testing.B) {
	if testing.Short() {
		b.Skip("the scale benchmark takes minutes: skipped with -short")
	}
	for _, store := range strings.Split(*flagStores, ",") {
		b.Run("store="+store, func(b *testing.B) {
			for _, via := range strings.Split(*flagVia, ",") {
				b.Run("via="+via, func(b *testing.B) {
					for range b.N {
						runScale(b, store, via)
					}
				})
			}
		})
	}
}

// runScale runs one whole scenario on a fresh server; the benchmark's timer
// runs from the first create until every pod is Running.
func runScale(b *testing.B, store, via string) {
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := app.ServerOptions{
		DataDir: b.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	etcdPid := 0
	switch store {
	case "embedded":
	case "etcd":
		// One member with etcd's production settings (every commit
		// fsync'd), on loopback ports, its data on the same disk.
		e := etcdtest.StartCluster(b, 1)
		opts.Etcd = app.EtcdOptions{Endpoints: e.Endpoints()}
		etcdPid = e.Members[0].Pid()
	default:
		b.Fatalf("unknown store %q", store)
	}
	srv, err := app.StartServer(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	c, err := newClient(srv.Loopback, "scale-benchmark")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}

	// The nodes.
	start := time.Now()
	nodes := make([]*hollowNode, *flagNodes)
	registered := make(chan error, len(nodes))
	var nodesWG sync.WaitGroup
	defer nodesWG.Wait()
	defer cancel()
	for i := range nodes {
		h, err := newHollowNode(srv.Loopback, fmt.Sprintf("hollow-%03d", i))
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = h
		nodesWG.Go(func() { h.run(ctx, registered) })
	}
	for range nodes {
		select {
		case err := <-registered:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(*flagTimeout):
			b.Fatal("hollow nodes not registered in time")
		}
	}
	nodesReady := time.Since(start)
	b.Logf("%d hollow nodes registered, with pod CIDRs, in %v", len(nodes), nodesReady.Round(time.Millisecond))
	waitFor(b, time.Minute, "the default service account", func() (bool, string) {
		_, err := c.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})

	tr, err := track(ctx, c, namespace, workloadLabel)
	if err != nil {
		b.Fatal(err)
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	probe, err := startProbe(probeCtx, srv.Loopback, namespace, probeEvery, probeSamples)
	if err != nil {
		b.Fatal(err)
	}

	// The workload.
	n := *flagPods
	before := readUsage(etcdPid)
	b.StartTimer()
	t0 := time.Now()
	switch via {
	case "replicasets":
		err = createReplicaSets(ctx, c, n)
	case "pods":
		err = createPods(ctx, srv.Loopback, n)
	default:
		b.Fatalf("unknown -scale.via %q", via)
	}
	if err != nil {
		b.Fatal(err)
	}
	created := time.Since(t0)
	progress := func(what string, done func(added, bound, running, gone int) bool) {
		b.Helper()
		began := time.Now()
		deadline := began.Add(*flagTimeout)
		next := began.Add(10 * time.Second)
		for {
			added, bound, running, gone, err := tr.counts()
			if err != nil {
				b.Fatal(err)
			}
			if done(added, bound, running, gone) {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within %v: %d pods seen, %d bound, %d running, %d gone", what, *flagTimeout, added, bound, running, gone)
			}
			if time.Now().After(next) {
				// Live, on stderr: a benchmark's log is printed when it ends.
				fmt.Fprintf(os.Stderr, "%s %s/%s, %s: %6.1fs: %d pods seen, %d bound, %d running, %d gone\n",
					time.Now().Format("15:04:05"), store, via, what, time.Since(began).Seconds(), added, bound, running, gone)
				next = next.Add(10 * time.Second)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	progress("all pods Running", func(added, bound, running, gone int) bool { return running >= n })
	b.StopTimer()
	stopProbe()
	after := readUsage(etcdPid)

	tr.mu.Lock()
	tAdded, tBound, tRunning := last(tr.added), last(tr.bound), last(tr.running)
	bindLat, runLat := spans(tr.added, tr.bound), spans(tr.bound, tr.running)
	tr.mu.Unlock()
	pr := probe.result()
	if pr.err != nil {
		b.Errorf("watch probe: %v", pr.err)
	}
	watchLat := pr.afterResponse
	var hollowErrs int64
	for _, h := range nodes {
		hollowErrs += h.errs.Load()
		if e := h.lastErr.Load(); e != nil {
			b.Logf("%s: %d failed writes, the last: %v", h.name, h.errs.Load(), *e)
		}
	}

	// The nodes stayed Ready (their leases renewed in time under load),
	// and the scheduler spread the pods over them.
	notReady := 0
	nl, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "moorage.io/hollow=true"})
	if err != nil {
		b.Fatal(err)
	}
	for _, node := range nl.Items {
		ready := false
		for _, cond := range node.Status.Conditions {
			ready = ready || (cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue)
		}
		if !ready || len(node.Spec.Taints) > 0 {
			notReady++
			b.Errorf("node %s: Ready %v, taints %v", node.Name, ready, node.Spec.Taints)
		}
	}
	perNode := map[string]int{}

	// LIST latency, with the workload in place and the system at rest.
	lists := map[string][]time.Duration{}
	for _, l := range []struct {
		name string
		opts metav1.ListOptions
		min  int
	}{
		{"list_all", metav1.ListOptions{}, n},
		{"list_rv0", metav1.ListOptions{ResourceVersion: "0"}, n},
		{"list_node", metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", nodes[0].name).String()}, 1},
	} {
		for range listCalls {
			s := time.Now()
			got, err := c.CoreV1().Pods(namespace).List(ctx, l.opts)
			d := time.Since(s)
			if err != nil {
				b.Fatal(err)
			}
			if len(got.Items) < l.min {
				b.Fatalf("%s: %d pods, want at least %d", l.name, len(got.Items), l.min)
			}
			lists[l.name] = append(lists[l.name], d)
			if l.name == "list_all" && len(perNode) == 0 {
				for i := range got.Items {
					if p := &got.Items[i]; p.Labels["scale"] == "workload" {
						perNode[p.Spec.NodeName]++
					}
				}
			}
		}
	}
	fewest, most := n, 0
	for _, h := range nodes {
		fewest, most = min(fewest, perNode[h.name]), max(most, perNode[h.name])
	}

	// Deleting it all: graceful deletion, finished by the hollow nodes.
	t1 := time.Now()
	if err := deleteWorkload(ctx, c, via); err != nil {
		b.Fatal(err)
	}
	progress("all pods gone", func(added, bound, running, gone int) bool { return gone >= n })
	deleted := time.Since(t1)

	allBound, allRunning := tBound.Sub(t0), tRunning.Sub(t0)
	b.ReportMetric(float64(len(nodes)), "nodes")
	b.ReportMetric(float64(n), "pods")
	b.ReportMetric(float64(n)/allBound.Seconds(), "bound/s")
	b.ReportMetric(allBound.Seconds(), "all-bound-s")
	b.ReportMetric(allRunning.Seconds(), "all-running-s")
	b.ReportMetric(float64(n)/tAdded.Sub(t0).Seconds(), "created/s")
	b.ReportMetric(ms(percentile(bindLat, 50)), "bind-p50-ms")
	b.ReportMetric(ms(percentile(bindLat, 99)), "bind-p99-ms")
	b.ReportMetric(ms(percentile(runLat, 50)), "bound-to-running-p50-ms")
	b.ReportMetric(ms(percentile(runLat, 99)), "bound-to-running-p99-ms")
	for _, name := range []string{"list_all", "list_rv0", "list_node"} {
		b.ReportMetric(ms(percentile(lists[name], 50)), name+"-p50-ms")
		b.ReportMetric(ms(percentile(lists[name], 99)), name+"-p99-ms")
	}
	b.ReportMetric(ms(percentile(watchLat, 50)), "watch-p50-ms")
	b.ReportMetric(ms(percentile(watchLat, 99)), "watch-p99-ms")
	b.ReportMetric(ms(percentile(pr.afterRequest, 50)), "write-to-event-p50-ms")
	b.ReportMetric(ms(percentile(pr.afterRequest, 99)), "write-to-event-p99-ms")
	b.ReportMetric(float64(len(watchLat)), "watch-samples")
	b.ReportMetric(deleted.Seconds(), "delete-all-s")
	b.ReportMetric((after.cpu - before.cpu).Seconds(), "cpu-s")
	b.ReportMetric(float64(after.maxRSS)/(1<<20), "peak-rss-MiB")
	if etcdPid > 0 {
		b.ReportMetric((after.etcdCPU - before.etcdCPU).Seconds(), "etcd-cpu-s")
		b.ReportMetric(float64(after.etcdHW)/(1<<20), "etcd-peak-rss-MiB")
	}
	b.ReportMetric(float64(hollowErrs), "hollow-write-errors")
	b.ReportMetric(float64(notReady), "nodes-not-ready")
	b.ReportMetric(float64(fewest), "pods-per-node-min")
	b.ReportMetric(float64(most), "pods-per-node-max")
	b.Logf("store=%s via=%s: %d nodes ready in %v; %d pods: creates returned after %v, all seen after %v, all bound after %v (%.0f/s), all Running after %v; "+
		"bind p50 %v p99 %v; LIST all p50 %v p99 %v, rv=0 p50 %v p99 %v, one node p50 %v p99 %v; watch (after the response) p50 %v p99 %v over %d writes (%d events before the response, %d missing), from the request p50 %v p99 %v; "+
		"deleted in %v; CPU %v (etcd %v), peak RSS %d MiB (etcd %d MiB); %d hollow-node write errors; %d nodes not Ready or tainted; %d to %d pods a node",
		store, via, len(nodes), nodesReady.Round(time.Millisecond), n, created.Round(time.Millisecond), tAdded.Sub(t0).Round(time.Millisecond),
		allBound.Round(time.Millisecond), float64(n)/allBound.Seconds(), allRunning.Round(time.Millisecond),
		percentile(bindLat, 50).Round(time.Millisecond), percentile(bindLat, 99).Round(time.Millisecond),
		percentile(lists["list_all"], 50).Round(time.Millisecond), percentile(lists["list_all"], 99).Round(time.Millisecond),
		percentile(lists["list_rv0"], 50).Round(time.Millisecond), percentile(lists["list_rv0"], 99).Round(time.Millisecond),
		percentile(lists["list_node"], 50).Round(time.Millisecond), percentile(lists["list_node"], 99).Round(time.Millisecond),
		percentile(watchLat, 50).Round(100*time.Microsecond), percentile(watchLat, 99).Round(100*time.Microsecond), len(watchLat), pr.early, pr.missing,
		percentile(pr.afterRequest, 50).Round(100*time.Microsecond), percentile(pr.afterRequest, 99).Round(100*time.Microsecond),
		deleted.Round(time.Millisecond), (after.cpu - before.cpu).Round(time.Millisecond), (after.etcdCPU - before.etcdCPU).Round(time.Millisecond),
		after.maxRSS>>20, after.etcdHW>>20, hollowErrs, notReady, fewest, most)
}

// podTemplate is the workload's pod: one container asking for a little CPU
// and memory, so that the scheduler's least-allocated scoring spreads pods
// over the nodes as it would real ones.
func podTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"scale": "workload"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.k8s.io/pause:3.10",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi"),
				}},
			}},
		},
	}
}

// createReplicaSets makes n pods by ReplicaSets of 100 replicas (the last
// one smaller).
func createReplicaSets(ctx context.Context, c kubernetes.Interface, n int) error {
	for i := 0; n > 0; i++ {
		replicas := min(n, perReplicaSet)
		n -= replicas
		name := fmt.Sprintf("rs-%03d", i)
		tmpl := podTemplate()
		tmpl.Labels["rs"] = name
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.ReplicaSetSpec{
				Replicas: ptr.To(int32(replicas)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"rs": name}},
				Template: tmpl,
			},
		}
		if _, err := c.AppsV1().ReplicaSets(namespace).Create(ctx, rs, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// createPods makes n pods from podCreators clients at once, each on its own
// connection.
func createPods(ctx context.Context, cfg *rest.Config, n int) error {
	work := make(chan int)
	errs := make(chan error, podCreators)
	var wg sync.WaitGroup
	for w := range podCreators {
		c, err := newClient(cfg, fmt.Sprintf("scale-creator-%d", w))
		if err != nil {
			return err
		}
		wg.Go(func() {
			for i := range work {
				tmpl := podTemplate()
				pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
				pod.Name = fmt.Sprintf("pod-%05d", i)
				if _, err := c.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					errs <- err
					for range work { // drain
					}
					return
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// deleteWorkload deletes what made the pods: the ReplicaSets (the garbage
// collector deletes their pods) or the pods themselves.
func deleteWorkload(ctx context.Context, c kubernetes.Interface, via string) error {
	switch via {
	case "replicasets":
		return c.AppsV1().ReplicaSets(namespace).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}, metav1.ListOptions{})
	default:
		return c.CoreV1().Pods(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: workloadLabel})
	}
}

// waitFor polls cond until it holds, failing b after timeout.
func waitFor(b *testing.B, timeout time.Duration, what string, cond func() (bool, string)) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("waiting for %s: %s", what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
