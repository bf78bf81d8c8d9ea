package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// The attach socket of a container, served by its monitor (see monitor.c
// for the protocol).
func (r *Runtime) attachPath(id string) string { return filepath.Join(r.ctrDir(id), "attach") }

// Attach message tags.
const (
	tagStdout = 'o'
	tagStderr = 'e'
	tagStdin  = 'i'
	tagClose  = 'c'
	tagResize = 'r'
)

// stdio is what StartContainer sets up for a container's stdin and TTY and
// hands to its monitor.
type stdio struct {
	flags    string
	stdinR   *os.File // the container's end of its stdin pipe
	stdinW   *os.File // the monitor's
	conP     *os.File // receives the TTY master from libcontainer
	conC     *os.File // libcontainer's end
	listener *os.File // the attach socket, listening
}

// prepareStdio creates the attach socket and, as the container asks, its
// stdin pipe or the socket libcontainer sends the TTY master over.
func (r *Runtime) prepareStdio(id string, p processSpec, proc *libcontainer.Process) (_ *stdio, retErr error) {
	s := &stdio{flags: "-"}
	defer func() {
		if retErr != nil {
			s.close()
		}
	}()
	if p.TTY {
		s.flags += "t"
	}
	if p.Stdin {
		s.flags += "i"
	}
	if p.StdinOnce {
		s.flags += "o"
	}
	switch {
	case p.TTY:
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		s.conP, s.conC = os.NewFile(uintptr(fds[0]), "console"), os.NewFile(uintptr(fds[1]), "console")
		proc.ConsoleSocket = s.conC
		proc.Stdout, proc.Stderr = nil, nil
	case p.Stdin:
		var err error
		if s.stdinR, s.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		proc.Stdin = s.stdinR
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("attach socket: %w", err)
	}
	s.listener = os.NewFile(uintptr(fd), "attach")
	err = viaDir(r.attachPath(id), func(path string) error {
		_ = os.Remove(path)
		return unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	})
	if err == nil {
		err = unix.Listen(fd, 8)
	}
	if err != nil {
		return nil, fmt.Errorf("attach socket: %w", err)
	}
	return s, nil
}

// viaDir calls f with a short name of path (through an O_PATH fd of its
// dir), as a unix socket's path is limited to 107 bytes.
func viaDir(path string, f func(string) error) error {
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	return f("/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + filepath.Base(path))
}

// closeChildEnds closes what only the container needed, once it started.
func (s *stdio) closeChildEnds() {
	for _, f := range []*os.File{s.stdinR, s.conC} {
		if f != nil {
			f.Close()
		}
	}
	s.stdinR, s.conC = nil, nil
}

func (s *stdio) close() {
	s.closeChildEnds()
	for _, f := range []*os.File{s.stdinW, s.conP, s.listener} {
		if f != nil {
			f.Close()
		}
	}
}

// recvMaster receives the TTY master libcontainer sent.
func (s *stdio) recvMaster() (*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(4))
	buf := make([]byte, 4096)
	_, oobn, _, _, err := unix.Recvmsg(int(s.conP.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("receive terminal master: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive terminal master: no fd (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("receive terminal master: %d fds (%v)", len(fds), err)
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

// ErrNotRunning is returned by Attach for a container that does not run.
var ErrNotRunning = errors.New("container is not running")

// Attach connects streams to a running container's main process until it
// exits (then it returns nil) or ctx ends: its output from now on goes to
// Stdout and Stderr (one stream on Stdout for a TTY), Stdin goes to the
// process if it was created with Stdin, and Resize resizes its TTY (a size
// already in the channel is applied before any input is sent).
func (r *Runtime) Attach(ctx context.Context, id string, s AttachStreams) error {
	c, err := r.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	st, err := r.status(c)
	p := c.meta.Proc
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if st.State != StateRunning {
		return fmt.Errorf("attach %s: %w", id, ErrNotRunning)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("attach %s: %w", id, err)
	}
	f := os.NewFile(uintptr(fd), "attach")
	defer f.Close()
	if err := viaDir(r.attachPath(id), func(path string) error {
		return unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	}); err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("attach %s: %w (no attach socket: %w)", id, ErrNotRunning, err)
		}
		return fmt.Errorf("attach %s: %w", id, err)
	}
	nc, err := net.FileConn(f)
	if err != nil {
		return fmt.Errorf("attach %s: %w", id, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	send := func(tag byte, b []byte) error {
		_, err := conn.Write(append([]byte{tag}, b...))
		return err
	}
	resize := func(sz TermSize) error {
		b := make([]byte, 4)
		binary.NativeEndian.PutUint16(b, sz.Width)
		binary.NativeEndian.PutUint16(b[2:], sz.Height)
		return send(tagResize, b)
	}
	if s.Resize != nil {
		select {
		case sz := <-s.Resize:
			if err := resize(sz); err != nil {
				return fmt.Errorf("attach %s: %w", id, err)
			}
		default:
		}
		go func() {
			for {
				select {
				case sz, ok := <-s.Resize:
					if !ok || resize(sz) != nil {
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	if s.Stdin != nil && p.Stdin {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Stdin.Read(buf)
				if n > 0 && send(tagStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					_ = send(tagClose, nil)
					return
				}
			}
		}()
	}
	buf := make([]byte, 1+64<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			var w io.Writer
			switch buf[0] {
			case tagStdout:
				w = s.Stdout
			case tagStderr:
				w = s.Stderr
			}
			if w != nil {
				if _, werr := w.Write(buf[1:n]); werr != nil {
					return fmt.Errorf("attach %s: %w", id, werr)
				}
			}
		}
		if err != nil || n == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("attach %s: %w", id, err)
		}
	}
}
