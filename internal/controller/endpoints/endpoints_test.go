package endpoints_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/controller/endpoints"
	"github.com/moorage/moorage/internal/controller/endpointslice"
	et "github.com/moorage/moorage/internal/controller/endpointslice/endpointtest"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = metav1.NamespaceDefault

// env is a server with a node "n1"; the controller runs once started.
type env struct {
	kubernetes.Interface
	cfg *rest.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The server runs its own instance; this test runs one it controls
	// (and needs no EndpointSlices).
	srv := testserver.StartWithout(t, "endpoints-controller", endpointslice.Component)
	c := testserver.Client(t, srv)
	et.CreateNode(t, c, "n1", "")
	return &env{Interface: c, cfg: srv.Loopback}
}

func (e *env) startController(t *testing.T) {
	t.Helper()
	ctrl, err := endpoints.New(e.cfg, et.Log, endpoints.Options{})
	if err != nil {
		t.Fatal(err)
	}
	et.Run(t, ctrl.Run)
}

func createService(t *testing.T, c kubernetes.Interface, svc *corev1.Service) {
	t.Helper()
	svc.Namespace = ns
	if _, err := c.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func getEndpoints(c kubernetes.Interface, name string) (*corev1.Endpoints, bool) {
	ep, err := c.CoreV1().Endpoints(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil, false
	}
	return ep, true
}

// flatten lists an Endpoints object's addresses, one "ip port ready" per
// address and port, sorted.
func flatten(ep *corev1.Endpoints) []string {
	var out []string
	for _, ss := range ep.Subsets {
		ports := []string{"-"}
		if len(ss.Ports) > 0 {
			ports = nil
			for _, p := range ss.Ports {
				ports = append(ports, fmt.Sprintf("%s:%d", p.Name, p.Port))
			}
		}
		for _, list := range []struct {
			addrs []corev1.EndpointAddress
			ready bool
		}{{ss.Addresses, true}, {ss.NotReadyAddresses, false}} {
			for _, a := range list.addrs {
				for _, p := range ports {
					out = append(out, fmt.Sprintf("%s %s %t", a.IP, p, list.ready))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// waitFor waits until the Endpoints named name list want.
func waitFor(t *testing.T, c kubernetes.Interface, name string, want ...string) *corev1.Endpoints {
	t.Helper()
	slices.Sort(want)
	var ep *corev1.Endpoints
	var got []string
	deadline := time.Now().Add(et.Timeout)
	for {
		var ok bool
		if ep, ok = getEndpoints(c, name); ok {
			if got = flatten(ep); slices.Equal(got, want) {
				return ep
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints %s:\n got %q\nwant %q", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEndpointsListReadyAndNotReadyPodsWithResolvedPorts(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	createService(t, c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"team": "a"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
			{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9091), Protocol: corev1.ProtocolTCP},
		}},
	})
	web := map[string]string{"app": "web"}
	a := et.CreatePod(t, c, et.NewPod("web-a", "n1", web, "http", 8080), "10.244.0.5", true)
	et.CreatePod(t, c, et.NewPod("web-b", "n1", web, "http", 8081), "10.244.0.6", false)
	et.CreatePod(t, c, et.NewPod("web-c", "n1", web), "10.244.0.7", true) // no port named http
	et.CreatePod(t, c, et.NewPod("web-d", "n1", web, "http", 8080), "", false)
	et.CreatePod(t, c, et.NewPod("other", "n1", map[string]string{"app": "other"}, "http", 8080), "10.244.0.8", true)

	ep := waitFor(t, c, "web",
		"10.244.0.5 http:8080 true", "10.244.0.5 metrics:9091 true",
		"10.244.0.6 http:8081 false", "10.244.0.6 metrics:9091 false",
		"10.244.0.7 metrics:9091 true")
	if ep.Labels["team"] != "a" {
		t.Errorf("labels = %v, want the service's", ep.Labels)
	}
	if _, ok := ep.Labels[corev1.IsHeadlessService]; ok {
		t.Errorf("a service with a cluster IP got the headless label")
	}
	if _, err := time.Parse(time.RFC3339Nano, ep.Annotations[corev1.EndpointsLastChangeTriggerTime]); err != nil {
		t.Errorf("trigger time annotation: %v", err)
	}
	var addr *corev1.EndpointAddress
	for _, ss := range ep.Subsets {
		for i := range ss.Addresses {
			if ss.Addresses[i].IP == "10.244.0.5" {
				addr = &ss.Addresses[i]
			}
		}
	}
	want := corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-a", UID: a.UID}
	if addr == nil || addr.NodeName == nil || *addr.NodeName != "n1" || addr.TargetRef == nil || *addr.TargetRef != want || addr.Hostname != "" {
		t.Fatalf("address of web-a = %+v", addr)
	}
	// Packed canonically: web-a and web-b serve http on different ports,
	// so three subsets.
	if len(ep.Subsets) != 3 {
		t.Errorf("%d subsets, want 3: %+v", len(ep.Subsets), ep.Subsets)
	}

	et.SetPodStatus(t, c, ns, "web-b", corev1.PodRunning, "10.244.0.6", true)
	et.SetPodStatus(t, c, ns, "web-a", corev1.PodFailed, "10.244.0.5", false)
	waitFor(t, c, "web", "10.244.0.6 http:8081 true", "10.244.0.6 metrics:9091 true", "10.244.0.7 metrics:9091 true")
}

func TestHeadlessServiceWithoutPortsPublishesHostnames(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	createService(t, c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "nginx"}},
	})
	nginx := map[string]string{"app": "nginx"}
	for i, sub := range []string{"nginx", "elsewhere"} {
		pod := et.NewPod(fmt.Sprintf("web-%d", i), "n1", nginx)
		pod.Spec.Hostname, pod.Spec.Subdomain = pod.Name, sub
		et.CreatePod(t, c, pod, fmt.Sprintf("10.244.0.%d", 10+i), true)
	}
	ep := waitFor(t, c, "nginx", "10.244.0.10 - true", "10.244.0.11 - true")
	if _, ok := ep.Labels[corev1.IsHeadlessService]; !ok {
		t.Errorf("labels = %v, want the headless label", ep.Labels)
	}
	hostnames := map[string]string{}
	for _, ss := range ep.Subsets {
		for _, a := range ss.Addresses {
			hostnames[a.IP] = a.Hostname
		}
	}
	if hostnames["10.244.0.10"] != "web-0" || hostnames["10.244.0.11"] != "" {
		t.Errorf("hostnames = %v, want web-0 only for the pod whose subdomain is the service", hostnames)
	}
}

func TestNotReadyAndTerminatingPods(t *testing.T) {
	for _, tc := range []struct {
		publishNotReady bool
		want            []string
	}{
		{false, []string{"10.244.0.21 http:80 false"}},
		{true, []string{"10.244.0.20 http:80 true", "10.244.0.21 http:80 true"}},
	} {
		t.Run(fmt.Sprintf("publishNotReadyAddresses=%t", tc.publishNotReady), func(t *testing.T) {
			c := newEnv(t)
			c.startController(t)
			createService(t, c, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "db"},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"}, PublishNotReadyAddresses: tc.publishNotReady,
					Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
			})
			db := map[string]string{"app": "db"}
			leaving := et.NewPod("leaving", "n1", db)
			leaving.Finalizers = []string{"example.com/hold"} // stays terminating
			et.CreatePod(t, c, leaving, "10.244.0.20", true)
			et.CreatePod(t, c, et.NewPod("starting", "n1", db), "10.244.0.21", false)
			waitFor(t, c, "db", "10.244.0.20 http:80 true", "10.244.0.21 http:80 "+fmt.Sprint(tc.publishNotReady))
			if err := c.CoreV1().Pods(ns).Delete(context.Background(), "leaving", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, c, "db", tc.want...)
		})
	}
}

