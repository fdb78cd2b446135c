package dns_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/controller/endpointslice"
	et "github.com/moorage/moorage/internal/controller/endpointslice/endpointtest"
	clusterdns "github.com/moorage/moorage/internal/dns"
	"github.com/moorage/moorage/internal/testserver"
)

const ns = metav1.NamespaceDefault

// env is a server with the EndpointSlice controller, and a resolver
// served on loopback UDP and TCP.
type env struct {
	kubernetes.Interface
	addr string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The server runs its own instance; this test runs one it controls
	// (and needs no Endpoints).
	srv := testserver.StartWithout(t, endpointslice.Component, "endpoints-controller")
	c := testserver.Client(t, srv)
	et.CreateNode(t, c, "n1", "zone-a")
	ctrl, err := endpointslice.New(srv.Loopback, et.Log, endpointslice.Options{})
	if err != nil {
		t.Fatal(err)
	}
	et.Run(t, ctrl.Run)
	r := clusterdns.New(c, clusterdns.Options{})
	et.Run(t, r.Run)
	et.Eventually(t, "the resolver to sync", r.HasSynced)
	return &env{Interface: c, addr: serve(t, r)}
}

// serve serves h on loopback; it returns the address (the same port for
// UDP and TCP).
func serve(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	et.Run(t, func(ctx context.Context) {
		if err := clusterdns.Serve(ctx, h, pc, l); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return pc.LocalAddr().String()
}

func (e *env) query(t *testing.T, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	return exchange(t, e.addr, network, name, qtype)
}

func exchange(t *testing.T, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg).SetQuestion(name, qtype)
	client := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := client.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp
}

// short is a record without its owner, TTL and class: "A 10.96.0.5".
func short(rr dns.RR) string {
	f := strings.Fields(rr.String())
	return strings.Join(f[3:], " ")
}

func shorts(rrs []dns.RR) []string {
	out := make([]string, len(rrs))
	for i, rr := range rrs {
		out[i] = short(rr)
	}
	slices.Sort(out)
	return out
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

// statefulPod is a pod of a StatefulSet governed by Service sub.
func statefulPod(name, sub string, labels map[string]string) *corev1.Pod {
	pod := et.NewPod(name, "n1", labels)
	pod.Spec.Hostname, pod.Spec.Subdomain = name, sub
	return pod
}

// waitAnswer waits until name's qtype answer is want (short forms), asking
// over TCP to get it whole.
func (e *env) waitAnswer(t *testing.T, name string, qtype uint16, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	deadline := time.Now().Add(et.Timeout)
	for {
		if got = shorts(e.query(t, "tcp", name, qtype).Answer); slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s:\n got %q\nwant %q", name, dns.TypeToString[qtype], got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web := e.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	})
	vip := web.Spec.ClusterIP
	e.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "nginx"},
			Ports: []corev1.ServicePort{{Name: "web", Port: 80, Protocol: corev1.ProtocolTCP}}},
	})
	e.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pub"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "pub"}, PublishNotReadyAddresses: true},
	})
	e.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "empty"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "none"}},
	})
	e.createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}})
	e.createService(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "alias"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "web.default.svc.cluster.local"}})
	et.CreatePod(t, e, et.NewPod("web-a", "n1", map[string]string{"app": "web"}), "10.244.0.5", true)
	nginx := map[string]string{"app": "nginx"}
	et.CreatePod(t, e, statefulPod("web-0", "nginx", nginx), "10.244.1.10", true)
	et.CreatePod(t, e, statefulPod("web-1", "nginx", nginx), "10.244.1.11", false)
	et.CreatePod(t, e, et.NewPod("stray", "n1", nginx), "10.244.1.12", true)
	et.CreatePod(t, e, et.NewPod("pub-0", "n1", map[string]string{"app": "pub"}), "10.244.2.1", false)
	e.waitAnswer(t, "nginx.default.svc.cluster.local.", dns.TypeA, "A 10.244.1.10", "A 10.244.1.12")
	e.waitAnswer(t, "pub.default.svc.cluster.local.", dns.TypeA, "A 10.244.2.1")
	e.waitAnswer(t, "10-244-0-5.web.default.svc.cluster.local.", dns.TypeA, "A 10.244.0.5")

	reverse := func(ip string) string { name, _ := dns.ReverseAddr(ip); return name }
	const (
		nx     = dns.RcodeNameError
		ok     = dns.RcodeSuccess
		refuse = dns.RcodeRefused
	)
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		extra  []string
	}{
		// Services with a cluster IP.
		{"web.default.svc.cluster.local.", dns.TypeA, ok, []string{"A " + vip}, nil},
		{"WEB.Default.SVC.cluster.LOCAL.", dns.TypeA, ok, []string{"A " + vip}, nil},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, ok, nil, nil}, // NODATA: IPv4 only
		{"web.default.svc.cluster.local.", dns.TypeMX, ok, nil, nil},
		{"web.default.svc.cluster.local.", dns.TypeTXT, ok, nil, nil},
		{"web.default.svc.cluster.local.", dns.TypeCNAME, ok, nil, nil},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, ok,
			[]string{"SRV 0 100 80 web.default.svc.cluster.local."}, []string{"A " + vip}},
		{"web.default.svc.cluster.local.", dns.TypeSRV, ok,
			[]string{"SRV 0 50 53 web.default.svc.cluster.local.", "SRV 0 50 80 web.default.svc.cluster.local."}, []string{"A " + vip}},
		{"_dns._udp.web.default.svc.cluster.local.", dns.TypeA, ok, []string{"A " + vip}, nil},
		{"_http._udp.web.default.svc.cluster.local.", dns.TypeSRV, nx, nil, nil},
		// Endpoints by hostname or dashed IP, of any Service.
		{"10-244-0-5.web.default.svc.cluster.local.", dns.TypeA, ok, []string{"A 10.244.0.5"}, nil},
		{"10-244-0-6.web.default.svc.cluster.local.", dns.TypeA, nx, nil, nil},
		// A headless Service: its ready endpoints.
		{"nginx.default.svc.cluster.local.", dns.TypeA, ok, []string{"A 10.244.1.10", "A 10.244.1.12"}, nil},
		{"web-0.nginx.default.svc.cluster.local.", dns.TypeA, ok, []string{"A 10.244.1.10"}, nil},
		{"web-1.nginx.default.svc.cluster.local.", dns.TypeA, nx, nil, nil}, // not ready
		{"10-244-1-12.nginx.default.svc.cluster.local.", dns.TypeA, ok, []string{"A 10.244.1.12"}, nil},
		{"_web._tcp.nginx.default.svc.cluster.local.", dns.TypeSRV, ok,
			[]string{"SRV 0 50 80 10-244-1-12.nginx.default.svc.cluster.local.", "SRV 0 50 80 web-0.nginx.default.svc.cluster.local."},
			[]string{"A 10.244.1.10", "A 10.244.1.12"}},
		{"pub.default.svc.cluster.local.", dns.TypeA, ok, []string{"A 10.244.2.1"}, nil}, // publishNotReadyAddresses
		{"pub.default.svc.cluster.local.", dns.TypeSRV, ok, nil, nil},                    // no ports
		{"empty.default.svc.cluster.local.", dns.TypeA, nx, nil, nil},                    // no endpoints
		// ExternalName: a CNAME, followed within the zone.
		{"ext.default.svc.cluster.local.", dns.TypeA, ok, []string{"CNAME db.example.com."}, nil},
		{"ext.default.svc.cluster.local.", dns.TypeCNAME, ok, []string{"CNAME db.example.com."}, nil},
		{"ext.default.svc.cluster.local.", dns.TypeSRV, ok, nil, nil},
		{"_http._tcp.ext.default.svc.cluster.local.", dns.TypeSRV, nx, nil, nil},
		{"alias.default.svc.cluster.local.", dns.TypeA, ok, []string{"A " + vip, "CNAME web.default.svc.cluster.local."}, nil},
		// Pods, by the IP their name spells.
		{"10-1-2-3.default.pod.cluster.local.", dns.TypeA, ok, []string{"A 10.1.2.3"}, nil},
		{"10-1-2-3.missing.pod.cluster.local.", dns.TypeA, nx, nil, nil},
		{"not-an-ip.default.pod.cluster.local.", dns.TypeA, nx, nil, nil},
		{"default.pod.cluster.local.", dns.TypeA, ok, nil, nil},
		// What does not exist, and what exists without records.
		{"nosuch.default.svc.cluster.local.", dns.TypeA, nx, nil, nil},
		{"nosuch.default.svc.cluster.local.", dns.TypeAAAA, nx, nil, nil},
		{"web.missing.svc.cluster.local.", dns.TypeA, nx, nil, nil},
		{"missing.svc.cluster.local.", dns.TypeA, nx, nil, nil},
		{"other.svc.cluster.local.", dns.TypeA, ok, nil, nil},
		{"svc.cluster.local.", dns.TypeA, ok, nil, nil},
		{"cluster.local.", dns.TypeA, ok, nil, nil},
		{"cluster.local.", dns.TypeTXT, nx, nil, nil},
		{"nginx.cluster.local.", dns.TypeA, nx, nil, nil},
		{"a.b.c.web.default.svc.cluster.local.", dns.TypeA, nx, nil, nil},
		{"dns-version.cluster.local.", dns.TypeTXT, ok, []string{`TXT "1.1.0"`}, nil},
		{"cluster.local.", dns.TypeNS, ok, []string{"NS ns.dns.cluster.local."}, []string{"A 127.0.0.1"}},
		{"ns.dns.cluster.local.", dns.TypeA, ok, []string{"A 127.0.0.1"}, nil},
		// Reverse: cluster IPs and endpoints; the rest is upstream's.
		{reverse(vip), dns.TypePTR, ok, []string{"PTR web.default.svc.cluster.local."}, nil},
		{reverse("10.244.1.10"), dns.TypePTR, ok, []string{"PTR web-0.nginx.default.svc.cluster.local."}, nil},
		{reverse("10.244.0.5"), dns.TypePTR, ok, []string{"PTR 10-244-0-5.web.default.svc.cluster.local."}, nil},
		{reverse("10.244.1.11"), dns.TypePTR, refuse, nil, nil}, // not ready
		{reverse("192.168.1.1"), dns.TypePTR, refuse, nil, nil},
		{"example.com.", dns.TypeA, refuse, nil, nil},
		{"cluster.local.", dns.TypeAXFR, refuse, nil, nil},
	} {
		t.Run(fmt.Sprintf("%s %s", tc.name, dns.TypeToString[tc.qtype]), func(t *testing.T) {
			network := "udp"
			if tc.qtype == dns.TypeAXFR {
				network = "tcp"
			}
			resp := e.query(t, network, tc.name, tc.qtype)
			if resp.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			slices.Sort(tc.answer)
			slices.Sort(tc.extra)
			if got := shorts(resp.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer %q, want %q", got, tc.answer)
			}
			var extra []dns.RR
			for _, rr := range resp.Extra {
				if rr.Header().Rrtype != dns.TypeOPT {
					extra = append(extra, rr)
				}
			}
			if got := shorts(extra); !slices.Equal(got, tc.extra) {
				t.Errorf("extra %q, want %q", got, tc.extra)
			}
			switch {
			case tc.rcode == refuse:
				if resp.Authoritative || len(resp.Ns) != 0 {
					t.Errorf("a refusal is authoritative or carries %v", resp.Ns)
				}
			case !resp.Authoritative:
				t.Error("answer not authoritative")
			case len(resp.Answer) == 0:
				// Negative answers carry the SOA for negative caching.
				if len(resp.Ns) != 1 || !strings.HasPrefix(short(resp.Ns[0]), "SOA ns.dns.cluster.local. hostmaster.cluster.local.") {
					t.Errorf("authority %v, want the SOA", resp.Ns)
				}
			}
			for _, rr := range resp.Answer {
				if rr.Header().Rrtype != dns.TypeTXT && rr.Header().Ttl != 5 {
					t.Errorf("%s: TTL %d, want 5", rr, rr.Header().Ttl)
				}
			}
		})
	}

	// Owners keep the query's case; the SOA's fields are CoreDNS's.
	resp := e.query(t, "tcp", "WEB.default.svc.Cluster.Local.", dns.TypeA)
	if got := resp.Answer[0].Header().Name; got != "WEB.default.svc.Cluster.Local." {
		t.Errorf("owner %q", got)
	}
	soa := e.query(t, "udp", "cluster.local.", dns.TypeSOA).Answer[0].(*dns.SOA)
	if soa.Refresh != 7200 || soa.Retry != 1800 || soa.Expire != 86400 || soa.Minttl != 5 || soa.Serial == 0 {
		t.Errorf("SOA %v", soa)
	}
}

