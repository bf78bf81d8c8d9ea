package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// routeProtocol tags the routes this package installs (the rtm_protocol
// field, like bird's or zebra's), so that after a restart the routes of
// peers that left meanwhile are found and removed. 0x6f is unassigned in
// iproute2's rt_protos.
const routeProtocol netlink.RouteProtocol = 0x6f

// podRouteProtocol tags the routes of this node's own pods: each pod's /32
// through its host veth and the unreachable route that covers the rest of
// the pod CIDR. A protocol of their own keeps SetPeers, which owns every
// routeProtocol route, away from them.
const podRouteProtocol netlink.RouteProtocol = 0x70

// unreachableMetric is the metric of the pod CIDR's unreachable route: worse
// than any connected route, so a legacy bridge's route to the pod CIDR
// (see legacy.go) wins while it exists.
const unreachableMetric = 1 << 20

const (
	familyInet   = unix.AF_INET
	familyBridge = unix.AF_BRIDGE
)

// podIface is the pod end of the veth pair.
const podIface = "eth0"

// PodIP is a pod's network as Setup configured it.
type PodIP struct {
	// Addr is the pod's address as a /32 (eth0's): the pod reaches every
	// other address, its node's other pods included, through Gateway.
	Addr netip.Prefix
	// Gateway is the default route's next hop: the first address of the
	// pod CIDR, which the pod resolves to its host veth by a permanent
	// neighbour entry. The node holds it on lo (gateway.go).
	Gateway netip.Addr
}

// Network is one node's pod network. Its methods are safe for concurrent
// use.
type Network struct {
	cfg     Config
	log     *slog.Logger
	ipam    *ipam
	vtepMAC net.HardwareAddr
	nodeNS  netns.NsHandle // -1 (netns.None) for the process's own
	nh      *netlink.Handle

	mu     sync.Mutex // orders Init, SetPeers and the legacy bridge's removal
	inited bool
	mtu    int
	bridge int // legacy bridge link index while it has pods, else 0 (legacy.go)

	fast   *fastPath // nil when off or unavailable (fastpath.go)
	fastAt [2]int    // the VXLAN device and uplink it was made for
}

// New checks cfg and opens the node's namespace and allocation table. It
// changes nothing in the kernel; Init does.
func New(cfg Config, log *slog.Logger) (*Network, error) {
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a, err := newIPAM(cfg.DataDir, cfg.PodCIDR)
	if err != nil {
		return nil, err
	}
	n := &Network{cfg: cfg, log: log, ipam: a, vtepMAC: stableMAC("vtep", cfg.NodeName), nodeNS: netns.None()}
	if cfg.NetnsPath != "" {
		n.nodeNS, err = netns.GetFromPath(cfg.NetnsPath)
		if err != nil {
			return nil, fmt.Errorf("open node namespace %s: %w", cfg.NetnsPath, err)
		}
		n.nh, err = netlink.NewHandleAt(n.nodeNS)
	} else {
		n.nh, err = netlink.NewHandle()
	}
	if err != nil {
		n.closeNS()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return n, nil
}

// Close releases the namespace and netlink handles and detaches the fast
// path from the VXLAN device and the uplink. The network stays, pod veths'
// fast-path filters included (the next Init replaces them).
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopFastPath()
	n.nh.Close()
	n.closeNS()
	return nil
}

func (n *Network) closeNS() {
	if n.nodeNS.IsOpen() {
		_ = n.nodeNS.Close()
	}
}

// VTEPMAC is the MAC address of this node's VXLAN device. It is derived
// from the node name, so it survives the device being re-created.
func (n *Network) VTEPMAC() net.HardwareAddr { return append(net.HardwareAddr(nil), n.vtepMAC...) }

// MTU is the pod interface MTU Init settled on (0 before Init).
func (n *Network) MTU() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mtu
}

