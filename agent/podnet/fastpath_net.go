package podnet

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// startFastPath loads the fast path (fastpath.go) for the VXLAN device
// and uplink that Init settled on and attaches it to them and to every pod
// veth of the node (pods set up by an earlier run of the agent among
// them). A kernel without what it needs leaves the network on the normal
// path, with a log line. n.mu is held.
func (n *Network) startFastPath(vxlan, uplink int) {
	if n.cfg.NoFastPath || n.cfg.Backend != BackendVXLAN {
		n.stopFastPath()
		n.removePodFilters()
		return
	}
	if n.fast != nil && n.fastAt == [2]int{vxlan, uplink} {
		return
	}
	n.stopFastPath()
	if err := n.loadFastPath(vxlan, uplink); err != nil {
		n.log.Warn("pod fast path unavailable: pod traffic takes the kernel's normal path", "err", err)
	}
}

func (n *Network) loadFastPath(vxlan, uplink int) error {
	ids, err := btfFuncIDs(kernelBTF, "bpf_skb_ct_lookup", "bpf_ct_release")
	if err != nil {
		return err
	}
	p := fastPathParams{
		vxlan: vxlan, uplink: uplink, nodeIP: n.cfg.NodeIP.As4(),
		port: uint16(n.cfg.VXLANPort), vni: uint32(n.cfg.VNI),
		ctLookup: ids["bpf_skb_ct_lookup"], ctRelease: ids["bpf_ct_release"],
	}
	copy(p.vtepMAC[:], n.vtepMAC)
	cluster := n.cfg.ClusterCIDR.Masked()
	p.cluster = cluster.Addr().As4()
	copy(p.clusterMask[:], net.CIDRMask(cluster.Bits(), 32))
	f, err := loadFastPath(p, n.nh)
	if err != nil {
		return err
	}
	veths, err := n.podVeths()
	if err == nil {
		err = n.inNodeNS(func() error {
			if err := f.attachDevice(n.cfg.VXLANDevice, vxlan, f.fwd); err != nil {
				return err
			}
			return f.attachDevice("uplink", uplink, f.decap)
		})
	}
	for _, l := range veths {
		if err == nil {
			err = f.attachPod(l.Attrs().Name, l.Attrs().Index)
		}
	}
	if err != nil {
		_ = f.Close()
		n.removePodFilters()
		return err
	}
	n.fast, n.fastAt = f, [2]int{vxlan, uplink}
	n.log.Info("pod fast path attached", "vxlan", n.cfg.VXLANDevice, "pods", len(veths))
	return nil
}

// removePodFilters takes orch_fwd off every pod veth (the fast path off
// or failed to start: a filter left by an earlier run would keep working
// with that run's maps). n.mu is held.
func (n *Network) removePodFilters() {
	veths, err := n.podVeths()
	if err == nil {
		for _, l := range veths {
			err = errors.Join(err, removePodFilter(n.nh, l.Attrs().Index))
		}
	}
	if err != nil {
		n.log.Warn("pod fast path: remove filters from pod veths", "err", err)
	}
}

// stopFastPath detaches and drops the fast path. n.mu is held.
func (n *Network) stopFastPath() {
	if n.fast == nil {
		return
	}
	if err := n.fast.Close(); err != nil {
		n.log.Warn("pod fast path: detach", "err", err)
	}
	n.fast = nil
}

// podVeths lists the host ends of this node's pod veths: the links of the
// pods' /32 routes.
func (n *Network) podVeths() ([]netlink.Link, error) {
	routes, err := n.podProtocolRoutes()
	if err != nil {
		return nil, err
	}
	veth := map[int]bool{}
	for _, r := range routes {
		if r.LinkIndex > 0 && r.Type == unix.RTN_UNICAST {
			veth[r.LinkIndex] = true
		}
	}
	if len(veth) == 0 {
		return nil, nil
	}
	all, err := n.nh.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var links []netlink.Link
	for _, l := range all {
		if veth[l.Attrs().Index] {
			links = append(links, l)
		}
	}
	return links, nil
}

// fastPath is the fast path if it runs.
func (n *Network) fastPath() *fastPath {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fast
}

// fastAttachPod puts the fast path on a pod's host veth. A failure only
// costs the pod speed, so it is logged.
func (n *Network) fastAttachPod(host string) {
	f := n.fastPath()
	if f == nil {
		return
	}
	l, err := n.nh.LinkByName(host)
	if err == nil {
		err = f.attachPod(host, l.Attrs().Index)
	}
	if err != nil {
		n.log.Warn("pod fast path: pod stays on the normal path", "veth", host, "err", err)
	}
}

// fastDetachPod takes a pod's host veth out of the fast path before the
// veth goes, so that its index, once reused, is not taken for a pod's.
func (n *Network) fastDetachPod(host string) {
	f := n.fastPath()
	if f == nil {
		return
	}
	if err := f.detach(host); err != nil {
		n.log.Warn("pod fast path: detach pod veth", "veth", host, "err", err)
	}
}

// fastSetPeers gives the fast path the peers' VTEPs. n.mu is held.
func (n *Network) fastSetPeers(peers []Peer) {
	if n.fast == nil {
		return
	}
	if err := n.fast.setPeers(peers); err != nil {
		n.log.Warn("pod fast path: peers", "err", err)
	}
}
