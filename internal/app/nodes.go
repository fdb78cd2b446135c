package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// remoteAgents reaches agents in other processes (`moorage agent`) at the
// address and port their Node reports: logs stream through, and exec's
// connection upgrade passes through the proxy. With tls (kubeletClientTLS)
// it speaks https and authenticates with the server's client certificate,
// as kube-apiserver reaches kubelets; without, plain http with the
// server's token (agents from before node certificates).
type remoteAgents struct {
	client kubernetes.Interface
	tls    *tls.Config
	token  string

	once      sync.Once
	transport http.RoundTripper
}

// roundTripper is the one transport to every agent, so that connections
// are reused.
func (r *remoteAgents) roundTripper() http.RoundTripper {
	r.once.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		t.TLSClientConfig = r.tls // HTTP/1.1: exec upgrades the connection
		t.ForceAttemptHTTP2 = false
		r.transport = t
	})
	return r.transport
}

func (r *remoteAgents) handler(name string) (http.Handler, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node, err := r.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", name, err)
	}
	port := node.Status.DaemonEndpoints.KubeletEndpoint.Port
	var ip string
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
			break
		}
	}
	if ip == "" || port == 0 {
		return nil, fmt.Errorf("node %q reports no address for its agent", name)
	}
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort(ip, strconv.Itoa(int(port)))}
	if r.tls != nil {
		target.Scheme = "https"
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = r.roundTripper()
	director := proxy.Director
	proxy.Director = func(req *http.Request) {
		director(req)
		req.Header.Del("Authorization") // the caller's credentials stay with the API server
		if r.tls == nil {
			req.Header.Set("Authorization", "Bearer "+r.token)
		}
	}
	proxy.FlushInterval = -1 // logs -f: every write at once
	return proxy, nil
}
