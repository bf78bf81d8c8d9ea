package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNotFound is returned for an unknown pod or container.
var ErrNotFound = errors.New("not found")

func (r *Runtime) podDir(uid string) string { return filepath.Join(r.cfg.StateDir, "pods", uid) }

// CreateSandbox creates a pod's namespaces (network, IPC, UTS with the pod's
// hostname), pins them under <StateDir>/pods/<uid>/ns and mounts the pod's
// /dev/shm. It is idempotent: an existing sandbox is returned as is.
func (r *Runtime) CreateSandbox(cfg SandboxConfig) (_ *Sandbox, retErr error) {
	if err := validName("pod uid", cfg.UID); err != nil {
		return nil, err
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.Name
	}
	if len(cfg.Hostname) > 64 {
		cfg.Hostname = cfg.Hostname[:64]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if sb, ok := r.pods[cfg.UID]; ok {
		return sb, nil
	}
	dir := r.podDir(cfg.UID)
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o700); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", cfg.UID, err)
	}
	sb := &Sandbox{Config: cfg, ShmDir: filepath.Join(dir, "shm")}
	defer func() {
		if retErr != nil {
			r.cleanupPodDir(cfg.UID)
		}
	}()
	if err := os.MkdirAll(sb.ShmDir, 0o755); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", cfg.UID, err)
	}
	if err := unix.Mount("shm", sb.ShmDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=1777,size="+strconv.FormatInt(r.cfg.ShmSize, 10)); err != nil {
		return nil, fmt.Errorf("create sandbox %s: mount shm: %w", cfg.UID, err)
	}
	var flags int
	if !cfg.HostNetwork {
		flags |= unix.CLONE_NEWNET | unix.CLONE_NEWUTS
		sb.NetNS = filepath.Join(dir, "ns", "net")
		sb.UTSNS = filepath.Join(dir, "ns", "uts")
	}
	if !cfg.HostIPC {
		flags |= unix.CLONE_NEWIPC
		sb.IPCNS = filepath.Join(dir, "ns", "ipc")
	}
	if flags != 0 {
		if err := pinNamespaces(flags, cfg.Hostname, sb); err != nil {
			return nil, fmt.Errorf("create sandbox %s: %w", cfg.UID, err)
		}
	}
	b, err := json.Marshal(sb)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", cfg.UID, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "sandbox.json"), b); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", cfg.UID, err)
	}
	r.pods[cfg.UID] = sb
	r.log.Info("sandbox created", "pod", cfg.Namespace+"/"+cfg.Name, "uid", cfg.UID, "netns", sb.NetNS)
	return sb, nil
}

// pinNamespaces unshares the namespaces on a locked OS thread, bind-mounts
// them to the sandbox's ns files and moves the thread back into its original
// namespaces. (Leaving the thread locked would not do: if it is the main
// thread, Go parks it rather than ending it, and it would keep the pod's
// namespaces alive and make /proc/self/ns lie.)
func pinNamespaces(flags int, hostname string, sb *Sandbox) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		restored := false
		defer func() {
			// A thread that could not be restored stays locked, so the
			// runtime ends it with this goroutine.
			if restored {
				goruntime.UnlockOSThread()
			}
		}()
		kinds := []struct {
			flag int
			ns   string
			path string
		}{{unix.CLONE_NEWNET, "net", sb.NetNS}, {unix.CLONE_NEWIPC, "ipc", sb.IPCNS}, {unix.CLONE_NEWUTS, "uts", sb.UTSNS}}
		var orig []*os.File
		defer func() {
			for _, f := range orig {
				f.Close()
			}
		}()
		for _, k := range kinds {
			if flags&k.flag == 0 {
				continue
			}
			f, err := os.Open("/proc/thread-self/ns/" + k.ns)
			if err != nil {
				errc <- fmt.Errorf("open current %s namespace: %w", k.ns, err)
				return
			}
			orig = append(orig, f)
		}
		err := func() error {
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if flags&unix.CLONE_NEWUTS != 0 {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("sethostname %q: %w", hostname, err)
				}
			}
			if flags&unix.CLONE_NEWNET != 0 {
				// Bring up lo, as a pod's network always has it.
				if err := loopbackUp(); err != nil {
					return err
				}
			}
			for _, k := range kinds {
				if flags&k.flag == 0 {
					continue
				}
				if err := bindNS("/proc/thread-self/ns/"+k.ns, k.path); err != nil {
					return err
				}
			}
			return nil
		}()
		restored = true
		for _, f := range orig {
			if serr := unix.Setns(int(f.Fd()), 0); serr != nil {
				restored = false
			}
		}
		errc <- err
	}()
	return <-errc
}

func bindNS(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("pin namespace: %w", err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pin namespace %s: %w", dst, err)
	}
	return nil
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// Sandbox returns a created sandbox.
func (r *Runtime) Sandbox(uid string) (*Sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sb, ok := r.pods[uid]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: %w", uid, ErrNotFound)
	}
	return sb, nil
}

// RemoveSandbox stops (without grace) and removes the pod's containers, then
// unpins its namespaces and removes its shm, cgroups, files and logs. Removing an
// unknown sandbox is not an error.
func (r *Runtime) RemoveSandbox(uid string) error {
	if err := validName("pod uid", uid); err != nil {
		return err
	}
	var errs []error
	var ids []string
	r.mu.Lock()
	for id, c := range r.ctrs {
		if c.meta.PodUID == uid { // (set at creation, never changed)
			ids = append(ids, id)
		}
	}
	r.mu.Unlock()
	for _, id := range ids {
		if err := r.RemoveContainer(id); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove sandbox %s: %w", uid, errors.Join(errs...))
	}
	// The containers' dirs are on disk until their background removal ends.
	r.waitBackground()
	r.mu.Lock()
	sb := r.pods[uid]
	delete(r.pods, uid)
	r.mu.Unlock()
	if err := r.cleanupPodDir(uid); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", uid, err)
	}
	if sb != nil {
		if err := os.RemoveAll(r.podLogDir(sb)); err != nil {
			return fmt.Errorf("remove sandbox %s: logs: %w", uid, err)
		}
	}
	r.log.Info("sandbox removed", "uid", uid)
	return nil
}

// cleanupPodDir unmounts and removes everything a pod may have left.
func (r *Runtime) cleanupPodDir(uid string) error {
	dir := r.podDir(uid)
	var errs []error
	for _, p := range []string{"ns/net", "ns/ipc", "ns/uts", "shm"} {
		if err := unmountAll(filepath.Join(dir, p)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.removePodCgroup(uid); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unmountAll detaches every mount stacked on path; a path that is not a
// mount point (or does not exist) is fine.
func unmountAll(path string) error {
	for range 16 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: too many stacked mounts", path)
}
