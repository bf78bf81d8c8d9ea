package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/user"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultPath is the PATH a container gets when neither the image nor the
// container sets one.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCaps is the capability set of an unprivileged container, as
// containerd and Docker grant it.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// ErrNoCommand is returned when neither the container nor its image says
// what to run.
var ErrNoCommand = errors.New("no command specified")

// ErrUnknownUser is returned when the user (or group) a container should run
// as is neither numeric nor found in the rootfs' /etc/passwd (/etc/group).
var ErrUnknownUser = errors.New("unable to find user")

// ErrSeccompUnsupported is returned for a RuntimeDefault seccomp profile when
// the binary was built without seccomp support (build tag "seccomp", cgo and
// libseccomp).
var ErrSeccompUnsupported = errors.New("seccomp profile requested but this binary was built without seccomp support (-tags seccomp)")

// processSpec is what a container's processes (init and exec) run with.
type processSpec struct {
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	Cwd        string   `json:"cwd"`
	UID        int      `json:"uid"`
	GID        int      `json:"gid"`
	Groups     []int    `json:"groups,omitempty"`
	StopSignal string   `json:"stopSignal,omitempty"`
	// Stdin, StdinOnce and TTY are the init's (see ContainerConfig).
	Stdin     bool `json:"stdin,omitempty"`
	StdinOnce bool `json:"stdinOnce,omitempty"`
	TTY       bool `json:"tty,omitempty"`
}

// resolveCommand applies Kubernetes' rules: command replaces the image's
// ENTRYPOINT (and drops its CMD), args replace the image's CMD.
func resolveCommand(cfg *ContainerConfig) ([]string, error) {
	var argv []string
	switch {
	case len(cfg.Command) > 0:
		argv = append(slices.Clone(cfg.Command), cfg.Args...)
	case len(cfg.Args) > 0:
		argv = append(slices.Clone(cfg.Image.Entrypoint), cfg.Args...)
	default:
		argv = append(slices.Clone(cfg.Image.Entrypoint), cfg.Image.Cmd...)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, ErrNoCommand
	}
	return argv, nil
}

// mergeEnv returns the image's environment overridden and extended by the
// container's, in order; PATH is defaulted when neither sets it.
func mergeEnv(image []string, ctr []EnvVar) []string {
	env := make([]string, 0, len(image)+len(ctr)+1)
	index := map[string]int{}
	set := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			env[i] = kv
			return
		}
		index[k] = len(env)
		env = append(env, kv)
	}
	for _, kv := range image {
		set(kv)
	}
	for _, e := range ctr {
		set(e.Name + "=" + e.Value)
	}
	if _, ok := index["PATH"]; !ok {
		env = append([]string{defaultPath}, env...)
	}
	return env
}

// resolveUser turns the image's USER (name or uid, optionally :group) and the
// runAsUser/runAsGroup overrides into ids, through the rootfs' /etc/passwd
// and /etc/group.
func resolveUser(rootfs string, img string, sc SecurityContext) (*user.ExecUser, error) {
	spec := img
	if sc.RunAsUser != nil {
		_, grp, _ := strings.Cut(spec, ":")
		spec = strconv.FormatInt(*sc.RunAsUser, 10)
		if grp != "" {
			spec += ":" + grp
		}
	}
	if sc.RunAsGroup != nil {
		u, _, _ := strings.Cut(spec, ":")
		if u == "" {
			u = "0"
		}
		spec = u + ":" + strconv.FormatInt(*sc.RunAsGroup, 10)
	}
	passwd, err := securejoin.SecureJoin(rootfs, "/etc/passwd")
	if err != nil {
		return nil, fmt.Errorf("resolve /etc/passwd: %w", err)
	}
	group, err := securejoin.SecureJoin(rootfs, "/etc/group")
	if err != nil {
		return nil, fmt.Errorf("resolve /etc/group: %w", err)
	}
	defaults := &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}
	u, err := user.GetExecUserPath(spec, defaults, passwd, group)
	if err != nil {
		return nil, fmt.Errorf("%w %q in the image: %w", ErrUnknownUser, spec, err)
	}
	return u, nil
}

// capabilities applies add/drop (with "ALL") on top of the default set.
func capabilities(sc SecurityContext) ([]string, error) {
	norm := func(c string) string {
		c = strings.ToUpper(c)
		if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		return c
	}
	if sc.Privileged {
		return boundedCapabilities(), nil
	}
	all := allCapabilities()
	known := func(c string) error {
		if c != "ALL" && !slices.Contains(all, c) {
			return fmt.Errorf("unknown capability %q", c)
		}
		return nil
	}
	caps := slices.Clone(defaultCaps)
	for _, d := range sc.CapDrop {
		d = norm(d)
		if err := known(d); err != nil {
			return nil, err
		}
		if d == "ALL" {
			caps = nil
			continue
		}
		caps = slices.DeleteFunc(caps, func(c string) bool { return c == d })
	}
	for _, a := range sc.CapAdd {
		a = norm(a)
		if err := known(a); err != nil {
			return nil, err
		}
		if a == "ALL" {
			return boundedCapabilities(), nil
		}
		if !slices.Contains(caps, a) {
			caps = append(caps, a)
		}
	}
	return caps, nil
}

