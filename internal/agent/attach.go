package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/moorage/moorage/internal/container"
	"github.com/moorage/moorage/internal/streaming"
)

// serveAttach connects `kubectl attach` to a running container's own
// streams, over WebSocket or SPDY as the client asks: the container's
// output from now on, and with -i its stdin (see container.Runtime.Attach
// for what a session's input does to a container with and without
// stdin/stdinOnce). The container's shim serves the session, so a
// container started before an agent restart is attached to as any other.
func (a *Agent) serveAttach(w http.ResponseWriter, r *http.Request) {
	ns, podName, name := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	worker, pod, _, _ := a.findContainer(ns, podName, name)
	if worker == nil {
		http.Error(w, "pod does not exist", http.StatusNotFound) // the kubelet's words
		return
	}
	id, ok := a.runningContainer(pod, name)
	if !ok {
		// The kubelet's answer (a 500 with its error as plain text, which
		// kubectl shows as "unable to upgrade connection: ..."): it only
		// attaches to running containers, and names the pod by its full
		// name (name_namespace). The text must not look like YAML ("a: b"),
		// or kubectl decodes it as an empty Status.
		http.Error(w, fmt.Sprintf("container %s not found in pod %s_%s", name, podName, ns), http.StatusInternalServerError)
		return
	}
	opts, err := streaming.OptionsFromRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	streaming.ServeAttach(w, r, opts, func(ctx context.Context, s streaming.Session) (int, error) {
		err := a.runtime.Attach(ctx, id, container.AttachSpec{
			Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Resize: termSizes(ctx, s.Resize),
		})
		if errors.Is(err, container.ErrNotRunning) {
			err = fmt.Errorf("container %s is not running", name)
		}
		if ctx.Err() != nil {
			return 0, nil // the client is gone: nobody to tell
		}
		return 0, err
	}, 4*time.Hour, 30*time.Second)
}

// runningContainer is the runtime ID of the pod's container name if it is
// running. It is looked up on disk (IDs say whose they are), not in the
// pod worker's memory, which is the worker goroutine's.
func (a *Agent) runningContainer(pod *corev1.Pod, name string) (string, bool) {
	ids, err := a.runtime.List()
	if err != nil {
		return "", false
	}
	for _, id := range ids {
		uid, n, _, ok := parseContainerID(id)
		if !ok || uid != pod.UID || n != name {
			continue
		}
		if st, err := a.runtime.State(id); err == nil && st.Status == container.StatusRunning {
			return id, true
		}
	}
	return "", false
}

// termSizes passes the client's window sizes on to the runtime until ctx
// is done; nil without any.
func termSizes(ctx context.Context, in <-chan streaming.TermSize) <-chan container.TermSize {
	if in == nil {
		return nil
	}
	out := make(chan container.TermSize, 1)
	go func() {
		defer close(out)
		for sz := range in {
			select {
			case out <- container.TermSize{Width: sz.Width, Height: sz.Height}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
