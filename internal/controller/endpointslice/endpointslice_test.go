package endpointslice_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/moorage/moorage/internal/controller/endpointslice"
	et "github.com/moorage/moorage/internal/controller/endpointslice/endpointtest"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = metav1.NamespaceDefault

// env is a server with a node "n1" in zone-a; the controller runs once
// started.
type env struct {
	kubernetes.Interface
	cfg *rest.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The server runs its own instance; this test runs one it controls
	// (and needs no Endpoints).
	srv := testserver.StartWithout(t, endpointslice.Component, "endpoints-controller")
	c := testserver.Client(t, srv)
	et.CreateNode(t, c, "n1", "zone-a")
	return &env{Interface: c, cfg: srv.Loopback}
}

func (e *env) startController(t *testing.T) {
	t.Helper()
	ctrl, err := endpointslice.New(e.cfg, et.Log, endpointslice.Options{})
	if err != nil {
		t.Fatal(err)
	}
	et.Run(t, ctrl.Run)
}

func (e *env) createService(t *testing.T, svc *corev1.Service) *corev1.Service {
	t.Helper()
	svc.Namespace = ns
	created, err := e.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

func (e *env) slices(t *testing.T, service string) []discoveryv1.EndpointSlice {
	t.Helper()
	list, err := e.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// describe lists a Service's slices, one line per slice: its ports, then
// per endpoint "ip ready/serving/terminating", sorted.
func describe(list []discoveryv1.EndpointSlice) []string {
	var out []string
	b := func(p *bool) string { return map[bool]string{true: "t", false: "f"}[ptr.Deref(p, false)] }
	for _, s := range list {
		var ports, eps []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d", ptr.Deref(p.Name, ""), ptr.Deref(p.Port, 0)))
		}
		for _, ep := range s.Endpoints {
			c := ep.Conditions
			eps = append(eps, fmt.Sprintf("%s %s%s%s", strings.Join(ep.Addresses, ","), b(c.Ready), b(c.Serving), b(c.Terminating)))
		}
		slices.Sort(eps)
		out = append(out, fmt.Sprintf("[%s] %s", strings.Join(ports, ","), strings.Join(eps, "; ")))
	}
	slices.Sort(out)
	return out
}

// waitFor waits until the Service's slices are described by want.
func (e *env) waitFor(t *testing.T, service string, want ...string) []discoveryv1.EndpointSlice {
	t.Helper()
	slices.Sort(want)
	var got []string
	deadline := time.Now().Add(et.Timeout)
	for {
		list := e.slices(t, service)
		if got = describe(list); slices.Equal(got, want) {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("slices of %s:\n got %q\nwant %q", service, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func endpointOf(list []discoveryv1.EndpointSlice, ip string) *discoveryv1.Endpoint {
	for i := range list {
		for j := range list[i].Endpoints {
			if slices.Contains(list[i].Endpoints[j].Addresses, ip) {
				return &list[i].Endpoints[j]
			}
		}
	}
	return nil
}

func TestSlicesListPodsWithConditionsAndTopology(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	svc := c.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"team": "a"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
		}},
	})
	web := map[string]string{"app": "web"}
	a := et.CreatePod(t, c, et.NewPod("web-a", "n1", web, "http", 8080), "10.244.0.5", true)
	et.CreatePod(t, c, et.NewPod("web-b", "n1", web, "http", 8080), "10.244.0.6", false)
	leaving := et.NewPod("web-c", "n1", web, "http", 8080)
	leaving.Finalizers = []string{"example.com/hold"}
	et.CreatePod(t, c, leaving, "10.244.0.7", true)
	et.CreatePod(t, c, et.NewPod("web-d", "n1", web, "http", 9090), "10.244.0.8", true)
	et.CreatePod(t, c, et.NewPod("web-e", "n1", web), "10.244.0.9", true) // serves no port
	if err := c.CoreV1().Pods(ns).Delete(context.Background(), "web-c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	list := c.waitFor(t, "web",
		"[http:8080] 10.244.0.5 ttf; 10.244.0.6 fff; 10.244.0.7 ftt",
		"[http:9090] 10.244.0.8 ttf",
		"[] 10.244.0.9 ttf")
	triggers := 0
	for _, s := range list {
		if !strings.HasPrefix(s.Name, "web-") || s.GenerateName != "web-" {
			t.Errorf("slice %s: generateName %q", s.Name, s.GenerateName)
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			t.Errorf("slice %s: addressType %s", s.Name, s.AddressType)
		}
		wantLabels := map[string]string{"team": "a", discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: endpointslice.ManagedBy}
		if fmt.Sprint(s.Labels) != fmt.Sprint(wantLabels) {
			t.Errorf("slice %s: labels %v, want %v", s.Name, s.Labels, wantLabels)
		}
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != svc.UID || !ptr.Deref(s.OwnerReferences[0].Controller, false) {
			t.Errorf("slice %s: owners %+v", s.Name, s.OwnerReferences)
		}
		// Written with the first change each write publishes; a later write
		// publishing no pod readiness change (a deletion) drops it.
		if at, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
			if _, err := time.Parse(time.RFC3339Nano, at); err != nil {
				t.Errorf("slice %s: trigger time: %v", s.Name, err)
			}
			triggers++
		}
	}
	if triggers == 0 {
		t.Error("no slice has a last-change-trigger-time")
	}
	ep := endpointOf(list, "10.244.0.5")
	want := corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-a", UID: a.UID}
	if ptr.Deref(ep.NodeName, "") != "n1" || ptr.Deref(ep.Zone, "") != "zone-a" || ep.TargetRef == nil || *ep.TargetRef != want || ep.Hostname != nil {
		t.Fatalf("endpoint of web-a = %+v", ep)
	}

	// Readiness changes update the endpoint in place.
	name := func() string {
		for _, s := range c.slices(t, "web") {
			if endpointOf([]discoveryv1.EndpointSlice{s}, "10.244.0.6") != nil {
				return s.Name
			}
		}
		return ""
	}
	before := name()
	et.SetPodStatus(t, c, ns, "web-b", corev1.PodRunning, "10.244.0.6", true)
	et.SetPodStatus(t, c, ns, "web-a", corev1.PodSucceeded, "10.244.0.5", false)
	c.waitFor(t, "web",
		"[http:8080] 10.244.0.6 ttf; 10.244.0.7 ftt",
		"[http:9090] 10.244.0.8 ttf",
		"[] 10.244.0.9 ttf")
	if after := name(); after != before {
		t.Errorf("the endpoint moved from slice %s to %s", before, after)
	}
}