// stableMAC derives a locally administered unicast MAC from what and name.
func stableMAC(what, name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("orch/" + what + "/" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^1 | 2
	return mac
}

// Init sets up the node: forwarding sysctls, the gateway address and the
// unreachable route that covers the pod CIDR's free addresses (gateway.go), the VXLAN device (vxlan backend;
// removed otherwise) and the masquerade table, and keeps a legacy bridge
// only while pods are still plugged into it. It is idempotent and keeps
// running pods connected, so the agent calls it at every start.
func (n *Network) Init(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.setSysctls(); err != nil {
		return err
	}
	uplink, uplinkMTU, err := n.uplink()
	if err != nil {
		return err
	}
	mtu := n.cfg.MTU
	if mtu == 0 {
		mtu = uplinkMTU
		if n.cfg.Backend == BackendVXLAN {
			mtu -= VXLANOverhead
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	br, err := n.adoptLegacyBridge(mtu)
	if err != nil {
		return err
	}
	if err := n.ensureGatewayAddr(); err != nil {
		return err
	}
	if err := n.ensurePodCIDRRoute(); err != nil {
		return err
	}
	if n.cfg.Backend == BackendVXLAN {
		vx, err := n.ensureVXLAN(uplink, mtu)
		if err != nil {
			return err
		}
		n.startFastPath(vx, uplink)
	} else {
		n.stopFastPath()
		n.removePodFilters() // left by a vxlan run
		if err := n.deleteLink(n.cfg.VXLANDevice); err != nil {
			return err
		}
	}
	if err := n.ensureMasquerade(); err != nil {
		return err
	}
	n.mtu, n.bridge, n.inited = mtu, br, true
	n.log.Info("pod network ready", "backend", n.cfg.Backend, "podCIDR", n.cfg.PodCIDR,
		"mtu", mtu, "vtepMAC", n.vtepMAC.String(), "legacyBridge", br != 0)
	return nil
}

// uplink finds the link holding NodeIP (index 0 for the none backend
// without a node IP) and its MTU.
func (n *Network) uplink() (int, int, error) {
	if !n.cfg.NodeIP.IsValid() {
		return 0, 1500, nil
	}
	addrs, err := n.nh.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == n.cfg.NodeIP {
			link, err := n.nh.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, 0, fmt.Errorf("uplink of %s: %w", n.cfg.NodeIP, err)
			}
			return link.Attrs().Index, link.Attrs().MTU, nil
		}
	}
	return 0, 0, fmt.Errorf("node IP %s is not on any interface of this node", n.cfg.NodeIP)
}

// ensureOnlyAddr gives link the IPv4 address want and removes other IPv4
// addresses (a pod CIDR from an earlier life of the node).
func (n *Network) ensureOnlyAddr(link netlink.Link, want netip.Prefix) error {
	addrs, err := n.nh.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		ip, _ := netip.AddrFromSlice(a.IP)
		if netip.PrefixFrom(ip.Unmap(), ones) == want {
			have = true
			continue
		}
		if err := n.nh.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove stale address %s: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	addr := &netlink.Addr{IPNet: prefixNet(want)}
	if err := n.nh.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %s: %w", want, err)
	}
	return nil
}

// ensureVXLAN makes the VXLAN device as configured and returns its index.
func (n *Network) ensureVXLAN(uplink, mtu int) (int, error) {
	name := n.cfg.VXLANDevice
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: n.vtepMAC},
		VxlanId:      n.cfg.VNI,
		VtepDevIndex: uplink,
		SrcAddr:      n.cfg.NodeIP.AsSlice(),
		Port:         n.cfg.VXLANPort,
		Learning:     false,
	}
	link, err := n.nh.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return 0, fmt.Errorf("vxlan %s: %w", name, err)
	}
	if link != nil {
		v, ok := link.(*netlink.Vxlan)
		if !ok || v.VxlanId != want.VxlanId || v.VtepDevIndex != uplink || !v.SrcAddr.Equal(want.SrcAddr) ||
			v.Port != want.Port || v.Learning || v.HardwareAddr.String() != n.vtepMAC.String() {
			n.log.Info("re-creating vxlan device with changed parameters", "device", name)
			if err := n.nh.LinkDel(link); err != nil {
				return 0, fmt.Errorf("delete outdated vxlan %s: %w", name, err)
			}
			link = nil
		} else if v.MTU != mtu {
			if err := n.nh.LinkSetMTU(link, mtu); err != nil {
				return 0, fmt.Errorf("vxlan %s mtu %d: %w", name, mtu, err)
			}
		}
	}
	if link == nil {
		if err := n.nh.LinkAdd(want); err != nil {
			return 0, fmt.Errorf("create vxlan %s: %w", name, err)
		}
		if link, err = n.nh.LinkByName(name); err != nil {
			return 0, fmt.Errorf("vxlan %s: %w", name, err)
		}
	}
	if err := n.ensureOnlyAddr(link, netip.PrefixFrom(vtepAddr(n.cfg.PodCIDR), 32)); err != nil {
		return 0, fmt.Errorf("vxlan %s: %w", name, err)
	}
	if err := n.nh.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("vxlan %s up: %w", name, err)
	}
	return link.Attrs().Index, nil
}

