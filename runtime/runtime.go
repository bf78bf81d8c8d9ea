package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	cgmanager "github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
)

// Runtime runs pods' containers. It is safe for concurrent use.
type Runtime struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	pods map[string]*Sandbox
	ctrs map[string]*container

	// bg tracks the background removal of discarded container dirs.
	bg sync.WaitGroup

	// stepHook, when set (by benchmarks), is told the wall time of each
	// step of a container's lifecycle.
	stepHook func(step string, d time.Duration)

	// initFile is the memfd of the small init (nil: none to be had),
	// filled and sealed at the first container start or exec; the
	// containers' inits find it through /proc/<our pid>/fd (initexec.c).
	initOnce sync.Once
	initFile *os.File
}

// step reports the time since t0 to the step hook and returns now.
func (r *Runtime) step(name string, t0 time.Time) time.Time {
	now := time.Now()
	if r.stepHook != nil {
		r.stepHook(name, now.Sub(t0))
	}
	return now
}

// New returns a Runtime keeping its state under cfg.StateDir. Call Recover
// before using it to adopt what an earlier orch process left running.
func New(cfg Config, log *slog.Logger) (*Runtime, error) {
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("runtime: state dir %q must be an absolute path", cfg.StateDir)
	}
	if cfg.LogDir == "" {
		cfg.LogDir = "/var/log/pods"
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/orch"
	}
	if !filepath.IsAbs(cfg.CgroupRoot) {
		return nil, fmt.Errorf("runtime: cgroup root %q must be absolute", cfg.CgroupRoot)
	}
	if cfg.LogMaxBytes == 0 {
		cfg.LogMaxBytes = 10 << 20
	}
	if cfg.LogMaxFiles == 0 {
		cfg.LogMaxFiles = 4
	}
	if cfg.ShmSize == 0 {
		cfg.ShmSize = 64 << 20
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "pods"), filepath.Join(cfg.StateDir, "containers"),
		filepath.Join(cfg.StateDir, "libcontainer"), filepath.Join(cfg.StateDir, "trash"), cfg.LogDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	r := &Runtime{cfg: cfg, log: log, pods: map[string]*Sandbox{}, ctrs: map[string]*container{}}
	r.openInit()
	return r, nil
}

// Close releases what the Runtime holds in this process (the small init's
// memfd). Containers keep running; use no Runtime method after Close.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.initFile == nil {
		return nil
	}
	err := r.initFile.Close()
	r.initFile = nil
	return err
}

func (r *Runtime) lcRoot() string { return filepath.Join(r.cfg.StateDir, "libcontainer") }

func (r *Runtime) ctrDir(id string) string { return filepath.Join(r.cfg.StateDir, "containers", id) }

func (r *Runtime) trashDir() string { return filepath.Join(r.cfg.StateDir, "trash") }

func (r *Runtime) podCgroup(uid string) string {
	return filepath.Join(r.cfg.CgroupRoot, "pod"+uid)
}

// removePodCgroup removes the pod's cgroup (and any container cgroup left
// below it) in every hierarchy.
func (r *Runtime) removePodCgroup(uid string) error {
	return r.removeCgroupPath(r.podCgroup(uid))
}

// removeCgroupPath removes a cgroup and everything below it in every
// hierarchy.
func (r *Runtime) removeCgroupPath(path string) error {
	m, err := cgmanager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return fmt.Errorf("pod cgroup: %w", err)
	}
	if err := m.Destroy(); err != nil {
		return fmt.Errorf("remove pod cgroup: %w", err)
	}
	return nil
}

// validName accepts what is safe as a path element: [A-Za-z0-9][A-Za-z0-9_.-]*,
// at most 253 bytes.
func validName(what, s string) error {
	ok := len(s) > 0 && len(s) <= 253
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		ok = alnum || i > 0 && (c == '_' || c == '.' || c == '-')
	}
	if !ok {
		return fmt.Errorf("invalid %s %q", what, s)
	}
	return nil
}

