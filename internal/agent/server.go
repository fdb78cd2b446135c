package agent

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/streaming"
)

// Handler is the agent's own API, which the API server reaches for pod logs
// and exec sessions (the kubelet's /containerLogs and /exec).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", a.serveLogs)
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", a.serveExec)
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", a.serveAttach)
	mux.HandleFunc("/portForward/{ns}/{pod}", a.servePortForward)
	return mux
}

// findContainer finds a pod's worker and container memory by names.
func (a *Agent) findContainer(ns, podName, name string) (*podWorker, *corev1.Pod, *containerState, error) {
	a.podsMu.Lock()
	var w *podWorker
	var pod *corev1.Pod
	for _, cand := range a.workers {
		if p, _ := cand.latest(); p != nil && p.Namespace == ns && p.Name == podName {
			w, pod = cand, p
		}
	}
	a.podsMu.Unlock()
	if w == nil {
		return nil, nil, nil, fmt.Errorf("pod %q not found on node %q", ns+"/"+podName, a.opts.NodeName)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cs := w.containers[name]
	if cs == nil {
		return w, pod, nil, fmt.Errorf("container %q in pod %q is waiting to start: ContainerCreating", name, podName)
	}
	return w, pod, cs, nil
}

// serveLogs answers what `kubectl logs` asks: follow, previous, tailLines,
// sinceSeconds/sinceTime, timestamps, limitBytes; with upstream's errors for
// a container that has not started or has no previous instance.
func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, podName, name := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	_, pod, cs, err := a.findContainer(ns, podName, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	previous := q.Get("previous") == "true"
	attempt, id := cs.attempt, cs.id
	switch {
	case previous && (cs.previous == nil || attempt == 0):
		http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", name, podName), http.StatusBadRequest)
		return
	case previous:
		attempt, id = attempt-1, containerID(pod.UID, name, attempt-1)
	case id == "":
		reason := cs.waitingReason
		if reason == "" {
			reason = "ContainerCreating"
		}
		http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: %s", name, podName, reason), http.StatusBadRequest)
		return
	}
	opts := container.LogOptions{Follow: q.Get("follow") == "true" && !previous, Timestamps: q.Get("timestamps") == "true"}
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "tailLines: must be a non-negative integer", http.StatusBadRequest)
			return
		}
		opts.TailLines = &n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			http.Error(w, "limitBytes: must be greater than 0", http.StatusBadRequest)
			return
		}
		opts.LimitBytes = &n
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			http.Error(w, "sinceSeconds: must be greater than 0", http.StatusBadRequest)
			return
		}
		t := time.Now().Add(-time.Duration(n) * time.Second)
		opts.SinceTime = &t
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			http.Error(w, "sinceTime: "+err.Error(), http.StatusBadRequest)
			return
		}
		opts.SinceTime = &t
	}
	opts.Exited = func() bool {
		st, err := a.runtime.State(id)
		return err != nil || st.Status == container.StatusExited
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	fw := flushWriter{w}
	if err := container.ReadLog(r.Context(), a.logPath(pod, name, attempt), opts, fw); err != nil && r.Context().Err() == nil {
		a.log.Debug("reading container log", "container", id, "err", err)
	}
}

// flushWriter flushes after every write, so `kubectl logs -f` sees lines
// as they come.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// serveExec runs `kubectl exec` (and `kubectl cp`) in a running container,
// over WebSocket or SPDY as the client asks.
func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) {
	ns, podName, name := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	_, _, cs, err := a.findContainer(ns, podName, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	opts, err := streaming.OptionsFromRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := cs.id
	if st, err := a.runtime.State(id); id == "" || err != nil || st.Status != container.StatusRunning {
		http.Error(w, fmt.Sprintf("container not found (%q)", name), http.StatusInternalServerError) // the kubelet's answer; kubectl adds "unable to upgrade connection: "
		return
	}
	streaming.ServeExec(w, r, opts, func(ctx context.Context, s streaming.Session) (int, error) {
		var resize chan container.TermSize
		if s.Resize != nil {
			resize = make(chan container.TermSize, 1)
			go func() {
				defer close(resize)
				for sz := range s.Resize {
					select {
					case resize <- container.TermSize{Width: sz.Width, Height: sz.Height}:
					case <-ctx.Done():
						return
					}
				}
			}()
		}
		return a.runtime.Exec(ctx, id, container.ExecSpec{
			Args: opts.Command, TTY: s.TTY, Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Resize: resize,
		})
	}, 4*time.Hour, 30*time.Second)
}