func (n *Network) deleteLink(name string) error {
	link, err := n.nh.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := n.nh.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// vethName is the host end of a pod's veth pair: stable per pod UID so
// Teardown and Reconcile find it without state.
func vethName(uid string) string {
	sum := sha256.Sum256([]byte(uid))
	return "veth" + hex.EncodeToString(sum[:])[:11]
}

// Setup connects the pod whose network namespace is pinned at netnsPath by
// a routed veth pair, with no bridge between pods (as Calico's and
// Cilium's routed modes): the pair is created with its pod end already in
// the pod's namespace as eth0, holding an address from the pod CIDR (the
// same one again if the pod already has one) as a /32, a default route via
// the gateway onlink and a permanent neighbour entry that resolves the
// gateway to the host end's MAC. The host end carries the pod's /32 route
// and a permanent neighbour entry for the pod's MAC, so neither side ever
// sends ARP. Traffic between two pods of the node is routed from one host
// veth to the other; a pod reaching itself through a Service is routed
// back out of its own veth.
//
// Calling it again for a pod that is set up returns its address and
// changes nothing; a half-done earlier attempt, or a pod on a legacy
// bridge, is redone. An exhausted pod CIDR gives an error wrapping
// ErrExhausted.
func (n *Network) Setup(ctx context.Context, podUID, netnsPath string) (PodIP, error) {
	n.mu.Lock()
	inited, mtu := n.inited, n.mtu
	n.mu.Unlock()
	if !inited {
		return PodIP{}, errors.New("podnet: Setup before Init")
	}
	if podUID == "" || netnsPath == "" {
		return PodIP{}, fmt.Errorf("podnet: Setup needs a pod UID and a netns path (have %q, %q)", podUID, netnsPath)
	}
	if err := ctx.Err(); err != nil {
		return PodIP{}, err
	}
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return PodIP{}, fmt.Errorf("pod %s: open netns %s: %w", podUID, netnsPath, err)
	}
	defer podNS.Close()
	ip, err := n.ipam.Allocate(podUID)
	if err != nil {
		return PodIP{}, fmt.Errorf("pod %s: %w", podUID, err)
	}
	res := PodIP{Addr: netip.PrefixFrom(ip, 32), Gateway: gatewayOf(n.cfg.PodCIDR)}
	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return PodIP{}, n.failSetup(podUID, fmt.Errorf("netlink in pod netns: %w", err))
	}
	defer ph.Close()
	host := vethName(podUID)
	hostMAC, podMAC := stableMAC("veth", podUID), stableMAC("pod", podUID)
	if n.podReady(ph, host, hostMAC, res) {
		n.fastAttachPod(host)
		return res, nil
	}
	// Whatever an interrupted attempt (or the legacy bridge) left goes
	// first.
	if err := n.deleteLink(host); err != nil {
		return PodIP{}, n.failSetup(podUID, err)
	}
	if old, err := ph.LinkByName(podIface); err == nil {
		if err := ph.LinkDel(old); err != nil {
			return PodIP{}, n.failSetup(podUID, fmt.Errorf("delete stale %s in pod: %w", podIface, err))
		}
	}
	n.dropEmptyLegacyBridge()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: host, MTU: mtu, HardwareAddr: hostMAC, Flags: net.FlagUp},
		PeerName:         podIface,
		PeerMTU:          uint32(mtu),
		PeerHardwareAddr: podMAC,
		PeerNamespace:    netlink.NsFd(podNS),
	}
	if err := n.nh.LinkAdd(veth); err != nil {
		return PodIP{}, n.failSetup(podUID, fmt.Errorf("create veth %s: %w", host, err))
	}
	if err := configurePod(ph, res, hostMAC); err != nil {
		return PodIP{}, n.failSetup(podUID, err)
	}
	if err := n.routeToPod(host, res.Addr, podMAC); err != nil {
		return PodIP{}, n.failSetup(podUID, err)
	}
	n.fastAttachPod(host)
	// The kernel activates a link's queueing (and drops what is sent
	// before) a moment after carrier comes, from a work queue: wait for
	// both ends so the pod's first packets are not lost.
	if err := waitOperUp(ctx, ph, podIface); err != nil {
		return PodIP{}, n.failSetup(podUID, err)
	}
	if err := waitOperUp(ctx, n.nh, host); err != nil {
		return PodIP{}, n.failSetup(podUID, err)
	}
	n.log.Debug("pod network set up", "pod", podUID, "ip", res.Addr, "veth", host)
	return res, nil
}

