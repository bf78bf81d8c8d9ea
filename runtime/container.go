package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cgmanager "github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

const killSignal = unix.SIGKILL

// containerMeta is a container's persisted record (meta.json).
type containerMeta struct {
	ID           string      `json:"id"`
	PodUID       string      `json:"podUID"`
	PodNamespace string      `json:"podNamespace"`
	PodName      string      `json:"podName"`
	Name         string      `json:"name"`
	Attempt      int         `json:"attempt"`
	LogPath      string      `json:"logPath"`
	Proc         processSpec `json:"process"`
	CreatedAt    time.Time   `json:"createdAt"`
	StartedAt    time.Time   `json:"startedAt,omitzero"`
	StartError   string      `json:"startError,omitempty"`
	FailedAt     time.Time   `json:"failedAt,omitzero"`
	InitPid      int         `json:"initPid,omitempty"`
	MonitorPid   int         `json:"monitorPid,omitempty"`
}

type container struct {
	mu   sync.Mutex // serializes lifecycle operations
	meta containerMeta
	lc   *libcontainer.Container
	// monDone is closed when the monitor exits, after it recorded the exit
	// status; nil for containers adopted from an earlier orch process.
	monDone chan struct{}
}

func (r *Runtime) saveMeta(c *container) error {
	b, err := json.Marshal(&c.meta)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(r.ctrDir(c.meta.ID), "meta.json"), b)
}

func (r *Runtime) loadContainer(id string) (*container, error) {
	b, err := os.ReadFile(filepath.Join(r.ctrDir(id), "meta.json"))
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	c := &container{}
	if err := json.Unmarshal(b, &c.meta); err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	lc, err := libcontainer.Load(r.lcRoot(), id)
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	c.lc = lc
	return c, nil
}

func (r *Runtime) get(id string) (*container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.ctrs[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
	}
	return c, nil
}

// CreateContainer prepares a container of the pod: its overlayfs rootfs over
// cfg.Lowerdirs, the resolved process (command, env, user, working dir) and
// its libcontainer config. It returns the container's ID.
func (r *Runtime) CreateContainer(podUID string, cfg ContainerConfig) (_ string, retErr error) {
	t := time.Now()
	sb, err := r.Sandbox(podUID)
	if err != nil {
		return "", err
	}
	if err := validName("container name", cfg.Name); err != nil {
		return "", err
	}
	if len(cfg.Lowerdirs) == 0 {
		return "", fmt.Errorf("create container %s: no image layers (lowerdirs)", cfg.Name)
	}
	for _, d := range cfg.Lowerdirs {
		if fi, err := os.Stat(d); err != nil {
			return "", fmt.Errorf("create container %s: image layer: %w", cfg.Name, err)
		} else if !fi.IsDir() {
			return "", fmt.Errorf("create container %s: image layer %s is not a directory", cfg.Name, d)
		}
		if strings.ContainsAny(d, ":,") {
			return "", fmt.Errorf("create container %s: image layer path %q contains ':' or ','", cfg.Name, d)
		}
	}
	argv, err := resolveCommand(&cfg)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	id, err := newID()
	if err != nil {
		return "", err
	}
	dir := r.ctrDir(id)
	defer func() {
		if retErr != nil {
			if err := r.destroyContainerFiles(id, nil); err != nil {
				r.log.Warn("clean up failed container", "id", id, "err", err)
			}
		}
	}()
	t = r.step("create: validate", t)
	rootfs := filepath.Join(dir, "rootfs")
	// (Plain mkdirs: the containers dir exists and the ID is new.)
	for _, d := range []string{dir, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
		}
	}
	lower := slices.Clone(cfg.Lowerdirs)
	slices.Reverse(lower) // overlayfs lists the top-most layer first
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + filepath.Join(dir, "upper") + ",workdir=" + filepath.Join(dir, "work")
	t = r.step("create: mkdirs", t)
	if err := mountOverlay(rootfs, opts); err != nil {
		return "", fmt.Errorf("create container %s: mount overlay rootfs: %w", cfg.Name, err)
	}
	t = r.step("create: overlay mount", t)
	u, err := resolveUser(rootfs, cfg.Image.User, cfg.Security)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	env := mergeEnv(cfg.Image.Env, cfg.Env)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "HOME=") }) {
		env = append(env, "HOME="+u.Home)
	}
	cwd := cfg.WorkingDir
	if cwd == "" {
		cwd = cfg.Image.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return "", fmt.Errorf("create container %s: working dir %q is not absolute", cfg.Name, cwd)
	}
	proc := processSpec{Args: argv, Env: env, Cwd: cwd, UID: u.Uid, GID: u.Gid, Groups: u.Sgids, StopSignal: cfg.Image.StopSignal,
		Stdin: cfg.Stdin, StdinOnce: cfg.Stdin && cfg.StdinOnce, TTY: cfg.TTY}
	if _, err := stopSignal(proc.StopSignal); err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	lcCfg, err := buildConfig(&cfg, containerSpec{
		ID: id, Rootfs: rootfs, Sandbox: sb, Proc: proc,
		CgroupPath: filepath.Join(r.podCgroup(podUID), id),
	})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	t = r.step("create: user+config", t)
	lc, err := libcontainer.Create(r.lcRoot(), id, lcCfg)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	t = r.step("create: libcontainer.Create", t)
	c := &container{lc: lc, meta: containerMeta{
		ID: id, PodUID: podUID, PodNamespace: sb.Config.Namespace, PodName: sb.Config.Name,
		Name: cfg.Name, Attempt: cfg.Attempt, Proc: proc, CreatedAt: time.Now(),
		LogPath: filepath.Join(r.podLogDir(sb), cfg.Name, strconv.Itoa(cfg.Attempt)+".log"),
	}}
	if err := r.saveMeta(c); err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	r.step("create: save meta", t)
	r.mu.Lock()
	r.ctrs[id] = c
	r.mu.Unlock()
	r.log.Info("container created", "pod", podUID, "container", cfg.Name, "id", id)
	return id, nil
}

