// Package streaming is the server side of the Kubernetes remote command
// protocols: what the node agent speaks so that kubectl exec, attach, cp
// (exec of tar) and port-forward work against the pods it runs. It knows
// nothing about containers; an Executor (or, for port-forward, a PortDialer)
// supplied by the caller does the work.
//
// # Design
//
// ServeExec and ServeAttach upgrade the request to one of two transports and
// hand the Executor plain readers and writers:
//
//   - WebSocket (kubectl 1.30 and later): subprotocols v5.channel.k8s.io,
//     v4.channel.k8s.io, v4.base64.channel.k8s.io, channel.k8s.io and
//     base64.channel.k8s.io (or none, read as channel.k8s.io). Every message
//     starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error
//     (status), 4 resize; v5 adds [255, channel] to half-close stdin, which
//     is how the client says its stdin has ended. One goroutine reads the
//     socket and feeds stdin and resize through pipes; writes share a mutex.
//   - SPDY/3.1 (kubectl 1.27 to 1.29, and the fallback of later ones):
//     X-Stream-Protocol-Version v5 (handled as v4, as the kubelet does), v4,
//     v3, v2 or channel.k8s.io; the client opens one stream per kind, named
//     by the streamType header, and the server waits for all it was promised
//     before running the session.
//
// The outcome goes on the error channel or stream as the kubelet writes it:
// from v4 a JSON metav1.Status (Success; Failure with reason NonZeroExitCode
// and an ExitCode cause, which client-go turns into exec.CodeExitError; or an
// InternalError carrying the Executor's error), before v4 the failure message
// as text. Then the server half-closes its side, waits a short while for the
// client to hang up, and closes the connection, so no output is lost to a
// reset. A client that goes away, or an idle timeout, cancels the Executor's
// context.
//
// # Port forwarding
//
// ServePortForward serves kubectl port-forward with a caller-supplied
// PortDialer. It is SPDY/3.1 with X-Stream-Protocol-Version
// portforward.k8s.io, either on the upgraded HTTP connection (kubectl 1.27
// to 1.30, and the fallback of later ones) or tunnelled through a WebSocket
// with subprotocol SPDY/3.1+portforward.k8s.io, whose binary messages carry
// the SPDY bytes (kubectl 1.31 and later). For each local connection the
// client opens two streams with the same requestID header, streamType error
// and data, and a port header (1 to 65535; a stream with a bad one is
// refused, as by the kubelet). Once both are there and replied to (data sent
// before the reply is lost), the server dials the port and copies the data
// stream both ways, passing half-closes on; a dial error is written as text
// on the error stream ("error forwarding port P to pod ..."), after which
// kubectl ends the whole session. A pair still incomplete
// after the stream creation timeout gets a message on its error stream.
//
// Authentication and authorization are the caller's job; this package
// accepts any Origin.
package streaming
