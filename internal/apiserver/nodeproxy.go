package apiserver

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeConnector returns the handler of a node agent's own API (the
// kubelet's: /containerLogs, /exec, ...), or an error when none is reachable.
type NodeConnector func(nodeName string) (http.Handler, error)

// podProxySubresources are the pod subresources answered by the pod's node.
var podProxySubresources = map[string]string{"log": "containerLogs", "exec": "exec", "attach": "attach", "portforward": "portForward"}

// servePodProxy answers pods/NAME/{log,exec,attach,portforward} as upstream:
// the API server checks the pod and container, then hands the request to
// the agent of the pod's node. A log the agent refuses comes back as a
// Status with the agent's code and words.
func (s *Server) servePodProxy(w http.ResponseWriter, r *http.Request, req *request) error {
	obj, _, err := s.objects.get(r.Context(), req.res, req.namespace, req.name)
	if err != nil {
		return err
	}
	pod := obj.(*corev1.Pod)
	q := r.URL.Query()
	var containerName string
	if req.subresource != "portforward" {
		if containerName, err = podContainer(pod, q.Get("container")); err != nil {
			return err
		}
	}
	if pod.Spec.NodeName == "" {
		return apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name))
	}
	if s.cfg.Nodes == nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("no agent is reachable for node %q", pod.Spec.NodeName))
	}
	node, err := s.cfg.Nodes(pod.Spec.NodeName)
	if err != nil {
		return apierrors.NewServiceUnavailable(err.Error())
	}
	path := "/" + podProxySubresources[req.subresource] + "/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name)
	if containerName != "" {
		path += "/" + url.PathEscape(containerName)
	}
	out := r.Clone(r.Context())
	out.URL = &url.URL{Path: path, RawQuery: r.URL.RawQuery}
	out.RequestURI = out.URL.RequestURI()
	if req.subresource != "log" {
		node.ServeHTTP(w, out) // connection upgrades pass straight through
		return nil
	}
	lw := &logWriter{w: w}
	node.ServeHTTP(lw, out)
	if lw.status >= 300 {
		return &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: int32(lw.status), Reason: reasonFor(lw.status),
			Message: strings.TrimSpace(lw.body.String()),
		}}
	}
	return nil
}

func reasonFor(code int) metav1.StatusReason {
	switch code {
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	}
	return metav1.StatusReasonInternalError
}

// podContainer picks the container a request means, with upstream's errors.
func podContainer(pod *corev1.Pod, name string) (string, error) {
	var names, initNames []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.InitContainers {
		initNames = append(initNames, c.Name)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		initNames = append(initNames, c.Name)
	}
	if name == "" {
		if len(names) == 1 {
			return names[0], nil
		}
		msg := fmt.Sprintf("a container name must be specified for pod %s, choose one of: %v", pod.Name, names)
		if len(initNames) > 0 {
			msg += fmt.Sprintf(" or one of the init containers: %v", initNames)
		}
		return "", apierrors.NewBadRequest(msg)
	}
	for _, n := range append(names, initNames...) {
		if n == name {
			return name, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
}

// logWriter streams a successful log response through and keeps the body
// of a failed one for the Status.
type logWriter struct {
	w      http.ResponseWriter
	status int
	body   strings.Builder
}

func (l *logWriter) Header() http.Header { return l.w.Header() }

func (l *logWriter) WriteHeader(code int) {
	if l.status != 0 {
		return
	}
	l.status = code
	if code < 300 {
		l.w.WriteHeader(code)
		return
	}
	// The Status written instead has its own length.
	l.w.Header().Del("Content-Length")
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.WriteHeader(http.StatusOK)
	if l.status >= 300 {
		return l.body.Write(p)
	}
	return l.w.Write(p)
}

func (l *logWriter) Flush() {
	if f, ok := l.w.(http.Flusher); ok && l.status < 300 {
		f.Flush()
	}
}
