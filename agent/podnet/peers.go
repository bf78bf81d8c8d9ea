package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
)

// Node annotations through which each agent publishes what its peers need
// (flannel keeps the same in flannel.alpha.coreos.com/backend-data and
// public-ip). The pod CIDR comes from Node.spec.podCIDR.
const (
	// AnnotationNodeIP is the node's underlay IPv4 address.
	AnnotationNodeIP = "orch.dev/node-ip"
	// AnnotationVTEPMAC is the MAC address of the node's VXLAN device.
	AnnotationVTEPMAC = "orch.dev/vtep-mac"
	// AnnotationBackend is the node's backend, for diagnosis.
	AnnotationBackend = "orch.dev/network-backend"
)

// Peer is another node as the network sees it.
type Peer struct {
	NodeName string
	PodCIDR  netip.Prefix
	NodeIP   netip.Addr
	// VTEPMAC is the peer's VXLAN device address; unused by host-gw.
	VTEPMAC net.HardwareAddr
}

// PeerFromNode builds a Peer from a Node's name, spec.podCIDR and
// annotations. A node that has not published its network yet gives an
// error naming what is missing.
func PeerFromNode(name, podCIDR string, annotations map[string]string) (Peer, error) {
	p := Peer{NodeName: name}
	var errs []error
	var err error
	if p.PodCIDR, err = netip.ParsePrefix(podCIDR); err != nil {
		errs = append(errs, fmt.Errorf("pod CIDR %q: %w", podCIDR, err))
	}
	ip, ok := annotations[AnnotationNodeIP]
	if !ok {
		errs = append(errs, fmt.Errorf("no %s annotation", AnnotationNodeIP))
	} else if p.NodeIP, err = netip.ParseAddr(ip); err != nil {
		errs = append(errs, fmt.Errorf("%s %q: %w", AnnotationNodeIP, ip, err))
	}
	if mac, ok := annotations[AnnotationVTEPMAC]; ok {
		if p.VTEPMAC, err = net.ParseMAC(mac); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", AnnotationVTEPMAC, mac, err))
		}
	}
	if len(errs) > 0 {
		return Peer{}, fmt.Errorf("node %s: %w", name, errors.Join(errs...))
	}
	return p, nil
}

// Annotations returns what this node publishes on its Node object.
func (n *Network) Annotations() map[string]string {
	a := map[string]string{AnnotationBackend: string(n.cfg.Backend)}
	if n.cfg.NodeIP.IsValid() {
		a[AnnotationNodeIP] = n.cfg.NodeIP.String()
	}
	if n.cfg.Backend == BackendVXLAN {
		a[AnnotationVTEPMAC] = n.vtepMAC.String()
	}
	return a
}

// checkPeers drops peers that cannot be routed: this node itself, pod CIDRs
// outside the cluster CIDR or overlapping this node's or another peer's,
// missing node IPs or (for vxlan) VTEP MACs. The good ones are returned
// sorted by name; the bad ones are described in the error.
func checkPeers(cfg *Config, peers []Peer) ([]Peer, error) {
	var ok []Peer
	var errs []error
	sorted := append([]Peer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].NodeName < sorted[j].NodeName })
	seen := map[string]bool{}
	for _, p := range sorted {
		if p.NodeName == cfg.NodeName {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("peer %s: "+format, append([]any{p.NodeName}, args...)...))
		}
		switch {
		case seen[p.NodeName]:
			bad("listed twice")
		case ValidatePodCIDR(cfg.ClusterCIDR, p.PodCIDR) != nil:
			bad("%v", ValidatePodCIDR(cfg.ClusterCIDR, p.PodCIDR))
		case p.PodCIDR.Overlaps(cfg.PodCIDR):
			bad("pod CIDR %s overlaps this node's %s", p.PodCIDR, cfg.PodCIDR)
		case cfg.Backend != BackendNone && !p.NodeIP.Is4():
			bad("no IPv4 node IP")
		case cfg.Backend == BackendVXLAN && len(p.VTEPMAC) != 6:
			bad("no VTEP MAC")
		default:
			clash := ""
			for _, q := range ok {
				if q.PodCIDR.Overlaps(p.PodCIDR) {
					clash = q.NodeName
				}
			}
			if clash != "" {
				bad("pod CIDR %s overlaps peer %s's", p.PodCIDR, clash)
				break
			}
			ok = append(ok, p)
		}
		seen[p.NodeName] = true
	}
	return ok, errors.Join(errs...)
}

// Kernel state for peers is planned as sets of entries keyed by what
// identifies them; an entry whose key is wanted but whose value differs is
// replaced.

// routeEntry is a route to a peer's pod CIDR.
type routeEntry struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Link   int
	OnLink bool
}

// neighEntry is a permanent neighbour (family inet: VTEP IP -> MAC) or FDB
// entry (family bridge: MAC -> remote node IP).
type neighEntry struct {
	Family int
	IP     netip.Addr
	MAC    string
}

// plan compares wanted and present entries keyed by key and returns what to
// add (or replace) and what to delete.
func plan[E comparable, K comparable](want, have []E, key func(E) K) (add, del []E) {
	haveBy := make(map[K]E, len(have))
	for _, e := range have {
		haveBy[key(e)] = e
	}
	wantBy := make(map[K]bool, len(want))
	for _, e := range want {
		wantBy[key(e)] = true
		if h, ok := haveBy[key(e)]; !ok || h != e {
			add = append(add, e)
		}
	}
	for _, e := range have {
		if !wantBy[key(e)] {
			del = append(del, e)
		}
	}
	return add, del
}

// vtepAddr is the address of a node's VXLAN device: the network address of
// its pod CIDR (as flannel), which no pod or gateway uses.
func vtepAddr(podCIDR netip.Prefix) netip.Addr { return podCIDR.Masked().Addr() }

// wantEntries is the kernel state the peers call for.
func wantEntries(cfg *Config, peers []Peer, vxlanIndex, uplinkIndex int) (routes []routeEntry, neighs []neighEntry) {
	for _, p := range peers {
		switch cfg.Backend {
		case BackendVXLAN:
			v := vtepAddr(p.PodCIDR)
			routes = append(routes, routeEntry{Dst: p.PodCIDR, Gw: v, Link: vxlanIndex, OnLink: true})
			neighs = append(neighs,
				neighEntry{Family: familyInet, IP: v, MAC: p.VTEPMAC.String()},
				neighEntry{Family: familyBridge, IP: p.NodeIP, MAC: p.VTEPMAC.String()})
		case BackendHostGW:
			routes = append(routes, routeEntry{Dst: p.PodCIDR, Gw: p.NodeIP, Link: uplinkIndex})
		}
	}
	return routes, neighs
}

func routeKey(r routeEntry) netip.Prefix { return r.Dst }

// A neighbour is keyed by its IP; an FDB entry by its MAC (one MAC, one
// remote), so a peer that changed node IP gets its entry replaced.
func neighKey(n neighEntry) neighEntry {
	if n.Family == familyBridge {
		return neighEntry{Family: n.Family, MAC: n.MAC}
	}
	return neighEntry{Family: n.Family, IP: n.IP}
}
