// Package podnet gives every pod an IP address that every pod and node of
// the cluster can reach. It plugs each pod in through a routed veth pair
// whose pod end is eth0 in the pod's network namespace, with no bridge
// (as Calico's and Cilium's routed modes): the pod holds its address as a
// /32 and sends everything via the first address of the node's pod CIDR,
// which a permanent neighbour entry resolves to the host end; the node
// routes the pod's /32 to the host end. Each hop a bridge would add
// (bridge port in, bridge forwarding, bridge device out) costs throughput,
// all the more when every hop runs on the same CPUs. The package hands out
// addresses from the pod CIDR with a host-local allocator persisted in the
// data directory, and masquerades pod traffic that leaves the cluster CIDR
// in an nftables table of its own. Pods that an earlier version put on a
// bridge keep working until they move (legacy.go).
//
// Between nodes the default backend is a VXLAN overlay (VNI 1, UDP 8472, as
// flannel's vxlan backend, so the same firewall rules apply): each node's
// VXLAN device carries the network address (.0) of the node's pod CIDR as a
// /32, and for every peer node the package installs
//
//	fdb:   peer VTEP MAC -> peer node IP            (dev orch.1, permanent)
//	neigh: peer pod CIDR .0 -> peer VTEP MAC        (dev orch.1, permanent)
//	route: peer pod CIDR via peer .0 dev orch.1 onlink
//
// so no multicast, learning or ARP crosses the underlay. Where the kernel
// allows, eBPF programs forward, encapsulate and decapsulate pod-to-pod
// traffic themselves, past the node's forwarding path (fastpath.go). The
// host-gw backend routes each peer's pod CIDR via the peer's node IP (nodes
// on one L2 segment), and the none backend leaves inter-node routing to
// someone else.
//
// Everything happens in the network namespace the node runs in
// (Config.NetnsPath, the process's own by default): links, routes, the
// nftables table and the sysctls forwarding needs.
package podnet

import (
	"errors"
	"fmt"
	"net/netip"
)

// Backend selects how pod traffic crosses between nodes.
type Backend string

// Backends.
const (
	// BackendVXLAN encapsulates pod traffic in VXLAN between node IPs.
	BackendVXLAN Backend = "vxlan"
	// BackendHostGW routes pod CIDRs via peer node IPs (one L2 segment).
	BackendHostGW Backend = "host-gw"
	// BackendNone installs nothing between nodes.
	BackendNone Backend = "none"
)

// Defaults.
const (
	DefaultBridge    = "orch0"
	DefaultVXLAN     = "orch.1"
	DefaultVNI       = 1
	DefaultVXLANPort = 8472
	DefaultTable     = "orch-net"
	// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer IP 20,
	// UDP 8, VXLAN 8, inner Ethernet 14.
	VXLANOverhead = 50
)

// Default cluster address ranges (DESIGN.md).
var (
	DefaultClusterCIDR = netip.MustParsePrefix("10.42.0.0/16")
	DefaultServiceCIDR = netip.MustParsePrefix("10.43.0.0/16")
)

// DefaultNodeMaskSize is the size of each node's pod CIDR.
const DefaultNodeMaskSize = 24

// Node pod CIDR size bounds: a /16 node range is the whole default cluster;
// a /28 leaves 13 pod addresses, and anything smaller is useless.
const (
	minNodeMaskSize = 16
	maxNodeMaskSize = 28
	// maxServiceMaskSize keeps room for kubernetes (.1) and DNS (.10).
	maxServiceMaskSize = 28
)

// Config is one node's network configuration.
type Config struct {
	// NodeName is this node; peers with this name are ignored.
	NodeName string
	// ClusterCIDR holds every node's pod CIDR. Traffic from pods to
	// addresses outside it is masqueraded.
	ClusterCIDR netip.Prefix
	// PodCIDR is this node's share of ClusterCIDR.
	PodCIDR netip.Prefix
	// NodeIP is the node's address on the underlay, the VXLAN tunnel
	// source. Required for the vxlan and host-gw backends.
	NodeIP netip.Addr
	// Backend defaults to vxlan.
	Backend Backend
	// DataDir holds the address allocations (the agent passes
	// <data-dir>/agent/podnet).
	DataDir string
	// NetnsPath is the node's network namespace; empty means the
	// process's own.
	NetnsPath string
	// Bridge (the legacy bridge of earlier versions, see legacy.go),
	// VXLANDevice, VNI, VXLANPort and Table default to orch0, orch.1, 1,
	// 8472 and orch-net.
	Bridge      string
	VXLANDevice string
	VNI         int
	VXLANPort   int
	Table       string
	// MTU of pod interfaces; 0 derives it from the uplink (the link
	// holding NodeIP): its MTU, less VXLANOverhead for vxlan.
	MTU int
	// NoFastPath keeps the vxlan backend's pod traffic on the kernel's
	// normal forwarding path (fastpath.go); the fast path is used
	// otherwise where the kernel has what it needs.
	NoFastPath bool
}

