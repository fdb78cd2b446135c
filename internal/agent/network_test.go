package agent_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Pods get their own addresses from the node's pod CIDR, reach each other,
// a Service's cluster IP (proxied to its ready endpoints, which the
// server's EndpointSlice controller finds) by address and by name through
// the cluster DNS, and the API server through the kubernetes Service; the
// downward API's status.podIP is the pod's own address.
func TestPodNetwork(t *testing.T) {
	c, nodeName := startNode(t)
	ctx := context.Background()
	var cidr netip.Prefix
	waitFor(t, func() bool {
		n, err := c.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil || n.Spec.PodCIDR == "" {
			return false
		}
		cidr = netip.MustParsePrefix(n.Spec.PodCIDR)
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	})

	server := runPod(t, c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "server", Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{
		NodeName: nodeName, TerminationGracePeriodSeconds: ptr.To(int64(0)),
		Containers: []corev1.Container{{Name: "httpd", Image: "busybox", ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www"},
			Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
	}}, corev1.PodRunning)
	ip, err := netip.ParseAddr(server.Status.PodIP)
	if err != nil || !cidr.Contains(ip) {
		t.Fatalf("server's pod IP %q is not in the node's pod CIDR %s", server.Status.PodIP, cidr)
	}

	svc, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	script := strings.Join([]string{
		"busybox timeout 5 busybox wget -qO- http://" + ip.String() + ":8080/",
		"busybox timeout 5 busybox wget -qO- http://" + svc.Spec.ClusterIP + "/",
		"busybox timeout 5 busybox nc -w 2 10.96.0.1 443 </dev/null && echo api",
		"busybox nslookup web.default.svc.cluster.local | grep -c " + svc.Spec.ClusterIP,
		"busybox timeout 5 busybox wget -qO- http://web/",
		"hostname",
		"grep nameserver /etc/resolv.conf",
		"echo $POD_IP",
	}, " && ")
	client := runPod(t, c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client"}, Spec: corev1.PodSpec{
		NodeName: nodeName, RestartPolicy: corev1.RestartPolicyNever,
		Containers: []corev1.Container{{Name: "wget", Image: "busybox", ImagePullPolicy: corev1.PullNever,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			Env:                      []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
			Command:                  []string{"sh", "-c", "(" + script + ") >/dev/termination-log 2>&1 || { cat /dev/termination-log; exit 1; }"}}},
	}}, corev1.PodSucceeded, corev1.PodFailed)
	got := client.Status.ContainerStatuses[0].State.Terminated.Message
	want := "hello\nhello\napi\n1\nhello\nclient\nnameserver 10.96.0.10\n" + client.Status.PodIP + "\n"
	if client.Status.Phase != corev1.PodSucceeded || got != want {
		t.Fatalf("client %s; its output:\n%s\nwant:\n%s", client.Status.Phase, got, want)
	}
}

// runPod creates pod and waits for one of the phases.
func runPod(t *testing.T, c kubernetes.Interface, pod *corev1.Pod, phases ...corev1.PodPhase) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		p, err := c.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil {
			got = p
			for _, ph := range phases {
				if p.Status.Phase == ph {
					return p
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	events, _ := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	for _, e := range events.Items {
		if e.InvolvedObject.Name == pod.Name {
			t.Logf("event %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
	t.Fatalf("pod %s not %v: %+v", pod.Name, phases, got.Status)
	return nil
}
