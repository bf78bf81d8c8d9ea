package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// LogOptions select what Logs returns, as `kubectl logs` asks.
type LogOptions struct {
	// Follow keeps streaming new lines until the container has exited (and
	// its log is fully read) or ctx ends.
	Follow bool
	// Tail returns only the last Tail lines; < 0 means all.
	Tail int64
	// Since drops lines logged before it.
	Since time.Time
	// Timestamps prefixes every line with its RFC3339Nano timestamp.
	Timestamps bool
}

// LogLine is one parsed CRI log line.
type LogLine struct {
	Time    time.Time
	Stream  string // "stdout" or "stderr"
	Partial bool
	Content []byte
}

// ParseLogLine parses "<RFC3339Nano> <stream> <P|F> <content>".
func ParseLogLine(b []byte) (LogLine, error) {
	var l LogLine
	ts, rest, ok := bytes.Cut(b, []byte{' '})
	if !ok {
		return l, fmt.Errorf("malformed log line %q", b)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return l, fmt.Errorf("malformed log line timestamp: %w", err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (string(stream) != "stdout" && string(stream) != "stderr") {
		return l, fmt.Errorf("malformed log line stream %q", stream)
	}
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (string(tag) != "P" && string(tag) != "F") {
		return l, fmt.Errorf("malformed log line tag %q", tag)
	}
	return LogLine{Time: t, Stream: string(stream), Partial: string(tag) == "P", Content: content}, nil
}

// Logs writes the container's log (its current attempt) to w in the form
// `kubectl logs` shows: the content of each line, with its timestamp when
// asked, oldest first, rotated files included.
func (r *Runtime) Logs(ctx context.Context, id string, opts LogOptions, w io.Writer) error {
	c, err := r.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	path := c.meta.LogPath
	c.mu.Unlock()
	exited := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		st, err := r.status(c)
		return err != nil || st.State == StateExited || st.State == StateUnknown
	}
	return ReadLog(ctx, path, r.cfg.LogMaxFiles, opts, w, exited)
}

// ReadLog reads a CRI log file and its rotated predecessors (path.N, …,
// path.1). When following, done reports that no more lines will come.
func ReadLog(ctx context.Context, path string, maxFiles int, opts LogOptions, w io.Writer, done func() bool) error {
	files := []string{}
	for i := maxFiles; i >= 1; i-- {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	files = append(files, path)
	emit := func(line []byte) error {
		l, err := ParseLogLine(line)
		if err != nil {
			return nil // skip a torn or foreign line
		}
		if !opts.Since.IsZero() && l.Time.Before(opts.Since) {
			return nil
		}
		var out []byte
		if opts.Timestamps {
			out = append(out, l.Time.Format(time.RFC3339Nano)...)
			out = append(out, ' ')
		}
		out = append(out, l.Content...)
		if !l.Partial {
			out = append(out, '\n')
		}
		_, err = w.Write(out)
		return err
	}
	if opts.Tail >= 0 {
		lines, off, err := tailLines(files, opts.Tail)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if err := emit(l); err != nil {
				return err
			}
		}
		if !opts.Follow {
			return nil
		}
		return follow(ctx, path, off, emit, done)
	}
	for _, f := range files[:len(files)-1] {
		if _, err := readAll(f, emit); err != nil {
			return err
		}
	}
	if !opts.Follow {
		_, err := readAll(path, emit)
		return err
	}
	return follow(ctx, path, 0, emit, done)
}

// readAll emits every complete line of path and returns the offset just
// past the last one (where a follower resumes).
func readAll(path string, emit func([]byte) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read log: %w", err)
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	var off int64
	for {
		line, err := rd.ReadBytes('\n')
		if err == io.EOF {
			return off, nil // a torn last line is left to the follower
		}
		if err != nil {
			return off, fmt.Errorf("read log: %w", err)
		}
		off += int64(len(line))
		if err := emit(line[:len(line)-1]); err != nil {
			return off, err
		}
	}
}

// tailLines returns the last n lines across files (oldest first) and the
// offset in the last file where they end.
func tailLines(files []string, n int64) ([][]byte, int64, error) {
	ring := make([][]byte, 0, min(n, 4096))
	var start int
	var off int64
	for _, p := range files {
		var err error
		off, err = readAll(p, func(b []byte) error {
			if n == 0 {
				return nil
			}
			line := bytes.Clone(b)
			if int64(len(ring)) < n {
				ring = append(ring, line)
				return nil
			}
			ring[start] = line
			start = (start + 1) % len(ring)
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
	}
	return append(ring[start:], ring[:start]...), off, nil
}

// follow streams path from offset, reopening it when it is rotated, until
// done() reports no more writers and the file is fully read, or ctx ends.
func follow(ctx context.Context, path string, offset int64, emit func([]byte) error, done func() bool) error {
	var f *os.File
	var rd *bufio.Reader
	var pending []byte
	open := func(at int64) error {
		nf, err := os.Open(path)
		if err != nil {
			return err
		}
		if at > 0 {
			if _, err := nf.Seek(at, io.SeekStart); err != nil {
				nf.Close()
				return err
			}
		}
		if f != nil {
			f.Close()
		}
		f, rd, pending = nf, bufio.NewReaderSize(nf, 64<<10), nil
		return nil
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for delay := 5 * time.Millisecond; ; {
		if f == nil {
			if err := open(offset); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("follow log: %w", err)
			}
		}
		progressed := false
		finished := done() // sampled before reading: what follows is complete
		for f != nil {
			b, err := rd.ReadBytes('\n')
			pending = append(pending, b...)
			if err != nil {
				break
			}
			progressed = true
			if err := emit(bytes.TrimSuffix(pending, []byte{'\n'})); err != nil {
				return err
			}
			pending = pending[:0]
		}
		// Rotated: the path now names a new file; finish the old one first.
		if f != nil {
			if cur, err := os.Stat(path); err == nil {
				if old, err := f.Stat(); err == nil && !os.SameFile(cur, old) {
					if err := open(0); err != nil {
						return fmt.Errorf("follow log: %w", err)
					}
					continue
				}
			}
		}
		if finished && !progressed {
			return nil
		}
		if progressed {
			delay = 5 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}
