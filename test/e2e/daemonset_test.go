package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// cassandraImage is the seed's Cassandra image, named on each node as the
// host's root file system: the DaemonSet's ConfigMap supplies the /run.sh it
// runs (testdata/workloads/seed000-cassandra-daemonset.yaml).
var cassandraImage = []string{"gcr.io/google-samples/cassandra:v11"}

// TestSeed000CassandraDaemonSet is seed 000's Cassandra DaemonSet on two
// nodes (two machines of a lab): as the seed writes it (no selector) it is
// refused as upstream refuses it; completed, it runs one pod on each node
// labelled app=cassandra and on no other, following the label as it is put
// on and taken off nodes.
func TestSeed000CassandraDaemonSet(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startCassandraLab(t)

	file := testdata("workloads/seed000-cassandra-daemonset.yaml")
	_, ds, ok := strings.Cut(readTestdata("workloads/seed000-cassandra-daemonset.yaml"), "\n---\n")
	asWritten := strings.Replace(ds, "  selector:\n    matchLabels:\n      app: cassandra\n", "", 1)
	if !ok || asWritten == ds {
		t.Fatalf("%s: no DaemonSet document with a selector to take out", file)
	}
	// apps/v1 has no default selector (since 1.8); upstream's validation
	// of a DaemonSet without one: a nil selector matches nothing, so the
	// template's labels do not match it (no "Required value", unlike
	// StatefulSets and Deployments).
	for _, kv := range []int{v, 27} {
		expectFail(t, m.kubectlStdin(t, kv, asWritten, "apply", "-f", "-"),
			"The DaemonSet \"cassandra-daemonset\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"cassandra\"}: `selector` does not match template `labels`")
	}
	m.expectNotFound(t, v, "daemonset", "cassandra-daemonset")

	expectOK(t, m.kubectl(t, v, "apply", "-f", file), "configmap/cassandra-run-sh created", "daemonset.apps/cassandra-daemonset created")
	// No node is labelled yet: the set wants no pod.
	waitDaemonSetStatus(t, m, v, 0, 0)
	expectDaemonSetRow(t, m, v, "0")
	if pods := cassandraPods(t, m, v); len(pods) != 0 {
		t.Fatalf("pods before any node is labelled: %v", pods)
	}

	expectOK(t, m.kubectl(t, v, "label", "node", "kube-node-1", "app=cassandra"), "node/kube-node-1 labeled")
	first := waitCassandraPods(t, m, v, "kube-node-1")["kube-node-1"]
	waitDaemonSetStatus(t, m, v, 1, 1)
	expectDaemonSetRow(t, m, v, "1")
	wide := m.kubectl(t, v, "get", "pods", "-l", "app=cassandra", "-o", "wide")
	checkCol(t, wide, "NODE", "kube-node-1", first)
	checkCol(t, wide, "STATUS", "Running", first)

	// The downward API: POD_IP is the pod's address (on kube-node-1's pod
	// network), POD_NAMESPACE its namespace; the seed's plain values too.
	pod := m.pod(t, v, "default", first)
	if pod == nil || pod.Status.PodIP == "" {
		t.Fatalf("pod %s has no IP: %+v", first, pod)
	}
	env := m.mustKubectl(t, v, "exec", first, "--", "env")
	for _, want := range []string{"POD_IP=" + pod.Status.PodIP, "POD_NAMESPACE=default", "MAX_HEAP_SIZE=512M", "HEAP_NEWSIZE=100M", "CASSANDRA_SEED_PROVIDER=io.k8s.cassandra.KubernetesSeedProvider"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(env) {
			t.Errorf("kubectl exec %s -- env: no line %q:\n%s", first, want, env)
		}
	}
	expectOK(t, m.kubectl(t, 27, "exec", first, "--", "printenv", "POD_IP"), pod.Status.PodIP) // SPDY
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "logs", first).Stdout, "cassandra stand-in: POD_IP="+pod.Status.PodIP+" ")
	}) {
		t.Errorf("the stand-in /run.sh did not log its POD_IP:\n%s", m.kubectl(t, v, "logs", first))
	}
	if c := pod.Spec.Containers[0]; c.Resources.Limits.Cpu().String() != "500m" || c.Resources.Requests.Cpu().String() != "500m" {
		t.Errorf("cpu limit 0.5: limits %v, requests %v (requests default to limits)", c.Resources.Limits, c.Resources.Requests)
	}

	expectOK(t, m.kubectl(t, v, "label", "node", "kube-node-2", "app=cassandra"), "node/kube-node-2 labeled")
	pods := waitCassandraPods(t, m, v, "kube-node-1", "kube-node-2")
	if pods["kube-node-1"] != first {
		t.Errorf("kube-node-1's pod is %s, was %s: labelling another node replaced it", pods["kube-node-1"], first)
	}
	waitDaemonSetStatus(t, m, v, 2, 2)
	expectDaemonSetRow(t, m, v, "2")

	expectOK(t, m.kubectl(t, v, "label", "node", "kube-node-1", "app-"), "node/kube-node-1 unlabeled")
	if second := waitCassandraPods(t, m, v, "kube-node-2")["kube-node-2"]; second != pods["kube-node-2"] {
		t.Errorf("kube-node-2's pod is %s, was %s", second, pods["kube-node-2"])
	}
	m.expectNotFound(t, v, "pod", first)
	waitDaemonSetStatus(t, m, v, 1, 1)
	expectDaemonSetRow(t, m, v, "1")
	expectOK(t, m.kubectl(t, v, "get", "events", "--field-selector", "involvedObject.name=cassandra-daemonset"), "SuccessfulCreate", "SuccessfulDelete")

	// The set takes its pods with it.
	m.mustKubectl(t, v, "delete", "-f", file)
	if !eventually(podTimeout, func() bool { return len(cassandraPods(t, m, v)) == 0 }) {
		t.Errorf("pods left after deleting the set:\n%s", m.kubectl(t, v, "get", "pods", "-o", "wide"))
	}
}

