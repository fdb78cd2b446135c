package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/network"
	"github.com/moorage/moorage/internal/streaming"
)

// servePortForward answers `kubectl port-forward` (the kubelet's
// /portForward/{ns}/{pod}) for a pod of this node, over SPDY or SPDY
// tunnelled through a WebSocket, as the client asks.
func (a *Agent) servePortForward(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	pod := a.findPod(ns, name)
	if pod == nil {
		http.Error(w, fmt.Sprintf("pod %q not found on node %q", ns+"/"+name, a.opts.NodeName), http.StatusNotFound)
		return
	}
	streaming.ServePortForward(w, r, string(pod.UID), func(ctx context.Context, port int32) (net.Conn, error) {
		return a.dialPod(ctx, pod, port)
	}, 4*time.Hour, 30*time.Second)
}

// findPod is the latest copy of a pod this node runs, or nil.
func (a *Agent) findPod(ns, name string) *corev1.Pod {
	a.podsMu.Lock()
	defer a.podsMu.Unlock()
	for _, w := range a.workers {
		if p, gone := w.latest(); p != nil && !gone && p.Namespace == ns && p.Name == name {
			return p
		}
	}
	return nil
}

// dialPod connects to a port of a pod on its own loopback, as the kubelet
// does: 127.0.0.1, then ::1 for a server listening on IPv6 only; inside the
// pod's network namespace unless it uses the node's.
func (a *Agent) dialPod(ctx context.Context, pod *corev1.Pod, port int32) (net.Conn, error) {
	dial := (&net.Dialer{}).DialContext
	if n := a.net.Load(); n != nil && !pod.Spec.HostNetwork {
		p, ok := n.Lookup(string(pod.UID))
		if !ok {
			return nil, fmt.Errorf("pod %s/%s has no network yet", pod.Namespace, pod.Name)
		}
		dial = func(ctx context.Context, nw, addr string) (net.Conn, error) {
			return network.DialIn(ctx, p.NetNS, nw, addr)
		}
	}
	p := strconv.Itoa(int(port))
	c, err := dial(ctx, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err == nil {
		return c, nil
	}
	if c6, err6 := dial(ctx, "tcp6", net.JoinHostPort("::1", p)); err6 == nil {
		return c6, nil
	}
	return nil, err
}
