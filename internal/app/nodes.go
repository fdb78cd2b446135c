package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// remoteAgents reaches agents in other processes (`moorage agent`) at the
// address and port their Node reports, with the server's token: logs
// stream through, and exec's connection upgrade passes through the proxy.
type remoteAgents struct {
	client kubernetes.Interface
	token  string
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
	proxy := httputil.NewSingleHostReverseProxy(target)
	director := proxy.Director
	proxy.Director = func(req *http.Request) {
		director(req)
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	proxy.FlushInterval = -1 // logs -f: every write at once
	return proxy, nil
}
