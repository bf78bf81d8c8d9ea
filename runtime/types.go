package runtime

import (
	"io"
	"time"
)

// Config configures a Runtime.
type Config struct {
	// StateDir holds pods' pinned namespaces, containers' rootfs upper dirs,
	// libcontainer state and exit files, e.g. /var/lib/orch/agent.
	StateDir string
	// LogDir is the root of container logs: <LogDir>/<ns>_<pod>_<uid>/<ctr>/<n>.log.
	// Default /var/log/pods.
	LogDir string
	// CgroupRoot is the cgroup parent of all pods, e.g. /orch/<node>.
	CgroupRoot string
	// LogMaxBytes rotates a container log file when it grows past this size
	// (default 10 MiB); LogMaxFiles rotated files are kept (default 4).
	LogMaxBytes int64
	LogMaxFiles int
	// ShmSize is the size of a pod's /dev/shm in bytes (default 64 MiB).
	ShmSize int64
	// InitBinary is the small container init (runtime/internal/initbin,
	// built for this machine) to run instead of the whole binary when
	// libcontainer starts a container's or an exec's init. Nil takes the
	// one built in with the orch_init tag, if any; without one the binary
	// that links this package is re-executed as the init.
	InitBinary []byte
}

// SandboxConfig describes a pod sandbox.
type SandboxConfig struct {
	UID, Namespace, Name string
	// Hostname is the pod's hostname (UTS namespace); defaults to Name.
	Hostname string
	// HostNetwork pods share the host's network and UTS namespaces, HostIPC
	// pods the host's IPC namespace, HostPID pods the host's PID namespace.
	HostNetwork, HostIPC, HostPID bool
}

// Sandbox is a created pod sandbox.
type Sandbox struct {
	Config SandboxConfig
	// NetNS is the path of the pinned network namespace the pod network
	// configures ("" for host-network pods).
	NetNS string
	// IPCNS and UTSNS are the pinned IPC and UTS namespaces ("" when shared
	// with the host).
	IPCNS, UTSNS string
	// ShmDir is the pod's /dev/shm tmpfs.
	ShmDir string
}

// ImageConfig is the part of an OCI image config a container uses.
type ImageConfig struct {
	User       string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	StopSignal string
}

// EnvVar is one environment variable.
type EnvVar struct{ Name, Value string }

// Mount is a host path bind-mounted into the container (volume dirs,
// /etc/hosts, /etc/resolv.conf, /etc/hostname prepared by the agent).
type Mount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
}

// Resources are a container's requests and limits.
type Resources struct {
	// CPURequestMilli sets cpu shares; CPULimitMilli the CFS quota.
	CPURequestMilli, CPULimitMilli int64
	// MemoryLimit in bytes; 0 = unlimited.
	MemoryLimit int64
}

// Seccomp profile kinds, as Kubernetes' seccompProfile.type.
const (
	SeccompUnconfined     = "Unconfined"
	SeccompRuntimeDefault = "RuntimeDefault"
)

// SecurityContext is a container's effective security context.
type SecurityContext struct {
	Privileged               bool
	RunAsUser, RunAsGroup    *int64
	CapAdd, CapDrop          []string
	ReadOnlyRootFilesystem   bool
	AllowPrivilegeEscalation *bool
	// Seccomp is "" or SeccompUnconfined (none) or SeccompRuntimeDefault.
	Seccomp string
}

// ContainerConfig describes a container of a pod.
type ContainerConfig struct {
	Name string
	// Attempt is the restart count; it names the log file.
	Attempt int
	// Lowerdirs are the image's unpacked layer dirs, base layer first.
	Lowerdirs []string
	Image     ImageConfig
	// Command and Args follow Kubernetes' rules against the image's
	// ENTRYPOINT and CMD.
	Command, Args []string
	Env           []EnvVar
	WorkingDir    string
	Resources     Resources
	Security      SecurityContext
	Mounts        []Mount
	// Stdin keeps the container's stdin open for Attach (else it reads
	// /dev/null); StdinOnce closes it when the first attach session ends.
	// TTY gives the container a terminal: its stdout and stderr are then
	// one stream, logged as stdout.
	Stdin, StdinOnce, TTY bool
}

// AttachStreams are an Attach session's ends. Stdin is used only when the
// container was created with Stdin; its EOF closes the container's stdin
// (for a TTY, sends it ^D). Resize changes a TTY's size.
type AttachStreams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan TermSize
}

// State is a container's state.
type State string

// Container states.
const (
	StateCreated State = "Created"
	StateRunning State = "Running"
	StateExited  State = "Exited"
	StateUnknown State = "Unknown"
)

// Termination reasons, as the kubelet reports them.
const (
	ReasonCompleted  = "Completed"
	ReasonError      = "Error"
	ReasonOOMKilled  = "OOMKilled"
	ReasonStartError = "StartError"
	ReasonUnknown    = "ContainerStatusUnknown"
)

// ContainerStatus is what the runtime knows of a container.
type ContainerStatus struct {
	ID, PodUID, Name string
	Attempt          int
	State            State
	Pid              int
	CreatedAt        time.Time
	StartedAt        time.Time
	FinishedAt       time.Time
	ExitCode         int
	Reason, Message  string
	LogPath          string
}
