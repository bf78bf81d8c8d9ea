package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/orch-dev/orch/runtime"
	"github.com/orch-dev/orch/runtime/image"
)

// Config configures an Agent.
type Config struct {
	// NodeName is the Node's name (required, a DNS subdomain).
	NodeName string
	// NodeIPs are the node's addresses (InternalIP); the first is the hostIP
	// of its pods. Required.
	NodeIPs []netip.Addr
	// Hostname is the Hostname address (default NodeName).
	Hostname string
	// DataDir is orch's data directory (default /var/lib/orch); pod volumes
	// live under <DataDir>/agent/pod-data and ephemeral-storage is measured
	// on its filesystem.
	DataDir string
	// Labels and Taints are added to the Node at registration.
	Labels map[string]string
	Taints []corev1.Taint
	// ControlPlane marks the node as a server (node-role labels).
	ControlPlane bool
	// Version is orch's version (containerRuntimeVersion orch://<Version>).
	Version string
	// ClusterDNS is the nameserver of ClusterFirst pods (default 10.43.0.10);
	// ClusterDomain the DNS domain (default cluster.local).
	ClusterDNS    netip.Addr
	ClusterDomain string
	// ResolvConf is the host's resolv.conf (default /etc/resolv.conf) and
	// HostsFile its hosts file (default /etc/hosts), read for Default DNS
	// policy and host-network pods.
	ResolvConf, HostsFile string
	// MaxPods is the pods capacity (default 110).
	MaxPods int
	// LeaseDuration is the Lease's duration (default 40s); the lease is
	// renewed every LeaseDuration/4.
	LeaseDuration time.Duration
	// StatusReportFrequency bounds how long an unchanged Node status goes
	// unwritten (default 5m); StatusUpdateFrequency is how often it is
	// computed (default 10s).
	StatusReportFrequency, StatusUpdateFrequency time.Duration
	// BackoffBase and BackoffMax bound container restart and image pull
	// back-off (default 10s doubling to 5m); BackoffReset is the running
	// time after which it starts over (default 10m).
	BackoffBase, BackoffMax, BackoffReset time.Duration
	// ResyncPeriod is how often each pod is re-synced without an event
	// (volumes of changed ConfigMaps and Secrets are updated then; default 60s).
	ResyncPeriod time.Duration
}

func (c *Config) setDefaults() error {
	if c.NodeName == "" {
		return errors.New("agent: node name is required")
	}
	if len(c.NodeIPs) == 0 {
		return errors.New("agent: at least one node IP is required")
	}
	if c.Hostname == "" {
		c.Hostname = c.NodeName
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/orch"
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("agent: data dir %q must be absolute", c.DataDir)
	}
	if !c.ClusterDNS.IsValid() {
		c.ClusterDNS = netip.MustParseAddr("10.43.0.10")
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.HostsFile == "" {
		c.HostsFile = "/etc/hosts"
	}
	if c.MaxPods == 0 {
		c.MaxPods = 110
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 40 * time.Second
	}
	if c.StatusReportFrequency == 0 {
		c.StatusReportFrequency = 5 * time.Minute
	}
	if c.StatusUpdateFrequency == 0 {
		c.StatusUpdateFrequency = 10 * time.Second
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = 10 * time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if c.BackoffReset == 0 {
		c.BackoffReset = 10 * time.Minute
	}
	if c.ResyncPeriod == 0 {
		c.ResyncPeriod = time.Minute
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	return nil
}

// Runtime is the container runtime the agent drives; *runtime.Runtime
// implements it.
type Runtime interface {
	CreateSandbox(cfg runtime.SandboxConfig) (*runtime.Sandbox, error)
	Sandbox(uid string) (*runtime.Sandbox, error)
	RemoveSandbox(uid string) error
	CreateContainer(podUID string, cfg runtime.ContainerConfig) (string, error)
	StartContainer(id string) error
	ContainerStatus(id string) (runtime.ContainerStatus, error)
	ListContainers() []runtime.ContainerStatus
	Wait(ctx context.Context, id string) (runtime.ContainerStatus, error)
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	RemoveContainer(id string) error
	Exec(ctx context.Context, id string, opts runtime.ExecOptions) (int, error)
	Attach(ctx context.Context, id string, s runtime.AttachStreams) error
	Logs(ctx context.Context, id string, opts runtime.LogOptions, w io.Writer) error
}

// Images is the image store; *image.Store implements it.
type Images interface {
	Resolve(ctx context.Context, ref string) (*image.Image, error)
	Pull(ctx context.Context, ref string, opts image.PullOptions) (*image.Image, error)
}

// Network wires pods into the pod network. Setup is idempotent: called
// again for a pod it already set up it returns the same addresses.
type Network interface {
	Setup(ctx context.Context, podUID, netnsPath string) ([]netip.Addr, error)
	Teardown(ctx context.Context, podUID, netnsPath string) error
}

// NetworkFactory makes the pod network once the node's pod CIDR is known.
type NetworkFactory func(ctx context.Context, podCIDR netip.Prefix) (Network, error)

// Deps are the agent's collaborators.
type Deps struct {
	Runtime Runtime
	Images  Images
	// Network makes the pod network from the Node's spec.podCIDR; nil
	// means only host-network pods can run (others wait with an event).
	Network NetworkFactory
}
