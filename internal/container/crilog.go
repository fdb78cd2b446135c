package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The CRI log format, one entry a line:
//
//	2016-10-06T00:17:09.669794202Z stdout F a full line
//	2016-10-06T00:17:09.669794203Z stderr P the first part of a long line
//
// "F" ends a line; "P" is a part of a line longer than maxLogLine, to be
// joined with the entries that follow.
const (
	criTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"
	maxLogLine    = 16 * 1024
)

// criWriter writes the lines of several streams into one CRI log.
type criWriter struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

func newCRIWriter(w io.Writer) *criWriter {
	return &criWriter{w: w, now: time.Now}
}

// copyLines copies r into the log, one entry per line (or per maxLogLine
// bytes of a longer one), until r ends.
func (c *criWriter) copyLines(r io.Reader, stream string) error {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			tag := "F"
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				tag = "P"
			case line[len(line)-1] == '\n':
				line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
			} // else: the stream ended without a newline; still a full line
			if werr := c.write(stream, tag, line); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
			return nil
		default:
			return err
		}
	}
}

// write appends one entry, in a single write.
func (c *criWriter) write(stream, tag string, msg []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := make([]byte, 0, len(criTimeFormat)+len(stream)+len(msg)+5)
	buf = c.now().UTC().AppendFormat(buf, criTimeFormat)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, msg...)
	buf = append(buf, '\n')
	_, err := c.w.Write(buf)
	return err
}

// LogOptions select what ReadLog shows, as `kubectl logs` asks for it.
type LogOptions struct {
	Follow     bool
	TailLines  *int64 // only the last N entries
	SinceTime  *time.Time
	Timestamps bool // prefix each entry with its RFC 3339 time
	LimitBytes *int64
	// Exited reports whether the log is complete (its container has
	// exited: State says StatusExited). Following stops once it says so
	// and the file is read to its end; nil follows until ctx is done.
	Exited func() bool
}

// ReadLog writes the messages of the CRI log at path to w, as `kubectl logs`
// shows them. When following, it returns nil once ctx is done or the log is
// complete.
func ReadLog(ctx context.Context, path string, opts LogOptions, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	defer f.Close()
	if opts.TailLines != nil {
		off, err := tailOffset(f, *opts.TailLines)
		if err != nil {
			return fmt.Errorf("read log %s: %w", path, err)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("read log %s: %w", path, err)
		}
	}
	if opts.LimitBytes != nil {
		w = &limitWriter{w: w, left: *opts.LimitBytes}
	}
	var notify *fileNotifier
	if opts.Follow {
		if notify, err = newFileNotifier(path); err != nil {
			return fmt.Errorf("read log %s: %w", path, err)
		}
		defer notify.close()
	}
	r := logReader{r: bufio.NewReader(f), opts: &opts, w: w}
	complete := false
	for {
		err := r.readAvailable()
		if errors.Is(err, errLimitReached) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read log %s: %w", path, err)
		}
		if !opts.Follow || complete {
			return nil
		}
		if opts.Exited != nil && opts.Exited() {
			complete = true // read once more: the end may have come meanwhile
			continue
		}
		if !notify.wait(ctx, 250*time.Millisecond) {
			return nil
		}
	}
}

var errLimitReached = errors.New("byte limit reached")

// logReader turns CRI entries into `kubectl logs` output.
type logReader struct {
	r       *bufio.Reader
	opts    *LogOptions
	w       io.Writer
	pending []byte // an entry not yet ended by a newline
}

// readAvailable writes every complete entry up to the end of the file.
func (l *logReader) readAvailable() error {
	for {
		chunk, err := l.r.ReadBytes('\n')
		l.pending = append(l.pending, chunk...)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		entry := l.pending
		l.pending = l.pending[:0:0]
		if err := l.writeEntry(entry[:len(entry)-1]); err != nil {
			return err
		}
	}
}

// writeEntry writes one entry's message; malformed entries are skipped.
func (l *logReader) writeEntry(entry []byte) error {
	ts, rest, ok := bytes.Cut(entry, []byte{' '})
	if !ok {
		return nil
	}
	_, rest, ok = bytes.Cut(rest, []byte{' '}) // the stream
	if !ok {
		return nil
	}
	tag, msg, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return nil
	}
	if l.opts.SinceTime != nil && t.Before(*l.opts.SinceTime) {
		return nil
	}
	out := make([]byte, 0, len(msg)+40)
	if l.opts.Timestamps {
		out = t.AppendFormat(out, time.RFC3339Nano)
		out = append(out, ' ')
	}
	out = append(out, msg...)
	if string(tag) != "P" {
		out = append(out, '\n')
	}
	_, err = l.w.Write(out)
	return err
}

// tailOffset is where the last n lines of f begin.
func tailOffset(f *os.File, n int64) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := st.Size()
	if n <= 0 {
		return end, nil
	}
	buf := make([]byte, 32*1024)
	pos := end
	newlines := int64(0)
	for pos > 0 {
		size := min(int64(len(buf)), pos)
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil {
			return 0, err
		}
		for i := size - 1; i >= 0; i-- {
			if buf[i] != '\n' || pos+i == end-1 { // the last line's own newline
				continue
			}
			if newlines++; newlines == n {
				return pos + i + 1, nil
			}
		}
	}
	return 0, nil
}

// limitWriter writes up to left bytes, then fails with errLimitReached.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errLimitReached
	}
	if int64(len(p)) > l.left {
		n, err := l.w.Write(p[:l.left])
		l.left -= int64(n)
		if err == nil {
			err = errLimitReached
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// fileNotifier wakes a follower when a file is written (inotify).
type fileNotifier struct{ fd int }

func newFileNotifier(path string) (*fileNotifier, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify %s: %w", path, err)
	}
	return &fileNotifier{fd: fd}, nil
}

// wait returns when the file may have changed or after at most max; false
// when ctx is done.
func (n *fileNotifier) wait(ctx context.Context, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for {
		if ctx.Err() != nil {
			return false
		}
		step := min(time.Until(deadline), 50*time.Millisecond)
		if step <= 0 {
			return true
		}
		fds := []unix.PollFd{{Fd: int32(n.fd), Events: unix.POLLIN}}
		if k, _ := unix.Poll(fds, int(step.Milliseconds())+1); k > 0 {
			buf := make([]byte, 4096)
			for { // drain the events
				if m, err := unix.Read(n.fd, buf); m <= 0 || err != nil {
					break
				}
			}
			return true
		}
	}
}

func (n *fileNotifier) close() { unix.Close(n.fd) }