// routeToPod gives the host end of a pod's veth the pod's neighbour entry
// and /32 route.
func (n *Network) routeToPod(host string, addr netip.Prefix, podMAC net.HardwareAddr) error {
	hl, err := n.nh.LinkByName(host)
	if err != nil {
		return fmt.Errorf("veth %s: %w", host, err)
	}
	idx := hl.Attrs().Index
	nb := &netlink.Neigh{LinkIndex: idx, Family: familyInet, State: netlink.NUD_PERMANENT, IP: addr.Addr().AsSlice(), HardwareAddr: podMAC}
	if err := n.nh.NeighSet(nb); err != nil {
		return fmt.Errorf("neighbour %s on %s: %w", addr.Addr(), host, err)
	}
	if err := n.nh.RouteReplace(podRoute(idx, addr)); err != nil {
		return fmt.Errorf("route to %s dev %s: %w", addr, host, err)
	}
	return nil
}

// podRoute is the host's route to a pod: `<ip>/32 dev <veth> scope link`.
func podRoute(veth int, addr netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: veth, Dst: prefixNet(addr), Scope: netlink.SCOPE_LINK,
		Protocol: podRouteProtocol, Table: unix.RT_TABLE_MAIN}
}

// failSetup undoes a failed Setup: the veth (and with it its route and
// neighbour entry) and the address go.
func (n *Network) failSetup(uid string, err error) error {
	cleanup := errors.Join(n.deleteLink(vethName(uid)), n.ipam.Release(uid))
	if cleanup != nil {
		n.log.Warn("undoing failed pod network setup", "pod", uid, "err", cleanup)
	}
	return fmt.Errorf("pod %s: %w", uid, err)
}

// podReady reports whether the pod is fully set up as res: the host end up
// on no bridge with the pod's route and neighbour, eth0 up with the /32,
// the gateway's neighbour and the default route.
func (n *Network) podReady(ph *netlink.Handle, host string, hostMAC net.HardwareAddr, res PodIP) bool {
	hl, err := n.nh.LinkByName(host)
	if err != nil || hl.Attrs().MasterIndex != 0 || hl.Attrs().Flags&net.FlagUp == 0 {
		return false
	}
	if !hasRoute(n.nh, hl, res.Addr, nil) || !hasNeigh(n.nh, hl, res.Addr.Addr()) {
		return false
	}
	pl, err := ph.LinkByName(podIface)
	if err != nil || pl.Attrs().Flags&net.FlagUp == 0 {
		return false
	}
	addrs, err := ph.AddrList(pl, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		return false
	}
	ones, _ := addrs[0].Mask.Size()
	if ip, ok := netip.AddrFromSlice(addrs[0].IP); !ok || netip.PrefixFrom(ip.Unmap(), ones) != res.Addr {
		return false
	}
	return hasNeigh(ph, pl, res.Gateway) && hasRoute(ph, pl, netip.Prefix{}, res.Gateway.AsSlice())
}

// hasRoute reports whether link has a route to dst (the default route when
// dst is the zero prefix) via gw (none when nil).
func hasRoute(h *netlink.Handle, link netlink.Link, dst netip.Prefix, gw net.IP) bool {
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, r := range routes {
		var have netip.Prefix
		if r.Dst != nil {
			ones, _ := r.Dst.Mask.Size()
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			have = netip.PrefixFrom(ip.Unmap(), ones)
			if have.Bits() == 0 {
				have = netip.Prefix{}
			}
		}
		if have == dst && r.Gw.Equal(gw) {
			return true
		}
	}
	return false
}