// mountOverlay mounts a container's overlayfs rootfs. It is volatile: the
// upper dir is never synced (an unmount does not flush it, nor does a sync
// in the container), as a container's writable layer does not outlive a
// crash of the machine (after a reboot Recover finds the container gone and
// removes its dirs). Kernels without the option get a plain mount.
func mountOverlay(rootfs, opts string) error {
	err := unix.Mount("overlay", rootfs, "overlay", 0, opts+",volatile")
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mount("overlay", rootfs, "overlay", 0, opts)
	}
	return err
}

func (r *Runtime) podLogDir(sb *Sandbox) string {
	return filepath.Join(r.cfg.LogDir, sb.Config.Namespace+"_"+sb.Config.Name+"_"+sb.Config.UID)
}

func stopSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown stop signal %q", s)
}

// StartContainer starts a created container's process. Its stdout and
// stderr go to a monitor process that writes the CRI log and records the
// exit status; both outlive orch. A process that cannot be started (e.g. a
// missing binary) leaves the container exited with reason StartError.
func (r *Runtime) StartContainer(id string) error {
	c, err := r.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now()
	if !c.meta.StartedAt.IsZero() || c.meta.StartError != "" {
		return fmt.Errorf("start container %s: already started", id)
	}
	if err := os.MkdirAll(filepath.Dir(c.meta.LogPath), 0o755); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	fail := func(err error) error {
		c.meta.StartError = err.Error()
		c.meta.FailedAt = time.Now()
		if serr := r.saveMeta(c); serr != nil {
			r.log.Warn("save container state", "id", id, "err", serr)
		}
		return fmt.Errorf("start container %s: %w", id, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("start container %s: %w", id, err)
	}
	defer outR.Close()
	defer errR.Close()
	// The monitor starts while libcontainer starts the container; it gets
	// the init's pid and pidfd over ctl once there is one.
	ctl, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		outW.Close()
		errW.Close()
		return fmt.Errorf("start container %s: monitor socket: %w", id, err)
	}
	ctlParent, ctlChild := os.NewFile(uintptr(ctl[0]), "monitor-ctl"), os.NewFile(uintptr(ctl[1]), "monitor-ctl")
	defer ctlParent.Close()
	p := c.meta.Proc
	proc := &libcontainer.Process{
		Args: p.Args, Env: p.Env, Cwd: p.Cwd, UID: p.UID, GID: p.GID, AdditionalGroups: p.Groups,
		Stdout: outW, Stderr: errW, Init: true,
	}
	sio, err := r.prepareStdio(id, p, proc)
	if err != nil {
		outW.Close()
		errW.Close()
		ctlChild.Close()
		return fmt.Errorf("start container %s: %w", id, err)
	}
	defer sio.close()
	mon := exec.Command("/proc/self/exe", c.meta.LogPath, r.exitPath(id),
		strconv.FormatInt(r.cfg.LogMaxBytes, 10), strconv.Itoa(r.cfg.LogMaxFiles), sio.flags)
	mon.Args[0] = "orch-monitor"
	mon.Dir = "/"
	mon.Env = []string{"_ORCH_MONITOR=1"}
	mon.ExtraFiles = []*os.File{outR, errR, ctlChild, sio.stdinW, sio.listener}
	mon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	monStarted := make(chan error, 1)
	go func() { monStarted <- mon.Start() }()
	t = r.step("start: log dir+pipes", t)
	r.ensureInit()
	err = c.lc.Run(proc)
	t = r.step("start: libcontainer.Run", t)
	outW.Close()
	errW.Close()
	sio.closeChildEnds()
	monErr := <-monStarted
	ctlChild.Close()
	// Reap the monitor while this process lives; after a restart its
	// parent is gone and it still records the exit status. (A monitor
	// whose container did not start exits when ctl closes.)
	monDone := make(chan struct{})
	if monErr == nil {
		runDone := t
		go func() {
			_ = mon.Wait()
			r.step("exit: monitor done after start", runDone)
			close(monDone)
		}()
	}
	t = r.step("start: monitor", t)
	if err != nil {
		return fail(err)
	}
	started := time.Now()
	kill := func(err error) error {
		_ = c.lc.Signal(killSignal)
		_, _ = proc.Wait()
		return fail(err)
	}
	if monErr != nil {
		return kill(fmt.Errorf("start monitor: %w", monErr))
	}
	pid, err := proc.Pid()
	if err != nil {
		return kill(err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return kill(fmt.Errorf("pidfd: %w", err))
	}
	// Reap the init while this process lives (its exit status is the
	// monitor's to record); only now, as the pidfd must be opened first.
	go func() {
		_, _ = proc.Wait()
		r.step("exit: init reaped after start", started)
	}()
	fds := []int{pidfd}
	if p.TTY {
		master, err := sio.recvMaster()
		if err != nil {
			unix.Close(pidfd)
			return kill(fmt.Errorf("terminal: %w", err))
		}
		defer master.Close()
		fds = append(fds, int(master.Fd()))
	}
	err = unix.Sendmsg(int(ctlParent.Fd()), []byte(strconv.Itoa(pid)), unix.UnixRights(fds...), nil, 0)
	unix.Close(pidfd)
	if err != nil {
		_ = c.lc.Signal(killSignal)
		return fail(fmt.Errorf("hand the init to its monitor: %w", err))
	}
	c.monDone = monDone
	t = r.step("start: pidfd", t)
	c.meta.StartedAt = started
	c.meta.InitPid = pid
	c.meta.MonitorPid = mon.Process.Pid
	if err := r.saveMeta(c); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	r.step("start: save meta", t)
	r.log.Info("container started", "id", id, "container", c.meta.Name, "pid", pid)
	return nil
}

func (r *Runtime) exitPath(id string) string { return filepath.Join(r.ctrDir(id), "exit") }

// readExit returns the recorded wait status and finish time; ok is false
// while the container has not exited.
func (r *Runtime) readExit(id string) (status int, finished time.Time, ok bool, err error) {
	b, err := os.ReadFile(r.exitPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return 0, time.Time{}, false, nil
	}
	if err != nil {
		return 0, time.Time{}, false, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, time.Time{}, false, fmt.Errorf("malformed exit file %q", b)
	}
	status, err1 := strconv.Atoi(f[0])
	ns, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, time.Time{}, false, fmt.Errorf("malformed exit file: %w", err)
	}
	return status, time.Unix(0, ns), true, nil
}