func (c *Config) setDefaults() {
	if c.Backend == "" {
		c.Backend = BackendVXLAN
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if c.VXLANDevice == "" {
		c.VXLANDevice = DefaultVXLAN
	}
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = DefaultVXLANPort
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
}

func (c *Config) validate() error {
	var errs []error
	switch c.Backend {
	case BackendVXLAN, BackendHostGW:
		if !c.NodeIP.Is4() {
			errs = append(errs, fmt.Errorf("backend %s needs an IPv4 node IP, have %q", c.Backend, c.NodeIP))
		}
	case BackendNone:
	default:
		errs = append(errs, fmt.Errorf("unknown backend %q (want %s, %s or %s)", c.Backend, BackendVXLAN, BackendHostGW, BackendNone))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if err := ValidatePodCIDR(c.ClusterCIDR, c.PodCIDR); err != nil {
		errs = append(errs, err)
	}
	for _, n := range []struct{ what, name string }{{"bridge", c.Bridge}, {"vxlan device", c.VXLANDevice}} {
		if len(n.name) > 15 {
			errs = append(errs, fmt.Errorf("%s name %q longer than 15 characters", n.what, n.name))
		}
	}
	if c.VNI < 1 || c.VNI > 1<<24-1 {
		errs = append(errs, fmt.Errorf("VNI %d out of range 1..16777215", c.VNI))
	}
	if c.VXLANPort < 1 || c.VXLANPort > 65535 {
		errs = append(errs, fmt.Errorf("VXLAN port %d out of range", c.VXLANPort))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("MTU %d out of range 576..65535", c.MTU))
	}
	if len(errs) > 0 {
		return fmt.Errorf("podnet config: %w", errors.Join(errs...))
	}
	return nil
}

// ValidateCIDRs checks the cluster-wide ranges the server is started with:
// both IPv4, not overlapping, the service range big enough for its
// well-known addresses, and the node mask size inside the cluster range and
// big enough for pods.
func ValidateCIDRs(cluster, service netip.Prefix, nodeMaskSize int) error {
	var errs []error
	if !cluster.IsValid() || !cluster.Addr().Is4() {
		errs = append(errs, fmt.Errorf("cluster CIDR %q is not an IPv4 prefix", cluster))
	} else if cluster != cluster.Masked() {
		errs = append(errs, fmt.Errorf("cluster CIDR %s has host bits set (did you mean %s?)", cluster, cluster.Masked()))
	}
	if !service.IsValid() || !service.Addr().Is4() {
		errs = append(errs, fmt.Errorf("service CIDR %q is not an IPv4 prefix", service))
	} else if service != service.Masked() {
		errs = append(errs, fmt.Errorf("service CIDR %s has host bits set (did you mean %s?)", service, service.Masked()))
	} else if service.Bits() > maxServiceMaskSize {
		errs = append(errs, fmt.Errorf("service CIDR %s is too small: need at least a /%d", service, maxServiceMaskSize))
	}
	if len(errs) == 0 && cluster.Overlaps(service) {
		errs = append(errs, fmt.Errorf("cluster CIDR %s and service CIDR %s overlap", cluster, service))
	}
	if nodeMaskSize < minNodeMaskSize || nodeMaskSize > maxNodeMaskSize {
		errs = append(errs, fmt.Errorf("node CIDR mask size /%d out of range /%d../%d", nodeMaskSize, minNodeMaskSize, maxNodeMaskSize))
	} else if cluster.IsValid() && nodeMaskSize < cluster.Bits() {
		errs = append(errs, fmt.Errorf("node CIDR mask size /%d is larger than the cluster CIDR %s", nodeMaskSize, cluster))
	}
	return errors.Join(errs...)
}

// ValidatePodCIDR checks that a node's pod CIDR is an IPv4 network inside
// the cluster CIDR with room for pods.
func ValidatePodCIDR(cluster, pod netip.Prefix) error {
	switch {
	case !cluster.IsValid() || !cluster.Addr().Is4():
		return fmt.Errorf("cluster CIDR %q is not an IPv4 prefix", cluster)
	case !pod.IsValid() || !pod.Addr().Is4():
		return fmt.Errorf("pod CIDR %q is not an IPv4 prefix", pod)
	case pod != pod.Masked():
		return fmt.Errorf("pod CIDR %s has host bits set", pod)
	case pod.Bits() > maxNodeMaskSize:
		return fmt.Errorf("pod CIDR %s is too small: need at least a /%d", pod, maxNodeMaskSize)
	case pod.Bits() < cluster.Bits() || !cluster.Contains(pod.Addr()):
		return fmt.Errorf("pod CIDR %s is not inside cluster CIDR %s", pod, cluster)
	}
	return nil
}
