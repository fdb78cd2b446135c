package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Executor runs one command session. It must not touch the Session after it
// returns.
//
// Stdin is nil when the client sent none; it ends with io.EOF when the client
// closes its stdin (SPDY half-close, WebSocket v5 close signal) and with an
// error when the client goes away. With TTY, Stderr is nil and Resize
// delivers window sizes. ctx is cancelled when the client disconnects or the
// connection stays idle too long.
//
// exitCode is the command's exit status (0 to 255; 128+n for a signal, as a
// shell reports it). A non-nil err means the command could not be run or
// followed; it is reported instead of exitCode.
type Executor func(ctx context.Context, s Session) (exitCode int, err error)

// Session holds the client's streams for one Executor call. Writes to Stdout
// and Stderr go to the client as they are made; they may be called from
// different goroutines.
type Session struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	TTY            bool
	// Resize is nil unless TTY is set and the protocol carries window sizes
	// (WebSocket, SPDY v3 and later). Sizes the Executor has not taken yet are
	// coalesced: only the newest is kept. It is closed when the client stops
	// sending sizes or the session ends.
	Resize <-chan TermSize
}

// TermSize is a terminal window size, in character cells. On the wire it is
// the JSON object {"Width":80,"Height":24}.
type TermSize struct{ Width, Height uint16 }

// Options says which streams the client asked for.
type Options struct {
	Stdin, Stdout, Stderr, TTY bool
	// Command is the command line to run (the repeated "command" query
	// parameter); empty for attach. It only appears in the exit status
	// message; the Executor is given it by its caller.
	Command []string
}

// ErrNoStreams is returned by OptionsFromRequest when the client asked for
// none of stdin, stdout and stderr. The message is the kubelet's.
var ErrNoStreams = errors.New("you must specify at least 1 of stdin, stdout, stderr")

// streamParams maps each stream to its query parameters: kubectl sends
// PodExecOptions names (stdin=true), the API server sends the kubelet
// names (input=1). Either is accepted.
var streamParams = [...]struct{ names [2]string }{
	{[2]string{"stdin", "input"}},
	{[2]string{"stdout", "output"}},
	{[2]string{"stderr", "error"}},
	{[2]string{"tty", "tty"}},
}

// OptionsFromRequest reads the streams the client asked for from the query
// of an exec or attach request. Booleans are parsed with strconv.ParseBool
// ("1" and "true" are the usual values); a malformed one is an error. As in
// the kubelet, stderr is dropped when tty is set (a terminal merges it into
// stdout), and asking for no stream at all is ErrNoStreams.
func OptionsFromRequest(r *http.Request) (Options, error) {
	q := r.URL.Query()
	var flags [len(streamParams)]bool
	for i, p := range streamParams {
		for _, name := range p.names {
			v := q.Get(name)
			if v == "" {
				continue
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("invalid value %q for query parameter %q: want true or false", v, name)
			}
			flags[i] = flags[i] || b
		}
	}
	opts := Options{Stdin: flags[0], Stdout: flags[1], Stderr: flags[2], TTY: flags[3], Command: q["command"]}
	if opts.TTY {
		opts.Stderr = false
	}
	if !opts.Stdin && !opts.Stdout && !opts.Stderr {
		return Options{}, ErrNoStreams
	}
	return opts, nil
}