func TestAnswersFollowReadinessAndTruncateOverUDP(t *testing.T) {
	e := newEnv(t)
	e.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"}},
	})
	db := map[string]string{"app": "db"}
	et.CreatePod(t, e, statefulPod("db-0", "db", db), "10.244.5.1", false)
	// Not ready: the name does not exist yet.
	if resp := e.query(t, "udp", "db-0.db.default.svc.cluster.local.", dns.TypeA); resp.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode %s before the pod is ready", dns.RcodeToString[resp.Rcode])
	}
	et.SetPodStatus(t, e, ns, "db-0", corev1.PodRunning, "10.244.5.1", true)
	e.waitAnswer(t, "db-0.db.default.svc.cluster.local.", dns.TypeA, "A 10.244.5.1")
	e.waitAnswer(t, "db.default.svc.cluster.local.", dns.TypeA, "A 10.244.5.1")

	// Many endpoints: too many for 512 bytes of UDP, not for TCP.
	var want []string
	want = append(want, "A 10.244.5.1")
	for i := 2; i <= 60; i++ {
		ip := fmt.Sprintf("10.244.5.%d", i)
		et.CreatePod(t, e, et.NewPod(fmt.Sprint("db-", i), "n1", db), ip, true)
		want = append(want, "A "+ip)
	}
	e.waitAnswer(t, "db.default.svc.cluster.local.", dns.TypeA, want...)
	udp := e.query(t, "udp", "db.default.svc.cluster.local.", dns.TypeA)
	if !udp.Truncated || len(udp.Answer) >= len(want) {
		t.Errorf("UDP answer: truncated %t, %d records", udp.Truncated, len(udp.Answer))
	}
	if tcp := e.query(t, "tcp", "db.default.svc.cluster.local.", dns.TypeA); tcp.Truncated || len(tcp.Answer) != len(want) {
		t.Errorf("TCP answer: truncated %t, %d records, want %d", tcp.Truncated, len(tcp.Answer), len(want))
	}
	// EDNS0 raises the UDP limit.
	m := new(dns.Msg).SetQuestion("db.default.svc.cluster.local.", dns.TypeA).SetEdns0(4096, false)
	resp, _, err := (&dns.Client{Net: "udp"}).Exchange(m, e.addr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || len(resp.Answer) != len(want) || resp.IsEdns0() == nil {
		t.Errorf("UDP with EDNS0: truncated %t, %d records, OPT %v", resp.Truncated, len(resp.Answer), resp.IsEdns0())
	}

	// Gone when the pod goes.
	zero := int64(0)
	if err := e.CoreV1().Pods(ns).Delete(context.Background(), "db-0", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	et.Eventually(t, "db-0 to go", func() bool {
		return e.query(t, "udp", "db-0.db.default.svc.cluster.local.", dns.TypeA).Rcode == dns.RcodeNameError
	})
}

func TestUnsyncedResolverAnswersServfailForUnknownNames(t *testing.T) {
	srv := testserver.Start(t)
	r := clusterdns.New(testserver.Client(t, srv), clusterdns.Options{Domain: "example.internal", TTL: 30 * time.Second})
	addr := serve(t, r) // never Run: nothing synced
	for _, tc := range []struct {
		name  string
		rcode int
	}{
		{"web.default.svc.example.internal.", dns.RcodeServerFailure},
		{"example.internal.", dns.RcodeSuccess},
		{"web.default.svc.cluster.local.", dns.RcodeRefused}, // not this cluster's domain
	} {
		if resp := exchange(t, addr, "udp", tc.name, dns.TypeA); resp.Rcode != tc.rcode {
			t.Errorf("%s: rcode %s, want %s", tc.name, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
		}
	}
	if soa := exchange(t, addr, "tcp", "example.internal.", dns.TypeSOA).Answer; len(soa) != 1 || soa[0].(*dns.SOA).Minttl != 30 {
		t.Errorf("SOA %v, want a minimum TTL of 30", soa)
	}
}
