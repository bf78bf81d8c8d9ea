package podnet

import (
	"fmt"
	"net/netip"
)

// Nodes set up before pods were routed kept them on a bridge (Config.Bridge,
// orch0) that held the gateway as <gateway>/<pod CIDR length>, each pod's
// host veth a port in hairpin mode and the pod's eth0 an address of the pod
// CIDR's length. Such pods keep running across an upgrade: while the bridge
// has ports, Init keeps it with its address and turns on proxy ARP on it, so
// the bridged pods, which take every pod CIDR address for on-link, get the
// bridge's MAC for the routed pods' addresses and reach them through the
// node. Setup moves a bridged pod to a routed veth when it is called for it
// again (the agent does so for every running pod when it starts), and the
// bridge goes as soon as its last port does.

// legacyBridgeSysctls are what the bridge's pods need: proxy ARP for the
// routed pods' addresses, answered at once (not after proxy_delay), and
// bridged frames through the IP hooks so Service DNAT applies between pods
// on the bridge (it exists only with br_netfilter loaded).
func legacyBridgeSysctls(name string) []sysctl {
	return []sysctl{
		{"net/ipv4/conf/" + name + "/proxy_arp", "1", false},
		{"net/ipv4/neigh/" + name + "/proxy_delay", "0", false},
		{"net/bridge/bridge-nf-call-iptables", "1", true},
	}
}

// adoptLegacyBridge keeps the bridge of an earlier version while pods are
// plugged into it and deletes it when none is. It returns the bridge's index
// (0 when there is none).
func (n *Network) adoptLegacyBridge(mtu int) (int, error) {
	name := n.cfg.Bridge
	link, err := n.nh.LinkByName(name)
	if isNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return 0, fmt.Errorf("bridge %s: a %s link of that name exists", name, link.Type())
	}
	ports, err := n.bridgePorts(link.Attrs().Index)
	if err != nil {
		return 0, err
	}
	if ports == 0 {
		if err := n.deleteLink(name); err != nil {
			return 0, err
		}
		n.log.Info("removed the legacy pod bridge: no pods on it", "bridge", name)
		return 0, nil
	}
	if link.Attrs().MTU != mtu {
		if err := n.nh.LinkSetMTU(link, mtu); err != nil {
			return 0, fmt.Errorf("bridge %s mtu %d: %w", name, mtu, err)
		}
	}
	gw := netip.PrefixFrom(gatewayOf(n.cfg.PodCIDR), n.cfg.PodCIDR.Bits())
	if err := n.ensureOnlyAddr(link, gw); err != nil {
		return 0, fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := n.nh.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("bridge %s up: %w", name, err)
	}
	if err := n.writeSysctls(legacyBridgeSysctls(name)); err != nil {
		return 0, fmt.Errorf("bridge %s: %w", name, err)
	}
	n.log.Info("keeping the legacy pod bridge for the pods still on it", "bridge", name, "pods", ports)
	return link.Attrs().Index, nil
}

// bridgePorts counts the links whose master is the bridge.
func (n *Network) bridgePorts(bridge int) (int, error) {
	links, err := n.nh.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	ports := 0
	for _, l := range links {
		if l.Attrs().MasterIndex == bridge {
			ports++
		}
	}
	return ports, nil
}

// dropEmptyLegacyBridge deletes the legacy bridge once its last pod left.
// Failures are logged: the bridge is then tried again with the next pod
// that leaves, or by the next Init.
func (n *Network) dropEmptyLegacyBridge() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bridge == 0 {
		return
	}
	ports, err := n.bridgePorts(n.bridge)
	if err == nil && ports == 0 {
		err = n.deleteLink(n.cfg.Bridge)
	}
	if err != nil {
		n.log.Warn("removing the legacy pod bridge", "bridge", n.cfg.Bridge, "err", err)
		return
	}
	if ports == 0 {
		n.bridge = 0
		n.log.Info("removed the legacy pod bridge: its last pod left", "bridge", n.cfg.Bridge)
	}
}