func TestPublishNotReadyAddresses(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	c.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"}, PublishNotReadyAddresses: true,
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}}},
	})
	db := map[string]string{"app": "db"}
	et.CreatePod(t, c, et.NewPod("db-0", "n1", db), "10.244.1.1", false)
	// A pod of a node that does not exist is published too.
	et.CreatePod(t, c, et.NewPod("db-1", "gone", db), "10.244.1.2", true)
	list := c.waitFor(t, "db", "[pg:5432] 10.244.1.1 tff; 10.244.1.2 ttf")
	if ep := endpointOf(list, "10.244.1.2"); ep.Zone != nil {
		t.Errorf("endpoint of an unknown node has zone %q", *ep.Zone)
	}
}

func TestHeadlessServiceGetsPlaceholderThenHostnames(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	c.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "nginx"}},
	})
	list := c.waitFor(t, "nginx", "[] ")
	placeholder := list[0].Name
	if _, ok := list[0].Labels[corev1.IsHeadlessService]; !ok {
		t.Errorf("labels %v lack the headless label", list[0].Labels)
	}

	nginx := map[string]string{"app": "nginx"}
	for i, sub := range []string{"nginx", "other"} {
		pod := et.NewPod(fmt.Sprint("web-", i), "n1", nginx)
		pod.Spec.Hostname, pod.Spec.Subdomain = pod.Name, sub
		et.CreatePod(t, c, pod, fmt.Sprint("10.244.2.", i+1), true)
	}
	// Pods from a node that does not exist are left out.
	et.CreatePod(t, c, et.NewPod("stray", "gone", nginx), "10.244.2.9", true)
	list = c.waitFor(t, "nginx", "[] 10.244.2.1 ttf; 10.244.2.2 ttf")
	if list[0].Name != placeholder {
		t.Errorf("the placeholder %s was replaced by %s", placeholder, list[0].Name)
	}
	if ep := endpointOf(list, "10.244.2.1"); ptr.Deref(ep.Hostname, "") != "web-0" {
		t.Errorf("web-0: hostname %v", ep.Hostname)
	}
	if ep := endpointOf(list, "10.244.2.2"); ep.Hostname != nil {
		t.Errorf("web-1, of another subdomain: hostname %q", *ep.Hostname)
	}
}