func TestEndpointsFollowTheirService(t *testing.T) {
	c := newEnv(t)
	ctx := context.Background()
	// Left from before the controller ran: an orphan goes, a leader
	// election record stays.
	for _, ep := range []*corev1.Endpoints{
		{ObjectMeta: metav1.ObjectMeta{Name: "orphan"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "leader", Annotations: map[string]string{"control-plane.alpha.kubernetes.io/leader": "{}"}}},
	} {
		if _, err := c.CoreV1().Endpoints(ns).Create(ctx, ep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.startController(t)
	et.Eventually(t, "the orphaned Endpoints to go", func() bool { _, ok := getEndpoints(c, "orphan"); return !ok })
	if _, ok := getEndpoints(c, "leader"); !ok {
		t.Fatal("the leader election Endpoints was deleted")
	}

	port := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	createService(t, c, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: port}})
	createService(t, c, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com", Selector: map[string]string{"app": "api"}}})
	et.CreatePod(t, c, et.NewPod("api-0", "n1", map[string]string{"app": "api"}), "10.244.0.30", true)
	waitFor(t, c, "api", "10.244.0.30 http:80 true")

	// Deleted by hand: recreated.
	if err := c.CoreV1().Endpoints(ns).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "api", "10.244.0.30 http:80 true")

	// Without a selector the Endpoints is left to whoever manages it.
	svc, err := c.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = nil
	if _, err := c.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	et.CreatePod(t, c, et.NewPod("api-1", "n1", map[string]string{"app": "api"}), "10.244.0.31", true)
	// A Service with a selector, synced after the one above, shows that
	// the controller has caught up.
	createService(t, c, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "marker"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: port}})
	waitFor(t, c, "marker", "10.244.0.30 http:80 true", "10.244.0.31 http:80 true")
	waitFor(t, c, "api", "10.244.0.30 http:80 true")

	if err := c.CoreV1().Services(ns).Delete(ctx, "marker", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	et.Eventually(t, "the Endpoints of a deleted service to go", func() bool { _, ok := getEndpoints(c, "marker"); return !ok })
	if _, ok := getEndpoints(c, "ext"); ok {
		t.Error("an ExternalName service got Endpoints")
	}
}

