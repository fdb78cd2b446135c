package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/moorage/moorage/internal/container"
)

// probeSet runs a container's startup, liveness and readiness probes, each
// on its own goroutine, until the container is replaced.
type probeSet struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (a *Agent) noStartupProbe(pod *corev1.Pod, name string) bool {
	c := regularContainer(pod, name)
	return c == nil || c.StartupProbe == nil
}

// startProbes starts probing a freshly started container. Without a
// readiness probe the container is ready once started, as upstream; the
// startup probe, while it has not succeeded, holds the other two back.
func (a *Agent) startProbes(w *podWorker, pod *corev1.Pod, c *corev1.Container, cs *containerState) {
	a.stopProbesOf(cs)
	ctx, cancel := context.WithCancel(context.Background())
	ps := &probeSet{cancel: cancel}
	cs.probes = ps
	id := cs.id
	set := func(f func()) {
		w.mu.Lock()
		if cs.id == id {
			f()
		}
		w.mu.Unlock()
		w.wake()
	}
	started := make(chan struct{})
	if c.StartupProbe == nil {
		cs.started.Store(true)
		close(started)
	} else {
		ps.wg.Go(func() {
			a.probeLoop(ctx, pod, c, id, "Startup", c.StartupProbe, func(ok bool) bool {
				if ok {
					set(func() { cs.started.Store(true) })
					close(started)
					return false // done
				}
				return true
			}, func() { set(func() { cs.liveFails.Store(true) }) })
		})
	}
	if c.ReadinessProbe == nil {
		cs.ready.Store(true)
	}
	if c.ReadinessProbe != nil {
		ps.wg.Go(func() {
			select {
			case <-started:
			case <-ctx.Done():
				return
			}
			a.probeLoop(ctx, pod, c, id, "Readiness", c.ReadinessProbe, func(ok bool) bool {
				set(func() { cs.ready.Store(ok) })
				return true
			}, nil)
		})
	}
	if c.LivenessProbe != nil {
		ps.wg.Go(func() {
			select {
			case <-started:
			case <-ctx.Done():
				return
			}
			a.probeLoop(ctx, pod, c, id, "Liveness", c.LivenessProbe, func(ok bool) bool { return true },
				func() { set(func() { cs.liveFails.Store(true) }) })
		})
	}
}

func (a *Agent) stopProbesOf(cs *containerState) {
	if cs.probes != nil {
		cs.probes.cancel()
		cs.probes = nil
	}
}

func (a *Agent) stopProbes(w *podWorker) {
	for _, cs := range w.containers {
		a.stopProbesOf(cs)
	}
}

// probeLoop runs one probe with upstream's timing: initialDelaySeconds,
// then every periodSeconds, failureThreshold failures in a row to fail,
// successThreshold successes to succeed. result gets each settled outcome
// and says whether to go on; failed runs when the failure threshold is hit.
func (a *Agent) probeLoop(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id, kind string, p *corev1.Probe,
	result func(ok bool) bool, failed func()) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	failThreshold := max(int(p.FailureThreshold), 1)
	successThreshold := max(int(p.SuccessThreshold), 1)
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	fails, successes := 0, 0
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		ok, msg := a.runProbe(ctx, pod, c, id, p, timeout)
		if ctx.Err() != nil {
			return
		}
		if ok {
			fails, successes = 0, successes+1
			if successes >= successThreshold && !result(true) {
				return
			}
		} else {
			successes, fails = 0, fails+1
			a.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", kind, msg)
			if fails >= failThreshold {
				if !result(false) {
					return
				}
				if failed != nil {
					failed()
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runProbe runs one check: exec (exit 0), httpGet (2xx or 3xx) or
// tcpSocket (connects), to the pod's IP unless the probe names a host, as
// the kubelet does.
func (a *Agent) runProbe(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, p *corev1.Probe, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.Exec != nil:
		var out bytes.Buffer
		code, err := a.runtime.Exec(ctx, id, container.ExecSpec{Args: p.Exec.Command, Stdout: &out, Stderr: &out})
		if ctx.Err() == context.DeadlineExceeded {
			return false, fmt.Sprintf("command timed out after %s", timeout)
		}
		if err != nil {
			return false, err.Error()
		}
		if code != 0 {
			msg := strings.TrimSpace(out.String())
			if msg == "" {
				msg = fmt.Sprintf("command %q exited with %d", strings.Join(p.Exec.Command, " "), code)
			}
			return false, msg
		}
		return true, ""
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := resolvePort(g.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := g.Host
		if host == "" {
			host = a.probeHost(pod)
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: g.Path}
		if i := strings.IndexByte(g.Path, '?'); i >= 0 {
			u.Path, u.RawQuery = g.Path[:i], g.Path[i+1:]
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/1.33")
		req.Header.Set("Accept", "*/*")
		for _, h := range g.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		client := &http.Client{
			Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true,
				DialContext: a.probeDialer(pod)},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, fmt.Sprintf("Get %q: %v", u.String(), unwrapURLError(err))
		}
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 400 {
			return true, ""
		}
		return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = a.probeHost(pod)
		}
		conn, err := a.probeDialer(pod)(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	case p.GRPC != nil:
		return false, "gRPC probes are not supported by moorage yet"
	}
	return false, "probe has no handler"
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// resolvePort turns a number or a named container port into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("couldn't find port: %v in %v", p.StrVal, c.Name)
}

// probeHost is where probes go by default: the pod's IP (the node's
// loopback for hostNetwork pods).
func (a *Agent) probeHost(pod *corev1.Pod) string {
	if ip := a.podIP(pod); ip != "" && !pod.Spec.HostNetwork {
		return ip
	}
	return "127.0.0.1"
}

// probeDialer dials from where the kubelet would: the node. Pods on the
// pod network are reached from the node's network namespace.
func (a *Agent) probeDialer(pod *corev1.Pod) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if n := a.net.Load(); n != nil && !pod.Spec.HostNetwork {
		return n.Dial
	}
	return (&net.Dialer{}).DialContext
}