// hasNeigh reports whether link has a permanent neighbour entry for ip.
func hasNeigh(h *netlink.Handle, link netlink.Link, ip netip.Addr) bool {
	ns, err := h.NeighList(link.Attrs().Index, familyInet)
	if err != nil {
		return false
	}
	for _, e := range ns {
		if e.State&netlink.NUD_PERMANENT != 0 && e.IP.Equal(ip.AsSlice()) {
			return true
		}
	}
	return false
}

// operUpTimeout bounds the wait for a new veth to become operational.
const operUpTimeout = 5 * time.Second

// waitOperUp polls until the named link's operational state is up.
func waitOperUp(ctx context.Context, h *netlink.Handle, name string) error {
	deadline := time.Now().Add(operUpTimeout)
	delay := 200 * time.Microsecond
	for {
		link, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", name, err)
		}
		if link.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not operational after %v (state %s)", name, operUpTimeout, link.Attrs().OperState)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// configurePod brings lo and eth0 up with the /32 address, the gateway's
// permanent neighbour entry (the host end's MAC) and the default route via
// the gateway onlink.
func configurePod(ph *netlink.Handle, res PodIP, hostMAC net.HardwareAddr) error {
	lo, err := ph.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("pod lo: %w", err)
	}
	if err := ph.LinkSetUp(lo); err != nil {
		return fmt.Errorf("pod lo up: %w", err)
	}
	eth, err := ph.LinkByName(podIface)
	if err != nil {
		return fmt.Errorf("pod %s: %w", podIface, err)
	}
	if err := ph.AddrAdd(eth, &netlink.Addr{IPNet: prefixNet(res.Addr)}); err != nil {
		return fmt.Errorf("pod address %s: %w", res.Addr, err)
	}
	if err := ph.LinkSetUp(eth); err != nil {
		return fmt.Errorf("pod %s up: %w", podIface, err)
	}
	nb := &netlink.Neigh{LinkIndex: eth.Attrs().Index, Family: familyInet, State: netlink.NUD_PERMANENT,
		IP: res.Gateway.AsSlice(), HardwareAddr: hostMAC}
	if err := ph.NeighSet(nb); err != nil {
		return fmt.Errorf("pod gateway neighbour %s: %w", res.Gateway, err)
	}
	def := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: res.Gateway.AsSlice(), Scope: netlink.SCOPE_UNIVERSE,
		Flags: int(netlink.FLAG_ONLINK)}
	if err := ph.RouteReplace(def); err != nil {
		return fmt.Errorf("pod default route via %s: %w", res.Gateway, err)
	}
	return nil
}

// Teardown disconnects the pod and frees its address. The namespace may
// already be gone (netnsPath is then only informative); tearing down a pod
// that has no network is no error.
func (n *Network) Teardown(ctx context.Context, podUID, netnsPath string) error {
	if podUID == "" {
		return errors.New("podnet: Teardown needs a pod UID")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.fastDetachPod(vethName(podUID))
	// Deleting the host end deletes eth0 in the pod with it, and the
	// pod's route and neighbour entry.
	if err := n.deleteLink(vethName(podUID)); err != nil {
		return fmt.Errorf("pod %s (netns %s): %w", podUID, netnsPath, err)
	}
	n.dropEmptyLegacyBridge()
	if err := n.ipam.Release(podUID); err != nil {
		return fmt.Errorf("pod %s: %w", podUID, err)
	}
	n.log.Debug("pod network torn down", "pod", podUID)
	return nil
}

// Reconcile frees the address and veth of every pod not in liveUIDs: pods
// that went while the agent was down. It returns the UIDs it cleaned up.
func (n *Network) Reconcile(ctx context.Context, liveUIDs []string) ([]string, error) {
	live := make(map[string]bool, len(liveUIDs))
	for _, u := range liveUIDs {
		live[u] = true
	}
	freed, err := n.ipam.Retain(live)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, uid := range freed {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		n.fastDetachPod(vethName(uid))
		errs = append(errs, n.deleteLink(vethName(uid)))
	}
	n.dropEmptyLegacyBridge()
	if len(freed) > 0 {
		n.log.Info("freed pod network of pods that are gone", "pods", freed)
	}
	return freed, errors.Join(errs...)
}

// Allocations returns the current address table (address -> pod UID).
func (n *Network) Allocations() (map[netip.Addr]string, error) { return n.ipam.List() }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