func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("container id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writeFileAtomic replaces path with b. There is no fsync: runtime state only
// has to survive restarts of orch, not of the machine (after a reboot no
// container runs and the sweep removes what is left).
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Recover adopts what an earlier Runtime on the same state directory left:
// sandboxes and containers (running ones keep running; the exit status of
// those that exited meanwhile was recorded by their monitor). Then it sweeps
// what belongs to nothing: a half-created container or pod, stray mounts,
// cgroups and libcontainer state.
func (r *Runtime) Recover() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	pods, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "pods"))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range pods {
		uid := e.Name()
		b, err := os.ReadFile(filepath.Join(r.podDir(uid), "sandbox.json"))
		var sb Sandbox
		if err == nil {
			err = json.Unmarshal(b, &sb)
		}
		if err != nil {
			r.log.Warn("sweeping half-created sandbox", "uid", uid, "err", err)
			if err := r.cleanupPodDir(uid); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		r.pods[uid] = &sb
	}
	ctrs, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "containers"))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range ctrs {
		id := e.Name()
		c, err := r.loadContainer(id)
		if err == nil && r.pods[c.meta.PodUID] == nil {
			err = fmt.Errorf("its pod %s is gone", c.meta.PodUID)
		}
		if err != nil {
			r.log.Warn("sweeping container", "id", id, "err", err)
			if err := r.destroyContainerFiles(id, nil); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		r.ctrs[id] = c
	}
	// libcontainer state of containers we do not know.
	lcs, err := os.ReadDir(r.lcRoot())
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range lcs {
		if _, ok := r.ctrs[e.Name()]; ok {
			continue
		}
		if err := r.destroyContainerFiles(e.Name(), nil); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("recover: %w", errors.Join(errs...))
	}
	// Container dirs discarded by an earlier process but not yet removed.
	trash, err := os.ReadDir(r.trashDir())
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range trash {
		if err := os.RemoveAll(filepath.Join(r.trashDir(), e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("recover: %w", errors.Join(errs...))
	}
	r.log.Info("runtime recovered", "pods", len(r.pods), "containers", len(r.ctrs))
	return nil
}

// destroyContainerFiles removes what a container may have left: its
// processes and cgroup (through libcontainer), rootfs mount and files. lc may
// be nil. The libcontainer side and the rootfs unmount are independent and
// run concurrently; the container's dir is then moved to the trash dir and
// removed in the background (a crash in between leaves it to Recover).
func (r *Runtime) destroyContainerFiles(id string, lc *libcontainer.Container) error {
	t := time.Now()
	lcDone := make(chan error, 1)
	go func() { lcDone <- r.destroyLibcontainer(id, lc) }()
	var errs []error
	dir := r.ctrDir(id)
	if err := unmountAll(filepath.Join(dir, "rootfs")); err != nil {
		errs = append(errs, err)
	}
	t = r.step("destroy: unmount", t)
	if err := <-lcDone; err != nil {
		errs = append(errs, err)
	}
	t = r.step("destroy: libcontainer", t)
	if len(errs) == 0 {
		if err := r.discard(dir); err != nil {
			errs = append(errs, err)
		}
	}
	r.step("destroy: discard dir", t)
	return errors.Join(errs...)
}

// destroyLibcontainer kills what still runs of a container and removes its
// cgroup and libcontainer state. lc may be nil.
func (r *Runtime) destroyLibcontainer(id string, lc *libcontainer.Container) error {
	var errs []error
	if lc == nil {
		var err error
		lc, err = libcontainer.Load(r.lcRoot(), id)
		if err != nil && !errors.Is(err, libcontainer.ErrNotExist) {
			r.log.Warn("load libcontainer state", "id", id, "err", err)
		}
	}
	if lc != nil {
		// Kill whatever still runs, then Destroy removes the cgroup and
		// the libcontainer state.
		if st, err := lc.Status(); err == nil && st != libcontainer.Stopped {
			_ = lc.Signal(killSignal)
		}
		if err := destroyWithRetry(lc); err != nil {
			errs = append(errs, fmt.Errorf("destroy %s: %w", id, err))
		}
	}
	if err := os.RemoveAll(filepath.Join(r.lcRoot(), id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// discard moves dir into the trash dir (one rename) and removes it there in
// the background; if it cannot be moved it is removed in place.
func (r *Runtime) discard(dir string) error {
	trashed := filepath.Join(r.trashDir(), filepath.Base(dir))
	err := os.Rename(dir, trashed)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, serr := os.Lstat(dir); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return os.RemoveAll(dir)
	case err != nil:
		// E.g. a left-over of the same name in the trash: remove in place.
		return os.RemoveAll(dir)
	}
	r.bg.Go(func() {
		defer r.step("destroy: background removal", time.Now())
		if err := os.RemoveAll(trashed); err != nil {
			r.log.Warn("remove discarded container dir", "dir", trashed, "err", err)
		}
	})
	return nil
}

// waitBackground waits for the background removals started so far.
func (r *Runtime) waitBackground() { r.bg.Wait() }
