package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// TermSize is a terminal size.
type TermSize struct{ Width, Height uint16 }

// ExecOptions describes a process to run in a running container.
type ExecOptions struct {
	Cmd []string
	// Env is added to the container's environment.
	Env []string
	// TTY gives the process a terminal; Stderr is then unused and Resize
	// changes its size.
	TTY    bool
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Resize <-chan TermSize
}

// Exec runs a process in a running container, with the container's user,
// environment and working dir, and returns its exit code. A process that
// cannot be started (e.g. a missing binary) is an error.
func (r *Runtime) Exec(ctx context.Context, id string, opts ExecOptions) (int, error) {
	if len(opts.Cmd) == 0 {
		return -1, fmt.Errorf("exec in %s: %w", id, ErrNoCommand)
	}
	c, err := r.get(id)
	if err != nil {
		return -1, err
	}
	c.mu.Lock()
	st, err := r.status(c)
	c.mu.Unlock()
	if err != nil {
		return -1, err
	}
	if st.State != StateRunning {
		return -1, fmt.Errorf("exec in %s: container is not running", id)
	}
	p := c.meta.Proc
	proc := &libcontainer.Process{
		Args: opts.Cmd, Env: append(append([]string(nil), p.Env...), opts.Env...), Cwd: p.Cwd,
		UID: p.UID, GID: p.GID, AdditionalGroups: p.Groups,
	}
	var wg sync.WaitGroup
	if opts.TTY {
		return r.execTTY(ctx, c, proc, opts)
	}
	// Pipes rather than the caller's writers, so that Exec returns once the
	// process has exited and its output is copied, not when every reader
	// returns.
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	pipeOut := func(w io.Writer) (*os.File, error) {
		if w == nil {
			return nil, nil
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		closers = append(closers, pr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(w, pr)
		}()
		return pw, nil
	}
	outW, err := pipeOut(opts.Stdout)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	errW, err := pipeOut(opts.Stderr)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	if outW != nil {
		proc.Stdout = outW
	}
	if errW != nil {
		proc.Stderr = errW
	}
	if opts.Stdin != nil {
		pr, pw, err := os.Pipe()
		if err != nil {
			return -1, fmt.Errorf("exec in %s: %w", id, err)
		}
		proc.Stdin = pr
		closers = append(closers, pr)
		go func() {
			_, _ = io.Copy(pw, opts.Stdin)
			pw.Close()
		}()
	}
	r.ensureInit()
	err = c.lc.Run(proc)
	if outW != nil {
		outW.Close()
	}
	if errW != nil {
		errW.Close()
	}
	if err != nil {
		wg.Wait()
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	code, err := waitProcess(ctx, proc)
	wg.Wait()
	return code, err
}

// waitProcess waits for an exec'd process, killing it if ctx ends.
func waitProcess(ctx context.Context, proc *libcontainer.Process) (int, error) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = proc.Signal(unix.SIGKILL)
		case <-done:
		}
	}()
	ps, err := proc.Wait()
	if ps == nil {
		return -1, fmt.Errorf("wait exec process: %w", err)
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return -1, fmt.Errorf("wait exec process: no wait status")
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), ctx.Err()
	}
	return ws.ExitStatus(), ctx.Err()
}

func (r *Runtime) execTTY(ctx context.Context, c *container, proc *libcontainer.Process, opts ExecOptions) (int, error) {
	id := c.meta.ID
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: console socket: %w", id, err)
	}
	parent := os.NewFile(uintptr(pair[0]), "console-parent")
	child := os.NewFile(uintptr(pair[1]), "console-child")
	defer parent.Close()
	proc.ConsoleSocket = child
	proc.Env = append(proc.Env, "TERM=xterm")
	r.ensureInit()
	err = c.lc.Run(proc)
	child.Close()
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	master, err := recvFd(parent)
	if err != nil {
		_ = proc.Signal(unix.SIGKILL)
		_, _ = proc.Wait()
		return -1, fmt.Errorf("exec in %s: receive pty: %w", id, err)
	}
	cons, err := console.ConsoleFromFile(master)
	if err != nil {
		master.Close()
		_ = proc.Signal(unix.SIGKILL)
		_, _ = proc.Wait()
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	defer cons.Close()
	stopResize := make(chan struct{})
	var resizing sync.WaitGroup
	defer func() {
		close(stopResize)
		resizing.Wait() // before cons is closed
	}()
	if opts.Resize != nil {
		resizing.Add(1)
		go func() {
			defer resizing.Done()
			for {
				select {
				case sz, ok := <-opts.Resize:
					if !ok {
						return
					}
					_ = cons.Resize(console.WinSize{Width: sz.Width, Height: sz.Height})
				case <-stopResize:
					return
				}
			}
		}()
	}
	if opts.Stdin != nil {
		go func() { _, _ = io.Copy(cons, opts.Stdin) }()
	}
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		if opts.Stdout != nil {
			_, _ = io.Copy(opts.Stdout, cons)
		} else {
			_, _ = io.Copy(io.Discard, cons)
		}
	}()
	code, werr := waitProcess(ctx, proc)
	// The output ends with EIO once the last holder of the pty's slave
	// side is gone.
	<-outDone
	return code, werr
}

// recvFd receives one file descriptor sent with SCM_RIGHTS.
func recvFd(sock *os.File) (*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, errors.New("expected one control message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return nil, err
	}
	if len(fds) != 1 {
		return nil, errors.New("expected one file descriptor")
	}
	return os.NewFile(uintptr(fds[0]), string(buf[:n])), nil
}