// ContainerStatus reports a container's state, and for an exited one its
// exit code and reason (Completed, Error, OOMKilled, StartError).
func (r *Runtime) ContainerStatus(id string) (ContainerStatus, error) {
	c, err := r.get(id)
	if err != nil {
		return ContainerStatus{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return r.status(c)
}

func (r *Runtime) status(c *container) (ContainerStatus, error) {
	m := &c.meta
	st := ContainerStatus{
		ID: m.ID, PodUID: m.PodUID, Name: m.Name, Attempt: m.Attempt, CreatedAt: m.CreatedAt,
		StartedAt: m.StartedAt, LogPath: m.LogPath, State: StateCreated,
	}
	if m.StartError != "" {
		st.State, st.ExitCode, st.Reason, st.Message, st.FinishedAt = StateExited, 128, ReasonStartError, m.StartError, m.FailedAt
		return st, nil
	}
	if m.StartedAt.IsZero() {
		return st, nil
	}
	ws, finished, ok, err := r.readExit(m.ID)
	if err != nil {
		return st, fmt.Errorf("container %s status: %w", m.ID, err)
	}
	if !ok {
		st.State, st.Pid = StateRunning, m.InitPid
		lcst, lcErr := c.lc.Status()
		if lcErr != nil || lcst != libcontainer.Stopped || processAlive(m.MonitorPid) {
			return st, nil
		}
		// The monitor may have recorded the exit and gone since the read.
		ws, finished, ok, err = r.readExit(m.ID)
		if err != nil {
			return st, fmt.Errorf("container %s status: %w", m.ID, err)
		}
		if !ok {
			// Neither the init nor its monitor is there and nothing was
			// recorded (e.g. the monitor was killed).
			st.State, st.Pid, st.ExitCode, st.Reason = StateExited, 0, 255, ReasonUnknown
			st.Message = "the container's monitor exited without recording its exit status"
			return st, nil
		}
		st.Pid = 0
	}
	st.State, st.FinishedAt = StateExited, finished
	if ws < 0 {
		st.ExitCode, st.Reason = 255, ReasonUnknown
		st.Message = "the exit status of the container's init could not be read"
		return st, nil
	}
	w := unix.WaitStatus(ws)
	switch {
	case w.Exited():
		st.ExitCode = w.ExitStatus()
	case w.Signaled():
		st.ExitCode = 128 + int(w.Signal())
	}
	st.Reason = ReasonError
	if st.ExitCode == 0 {
		st.Reason = ReasonCompleted
	}
	if st.ExitCode != 0 && r.oomKilled(c) {
		st.Reason = ReasonOOMKilled
	}
	return st, nil
}

// oomKilled reports whether the kernel OOM-killed a process of the
// container's cgroup.
func (r *Runtime) oomKilled(c *container) bool {
	cfg := c.lc.Config()
	m, err := cgmanager.New(cfg.Cgroups)
	if err != nil {
		return false
	}
	n, err := m.OOMKillCount()
	return err == nil && n > 0
}

func processAlive(pid int) bool {
	return pid > 0 && unix.Kill(pid, 0) == nil
}

// ListContainers returns the status of every container, in creation order.
func (r *Runtime) ListContainers() []ContainerStatus {
	r.mu.Lock()
	ctrs := make([]*container, 0, len(r.ctrs))
	for _, c := range r.ctrs {
		ctrs = append(ctrs, c)
	}
	r.mu.Unlock()
	out := make([]ContainerStatus, 0, len(ctrs))
	for _, c := range ctrs {
		c.mu.Lock()
		st, err := r.status(c)
		c.mu.Unlock()
		if err != nil {
			r.log.Warn("container status", "id", c.meta.ID, "err", err)
			st.State = StateUnknown
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ContainerStatus) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// waitExited polls until the container's exit is recorded.
func (r *Runtime) waitExited(ctx context.Context, c *container, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	monDone := c.monDone
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		st, err := r.status(c)
		if err == nil && st.State != StateRunning {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-monDone:
			monDone = nil
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}

// Wait blocks until the container has exited (or ctx ends) and returns its
// status. It does not poll: the container's monitor exits right after it
// records the exit, and Wait waits for that (a container started by this
// process) or for a pidfd of the monitor (one adopted from an earlier
// orch) to say so; it only looks again every few seconds in case the
// monitor went without recording anything.
func (r *Runtime) Wait(ctx context.Context, id string) (ContainerStatus, error) {
	c, err := r.get(id)
	if err != nil {
		return ContainerStatus{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var exited <-chan struct{}
	watching := false
	for delay := time.Millisecond; ; delay = min(delay*2, 5*time.Second) {
		if !watching {
			c.mu.Lock()
			monDone, monPid := c.monDone, c.meta.MonitorPid
			c.mu.Unlock()
			if monDone != nil {
				exited, watching = monDone, true
			} else if monPid > 0 {
				// Opened before the status is read: an exit in between is seen.
				if ch := processExited(ctx, monPid); ch != nil {
					exited, watching = ch, true
				}
			}
		}
		c.mu.Lock()
		st, err := r.status(c)
		c.mu.Unlock()
		if err != nil || (st.State != StateRunning && st.State != StateCreated) {
			return st, err
		}
		if !watching {
			delay = min(delay, 50*time.Millisecond) // nothing will tell: poll
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-exited:
			exited = nil
			delay = time.Millisecond
		case <-time.After(delay):
		}
	}
}

// processExited returns a channel closed when the process pid (not a child
// of ours) exits, or nil when that cannot be watched; it stops watching
// when ctx ends.
func processExited(ctx context.Context, pid int) <-chan struct{} {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	go func() {
		defer stop()
		defer f.Close()
		// A pidfd turns readable when the process exits; the first call
		// returns false to wait for that.
		waited := false
		err := rc.Read(func(uintptr) bool {
			if waited {
				return true
			}
			waited = true
			return false
		})
		if err == nil {
			close(done)
		}
	}()
	return done
}

// StopContainer sends the container its stop signal (the image's StopSignal
// or SIGTERM), waits up to grace for it to exit, then kills it.
func (r *Runtime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	c, err := r.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return r.stop(ctx, c, grace)
}

func (r *Runtime) stop(ctx context.Context, c *container, grace time.Duration) error {
	st, err := r.status(c)
	if err != nil {
		return err
	}
	if st.State != StateRunning {
		return nil
	}
	sig, err := stopSignal(c.meta.Proc.StopSignal)
	if err != nil {
		return err
	}
	if grace > 0 {
		if err := c.lc.Signal(sig); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			return fmt.Errorf("stop container %s: %w", c.meta.ID, err)
		}
		if r.waitExited(ctx, c, grace) {
			return nil
		}
	}
	if err := c.lc.Signal(killSignal); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("kill container %s: %w", c.meta.ID, err)
	}
	if !r.waitExited(context.Background(), c, 10*time.Second) {
		return fmt.Errorf("kill container %s: still running 10s after SIGKILL", c.meta.ID)
	}
	return nil
}

// RemoveContainer kills the container if it still runs and removes its
// cgroup, rootfs mount and state. Its log file stays until its pod is
// removed.
func (r *Runtime) RemoveContainer(id string) error {
	c, err := r.get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now()
	if err := r.stop(context.Background(), c, 0); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	r.step("remove: stop", t)
	if err := r.destroyContainerFiles(id, c.lc); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	r.mu.Lock()
	delete(r.ctrs, id)
	r.mu.Unlock()
	r.log.Info("container removed", "id", id, "container", c.meta.Name)
	return nil
}

// destroyWithRetry destroys a stopped container; the cgroup may stay busy
// for a moment while the last processes exit.
func destroyWithRetry(lc *libcontainer.Container) error {
	var err error
	for range 50 {
		if err = lc.Destroy(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}