// startCassandraLab runs a server (kube-node-1) and an agent (kube-node-2)
// on two machines of a lab, each with the Cassandra image, and waits until
// both nodes are Ready.
func startCassandraLab(t *testing.T) *moorage {
	t.Helper()
	l := newLab(t, 2)
	m := startLabServer(t, l, cassandraImage)
	agent := joinLabAgent(t, l, m, 1, "kube-node-2", cassandraImage)
	if !eventually(podTimeout, func() bool {
		out := m.kubectl(t, defaultVersion, "get", "nodes").Stdout
		return regexp.MustCompile(`(?m)^kube-node-1\s+Ready\s`).MatchString(out) && regexp.MustCompile(`(?m)^kube-node-2\s+Ready\s`).MatchString(out)
	}) {
		t.Fatalf("nodes not Ready:\n%s\nagent:\n%s", m.kubectl(t, defaultVersion, "get", "nodes"), agent)
	}
	return m
}

// cassandraPods maps the DaemonSet's pods to their phase, by "node/name".
func cassandraPods(t *testing.T, m *moorage, v int) map[string]corev1.PodPhase {
	t.Helper()
	var list corev1.PodList
	m.getJSON(t, v, &list, "pods", "-l", "app=cassandra")
	pods := map[string]corev1.PodPhase{}
	for _, p := range list.Items {
		pods[p.Spec.NodeName+"/"+p.Name] = p.Status.Phase
	}
	return pods
}

