package streaming

import (
	"context"
	"encoding/json"
	"io"
)

// watchResize decodes the JSON window sizes the client sends on r and
// delivers them on the returned channel. Reading never waits for the
// Executor: a size it has not taken yet is replaced by a newer one, so a
// slow consumer cannot stall the connection (on WebSocket, one reader serves
// every channel). The channel is closed when r ends or ctx is done.
func watchResize(ctx context.Context, r io.Reader) <-chan TermSize {
	decoded := make(chan TermSize)
	go func() {
		defer close(decoded)
		dec := json.NewDecoder(r)
		for {
			var size TermSize
			if err := dec.Decode(&size); err != nil {
				return
			}
			select {
			case decoded <- size:
			case <-ctx.Done():
				return
			}
		}
	}()

	out := make(chan TermSize)
	go func() {
		defer close(out)
		var pending TermSize
		var have bool
		in := decoded
		for in != nil || have {
			var send chan<- TermSize
			if have {
				send = out
			}
			select {
			case size, ok := <-in:
				if !ok {
					in = nil
					continue
				}
				pending, have = size, true
			case send <- pending:
				have = false
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