// containerSpec is what buildConfig needs besides the ContainerConfig.
type containerSpec struct {
	ID         string
	Rootfs     string
	CgroupPath string
	Sandbox    *Sandbox
	Proc       processSpec
}

// buildConfig builds the libcontainer config of a container: runc's defaults
// (mounts, masked and read-only /proc paths, default devices) adjusted to
// Kubernetes' semantics.
func buildConfig(cfg *ContainerConfig, cs containerSpec) (*configs.Config, error) {
	sc := cfg.Security
	spec := specconv.Example()
	spec.Root = &specs.Root{Path: cs.Rootfs, Readonly: sc.ReadOnlyRootFilesystem}
	spec.Hostname = ""
	caps, err := capabilities(sc)
	if err != nil {
		return nil, err
	}
	noNewPrivs := sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation && !sc.Privileged
	spec.Process = &specs.Process{
		Args:            cs.Proc.Args,
		Env:             cs.Proc.Env,
		Cwd:             cs.Proc.Cwd,
		NoNewPrivileges: noNewPrivs,
		Capabilities: &specs.LinuxCapabilities{
			Bounding: caps, Permitted: caps, Effective: caps,
		},
	}
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		switch m.Destination {
		case "/dev/shm":
			m = specs.Mount{
				Destination: "/dev/shm", Type: "bind", Source: cs.Sandbox.ShmDir,
				Options: []string{"rbind", "nosuid", "nodev", "noexec"},
			}
		case "/sys", "/sys/fs/cgroup":
			if sc.Privileged {
				m.Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" })
			}
		}
		mounts = append(mounts, m)
	}
	for _, m := range cfg.Mounts {
		if !filepath.IsAbs(m.ContainerPath) {
			return nil, fmt.Errorf("mount %q: container path must be absolute", m.ContainerPath)
		}
		if _, err := os.Stat(m.HostPath); err != nil {
			return nil, fmt.Errorf("mount %q: %w", m.ContainerPath, err)
		}
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		mounts = append(mounts, specs.Mount{Destination: m.ContainerPath, Type: "bind", Source: m.HostPath, Options: opts})
	}
	spec.Mounts = mounts

	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if !cs.Sandbox.Config.HostPID {
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if cs.Sandbox.NetNS != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: cs.Sandbox.NetNS})
	}
	if cs.Sandbox.IPCNS != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: cs.Sandbox.IPCNS})
	}
	if cs.Sandbox.UTSNS != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace, Path: cs.Sandbox.UTSNS})
	}
	spec.Linux.Namespaces = ns
	spec.Linux.CgroupsPath = cs.CgroupPath
	if sc.Privileged {
		spec.Linux.MaskedPaths = nil
		spec.Linux.ReadonlyPaths = nil
	} else {
		spec.Linux.MaskedPaths = append(spec.Linux.MaskedPaths, "/proc/interrupts", "/sys/devices/virtual/powercap")
	}

	res := &specs.LinuxResources{Devices: spec.Linux.Resources.Devices}
	if sc.Privileged {
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	}
	shares := milliCPUToShares(cfg.Resources.CPURequestMilli)
	res.CPU = &specs.LinuxCPU{Shares: &shares}
	if cfg.Resources.CPULimitMilli > 0 {
		period := uint64(100000)
		quota := max(cfg.Resources.CPULimitMilli*int64(period)/1000, 1000)
		res.CPU.Period, res.CPU.Quota = &period, &quota
	}
	if cfg.Resources.MemoryLimit > 0 {
		limit := cfg.Resources.MemoryLimit
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	spec.Linux.Resources = res

	switch sc.Seccomp {
	case "", SeccompUnconfined:
	case SeccompRuntimeDefault:
		if major, _, _ := seccomp.Version(); major == 0 {
			return nil, ErrSeccompUnsupported
		}
		if !sc.Privileged {
			spec.Linux.Seccomp = defaultSeccomp()
		}
	default:
		return nil, fmt.Errorf("unsupported seccomp profile %q", sc.Seccomp)
	}

	c, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: cs.ID, Spec: spec})
	if err != nil {
		return nil, fmt.Errorf("libcontainer config: %w", err)
	}
	return c, nil
}

// milliCPUToShares converts a CPU request to cgroup cpu shares as the
// kubelet does (minimum 2).
func milliCPUToShares(milli int64) uint64 {
	if milli <= 0 {
		return 2
	}
	return uint64(max(milli*1024/1000, 2))
}