func TestSlicesHoldAtMost100Endpoints(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	c.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "many"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "many"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	})
	for i := range 150 {
		et.CreatePod(t, c, et.NewPod(fmt.Sprint("many-", i), "n1", map[string]string{"app": "many"}), fmt.Sprintf("10.244.3.%d", i+1), true)
	}
	var sizes []int
	et.Eventually(t, "150 endpoints in slices of at most 100", func() bool {
		sizes = nil
		total := 0
		for _, s := range c.slices(t, "many") {
			sizes = append(sizes, len(s.Endpoints))
			total += len(s.Endpoints)
		}
		return total == 150
	})
	if slices.Max(sizes) > 100 || len(sizes) != 2 {
		t.Fatalf("slice sizes %v, want two slices of at most 100", sizes)
	}
}

func TestSlicesFollowTheirService(t *testing.T) {
	c := newEnv(t)
	c.startController(t)
	ctx := context.Background()
	port := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	c.createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: port}})
	c.createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com", Selector: map[string]string{"app": "api"}}})
	et.CreatePod(t, c, et.NewPod("api-0", "n1", map[string]string{"app": "api"}), "10.244.4.1", true)
	list := c.waitFor(t, "api", "[http:80] 10.244.4.1 ttf")

	// Edited by hand: repaired. Deleted by hand: recreated.
	edited := list[0].DeepCopy()
	edited.Endpoints = nil
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Update(ctx, edited, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "api", "[http:80] 10.244.4.1 ttf")
	if err := c.DiscoveryV1().EndpointSlices(ns).Delete(ctx, list[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	et.Eventually(t, "a new slice", func() bool {
		l := c.slices(t, "api")
		return len(l) == 1 && l[0].Name != list[0].Name && len(l[0].Endpoints) == 1
	})

	// Without a selector, the slices are left as they are.
	svc, err := c.CoreV1().Services(ns).Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = nil
	if _, err := c.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	et.CreatePod(t, c, et.NewPod("api-1", "n1", map[string]string{"app": "api"}), "10.244.4.2", true)
	// A Service synced after the one above shows the controller caught up.
	c.createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "marker"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: port}})
	c.waitFor(t, "marker", "[http:80] 10.244.4.1 ttf; 10.244.4.2 ttf")
	c.waitFor(t, "api", "[http:80] 10.244.4.1 ttf")
	if l := c.slices(t, "ext"); len(l) != 0 {
		t.Errorf("an ExternalName service got slices: %v", describe(l))
	}

	// Deleted with the Service, by the garbage collector.
	if err := c.CoreV1().Services(ns).Delete(ctx, "marker", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	et.Eventually(t, "the slices of a deleted service to go", func() bool { return len(c.slices(t, "marker")) == 0 })
}