func TestOverCapacityEndpointsAreTruncated(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	createService(t, c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "big"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "big"}, PublishNotReadyAddresses: true,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	})
	const n = endpoints.MaxCapacity + 1
	createPods(t, c, n, map[string]string{"app": "big"})
	var ep *corev1.Endpoints
	et.Eventually(t, "the Endpoints to be truncated", func() bool {
		var ok bool
		ep, ok = getEndpoints(c, "big")
		return ok && ep.Annotations[corev1.EndpointsOverCapacity] == endpoints.OverCapacityTruncated
	})
	if got := len(flatten(ep)); got != endpoints.MaxCapacity {
		t.Fatalf("%d addresses, want %d", got, endpoints.MaxCapacity)
	}
	// Back under capacity, the annotation goes.
	zero := int64(0)
	if err := c.CoreV1().Pods(ns).Delete(context.Background(), "big-0", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	et.Eventually(t, "the over-capacity annotation to go", func() bool {
		ep, ok := getEndpoints(c, "big")
		_, over := ep.Annotations[corev1.EndpointsOverCapacity]
		return ok && !over && len(flatten(ep)) == endpoints.MaxCapacity
	})
}

// createPods creates n pods with IPs, from a few goroutines.
func createPods(t *testing.T, c kubernetes.Interface, n int, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				pod, err := c.CoreV1().Pods(ns).Create(ctx, et.NewPod(fmt.Sprint("big-", i), "n1", labels), metav1.CreateOptions{})
				if err == nil {
					ip := fmt.Sprintf("10.245.%d.%d", i/250, i%250+1)
					pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
					_, err = c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
