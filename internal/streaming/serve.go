package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/remotecommand"
)

// closeGrace bounds how long the server waits, after its last write, for the
// client to hang up before it closes the connection itself. Closing first
// with unread client data in the socket makes the kernel send a reset, which
// can destroy output the client has not read yet.
const closeGrace = 5 * time.Second

// errSessionOver is what the Executor's streams return once it has returned.
var errSessionOver = errors.New("streaming: session is over")

// ServeExec upgrades the request (WebSocket if the client asks for it, else
// SPDY), runs exec with the client's streams, and reports its exit code or
// error on the error stream as the kubelet does. It returns when the
// session is over and the connection closed. If the upgrade fails, the
// client has been answered with an HTTP error.
//
// idleTimeout closes a connection that carries no data for that long (0:
// never). streamCreationTimeout bounds how long an SPDY client may take to
// open its streams (0: remotecommand.DefaultStreamCreationTimeout, 30s).
func ServeExec(w http.ResponseWriter, r *http.Request, opts Options, exec Executor, idleTimeout, streamCreationTimeout time.Duration) {
	serve(w, r, opts, exec, idleTimeout, streamCreationTimeout, func(code int, err error) *metav1.Status {
		return execStatus(opts.Command, code, err)
	})
}

// ServeAttach is ServeExec for kubectl attach: as in the kubelet, the exit
// code is not reported (attach succeeds when the stream ends), and an error
// is reported as "error attaching to container: ...".
func ServeAttach(w http.ResponseWriter, r *http.Request, opts Options, attach Executor, idleTimeout, streamCreationTimeout time.Duration) {
	serve(w, r, opts, attach, idleTimeout, streamCreationTimeout, attachStatus)
}

// wire is one upgraded connection, whatever the transport, with the streams
// the client opened. Absent streams are nil interfaces.
type wire struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	resize         io.Reader
	// version is the remote command protocol version (1 to 5); it decides
	// how the status is written.
	version int
	// writeError writes raw bytes on the error channel or stream.
	writeError func([]byte) error
	// gone is closed when the client's side of the connection has ended.
	gone <-chan struct{}
	// close ends the session: half-close, wait for the client, close.
	close func()
}

func serve(w http.ResponseWriter, r *http.Request, opts Options, run Executor, idleTimeout, streamCreationTimeout time.Duration, status func(int, error) *metav1.Status) {
	if opts.TTY {
		opts.Stderr = false
	}
	if streamCreationTimeout <= 0 {
		streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
	}
	var c *wire
	if websocket.IsWebSocketUpgrade(r) {
		c = openWebSocket(w, r, opts, idleTimeout)
	} else {
		c = openSPDY(w, r, opts, idleTimeout, streamCreationTimeout)
	}
	if c == nil {
		return
	}
	defer c.close()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-c.gone:
			cancel()
		case <-ctx.Done():
		}
	}()

	s := Session{Stdin: c.stdin, Stdout: c.stdout, Stderr: c.stderr, TTY: opts.TTY}
	if c.resize != nil {
		s.Resize = watchResize(ctx, c.resize)
	}
	code, err := run(ctx, s)
	// The client may be gone already; there is nobody to tell then.
	_ = c.writeError(encodeStatus(c.version, status(code, err)))
}

// execStatus is the final status of an exec session, worded as the kubelet
// and containerd word it.
func execStatus(command []string, code int, err error) *metav1.Status {
	switch {
	case err != nil:
		return internalError(fmt.Errorf("error executing command in container: %w", err))
	case code == 0:
		return &metav1.Status{Status: metav1.StatusSuccess}
	case code < 0 || code > 255:
		return internalError(fmt.Errorf("error executing command in container: exit code %d is outside 0-255", code))
	}
	return &metav1.Status{
		Status: metav1.StatusFailure,
		Reason: remotecommand.NonZeroExitCodeReason,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{
			Type:    remotecommand.ExitCodeCauseType,
			Message: strconv.Itoa(code),
		}}},
		Message: fmt.Sprintf("command terminated with non-zero exit code: error executing command %v, exit code %d", command, code),
	}
}

func attachStatus(_ int, err error) *metav1.Status {
	if err != nil {
		return internalError(fmt.Errorf("error attaching to container: %w", err))
	}
	return &metav1.Status{Status: metav1.StatusSuccess}
}

func internalError(err error) *metav1.Status {
	st := apierrors.NewInternalError(err).ErrStatus
	return &st
}

// encodeStatus renders st for the error stream: JSON from v4 on; before v4
// only failures are written, as their message.
func encodeStatus(version int, st *metav1.Status) []byte {
	if version >= 4 {
		b, err := json.Marshal(st)
		if err != nil {
			// metav1.Status always marshals; keep the client informed anyway.
			return []byte(`{"metadata":{},"status":"Failure","message":"cannot encode status"}`)
		}
		return b
	}
	if st.Status == metav1.StatusSuccess {
		return nil
	}
	return []byte(st.Message)
}

// readerOnly and writerOnly hide the Close and Reset methods of the
// transport's streams from the Executor.
type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }

// writeHTTPStatus answers a request that was not upgraded with a Status body,
// which kubectl prints.
func writeHTTPStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(st)
}