// waitCassandraPods waits until the DaemonSet has exactly one pod on each
// of nodes, Running, and none elsewhere (terminating ones included); it
// returns each node's pod.
func waitCassandraPods(t *testing.T, m *moorage, v int, nodes ...string) map[string]string {
	t.Helper()
	var byNode map[string]string
	if !eventually(podTimeout, func() bool {
		pods := cassandraPods(t, m, v)
		byNode = map[string]string{}
		for key, phase := range pods {
			node, name, _ := strings.Cut(key, "/")
			if phase != corev1.PodRunning {
				return false
			}
			byNode[node] = name
		}
		if len(pods) != len(nodes) {
			return false
		}
		for _, n := range nodes {
			if byNode[n] == "" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("want one Running pod on each of %v and none elsewhere:\n%s", nodes, m.kubectl(t, v, "get", "pods", "-l", "app=cassandra", "-o", "wide"))
	}
	return byNode
}

// waitDaemonSetStatus waits until the set's status, for its current
// generation, counts desired pods scheduled and ready ones, all up to date
// and available, none misscheduled.
func waitDaemonSetStatus(t *testing.T, m *moorage, v int, desired, ready int32) {
	t.Helper()
	var ds appsv1.DaemonSet
	counts := func(s appsv1.DaemonSetStatus) [6]int32 {
		return [6]int32{s.DesiredNumberScheduled, s.CurrentNumberScheduled, s.NumberReady, s.UpdatedNumberScheduled, s.NumberAvailable, s.NumberMisscheduled}
	}
	want := [6]int32{desired, desired, ready, desired, ready, 0}
	if !eventually(podTimeout, func() bool {
		m.getJSON(t, v, &ds, "daemonset", "cassandra-daemonset")
		return ds.Status.ObservedGeneration == ds.Generation && counts(ds.Status) == want && ds.Status.NumberUnavailable == desired-ready
	}) {
		t.Fatalf("daemonset status (desired, current, ready, updated, available, misscheduled): got %v, unavailable %d, observed generation %d of %d; want %v",
			counts(ds.Status), ds.Status.NumberUnavailable, ds.Status.ObservedGeneration, ds.Generation, want)
	}
}

// expectDaemonSetRow checks `kubectl get ds`: its columns, and every count
// equal to n.
func expectDaemonSetRow(t *testing.T, m *moorage, v int, n string) {
	t.Helper()
	r := m.kubectl(t, v, "get", "ds")
	expectHeader(t, r, "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE")
	if want := fmt.Sprintf(`(?m)^cassandra-daemonset\s+%[1]s\s+%[1]s\s+%[1]s\s+%[1]s\s+%[1]s\s+app=cassandra\s+\S+$`, n); !regexp.MustCompile(want).MatchString(r.Stdout) {
		t.Errorf("kubectl get ds: no row like %s\n%s", want, r)
	}
}

// TestSeed000CassandraReplicationController is seed 000's Cassandra
// ReplicationController on two nodes. As the seed writes it, its labels and
// selector come from the template's, each pod gets an empty /cassandra_data
// (a replacement pod starts empty again), and its anti-affinity constrains
// nothing: it asks for app=cassandra, the pods are app=Cassandra, and label
// values are case-sensitive. Spelled alike, at most one pod runs on a node:
// two run, and the third stays Pending with the scheduler's reasons.
func TestSeed000CassandraReplicationController(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	v := defaultVersion
	m := startCassandraLab(t)
	runSh, _, _ := strings.Cut(readTestdata("workloads/seed000-cassandra-daemonset.yaml"), "\n---\n")
	expectOK(t, m.kubectlStdin(t, v, runSh, "apply", "-f", "-"), "configmap/cassandra-run-sh created")

	file := testdata("workloads/seed000-cassandra-rc.yaml")
	expectOK(t, m.kubectl(t, v, "apply", "-f", file), "replicationcontroller/cassandra created")
	expectOK(t, m.kubectl(t, v, "get", "rc", "cassandra", "-o", "jsonpath={.spec.selector} {.metadata.labels}"), `{"app":"Cassandra"} {"app":"Cassandra"}`)
	pods := waitRCPods(t, m, v, "Cassandra", 3, 0)
	if !eventually(podTimeout, func() bool {
		return regexp.MustCompile(`(?m)^cassandra\s+3\s+3\s+3\s`).MatchString(m.kubectl(t, v, "get", "rc", "cassandra").Stdout)
	}) {
		t.Errorf("kubectl get rc: want DESIRED, CURRENT and READY 3:\n%s", m.kubectl(t, v, "get", "rc", "cassandra"))
	}

	// emptyDir survives a container, not its pod: the replacement starts empty.
	victim := pods[0].Name
	m.mustKubectl(t, v, "exec", victim, "--", "sh", "-c", "echo data > /cassandra_data/marker && cat /cassandra_data/marker")
	m.mustKubectl(t, v, "delete", "pod", victim)
	var fresh string
	for _, p := range waitRCPods(t, m, v, "Cassandra", 3, 0) {
		if p.Name == victim {
			t.Fatalf("pod %s still there after its deletion", victim)
		}
		if !slices.ContainsFunc(pods, func(old corev1.Pod) bool { return old.Name == p.Name }) {
			fresh = p.Name
		}
	}
	if fresh == "" {
		t.Fatalf("no replacement for %s", victim)
	}
	if r := m.kubectl(t, v, "exec", fresh, "--", "ls", "-A", "/cassandra_data"); r.Code != 0 || r.Stdout != "" {
		t.Errorf("the replacement %s's /cassandra_data is not empty: %s", fresh, r)
	}

	// The anti-affinity spelled as the pods' label: one pod per node.
	m.mustKubectl(t, v, "delete", "-f", file)
	if !eventually(podTimeout, func() bool { return len(rcPods(t, m, v, "Cassandra")) == 0 }) {
		t.Fatalf("pods left after deleting the RC:\n%s", m.kubectl(t, v, "get", "pods", "-o", "wide"))
	}
	alike := strings.ReplaceAll(readTestdata("workloads/seed000-cassandra-rc.yaml"), "app: Cassandra", "app: cassandra")
	expectOK(t, m.kubectlStdin(t, v, alike, "apply", "-f", "-"), "replicationcontroller/cassandra created")
	pods = waitRCPods(t, m, v, "cassandra", 2, 1)
	nodes := map[string]bool{}
	var pending string
	for _, p := range pods {
		if p.Status.Phase == corev1.PodPending {
			pending = p.Name
			continue
		}
		nodes[p.Spec.NodeName] = true
	}
	if !nodes["kube-node-1"] || !nodes["kube-node-2"] {
		t.Errorf("want one Running pod on each node:\n%s", m.kubectl(t, v, "get", "pods", "-o", "wide"))
	}
	want := "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
	if !eventually(podTimeout, func() bool {
		return strings.Contains(m.kubectl(t, v, "get", "events", "--field-selector", "involvedObject.name="+pending).Stdout, want)
	}) {
		t.Errorf("no FailedScheduling event %q for %s:\n%s", want, pending, m.kubectl(t, v, "describe", "pod", pending))
	}
}

// rcPods lists the pods labelled app=label.
func rcPods(t *testing.T, m *moorage, v int, label string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	m.getJSON(t, v, &list, "pods", "-l", "app="+label)
	return list.Items
}

// waitRCPods waits until exactly running pods labelled app=label are
// Running and pending ones Pending and unscheduled, none terminating.
func waitRCPods(t *testing.T, m *moorage, v int, label string, running, pending int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	if !eventually(podTimeout, func() bool {
		pods = rcPods(t, m, v, label)
		r, p := 0, 0
		for _, pod := range pods {
			switch {
			case pod.DeletionTimestamp != nil:
				return false
			case pod.Status.Phase == corev1.PodRunning:
				r++
			case pod.Status.Phase == corev1.PodPending && pod.Spec.NodeName == "":
				p++
			}
		}
		return r == running && p == pending && len(pods) == running+pending
	}) {
		t.Fatalf("want %d Running and %d unscheduled pods labelled app=%s:\n%s", running, pending, label, m.kubectl(t, v, "get", "pods", "-o", "wide"))
	}
	return pods
}
