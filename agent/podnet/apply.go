package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetPeers makes the routes (and, for vxlan, FDB and neighbour entries) to
// other nodes match peers: entries of new peers are added, of changed peers
// replaced, of peers no longer listed removed. It compares against what is
// in the kernel, not against the previous call, so the first call after a
// restart also removes what peers that left meanwhile had. Bad peers (see
// the error) are skipped; the others are still applied.
func (n *Network) SetPeers(peers []Peer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.inited {
		return errors.New("podnet: SetPeers before Init")
	}
	good, perr := checkPeers(&n.cfg, peers)
	vx, uplink := 0, 0
	if n.cfg.Backend == BackendVXLAN {
		link, err := n.nh.LinkByName(n.cfg.VXLANDevice)
		if err != nil {
			return fmt.Errorf("vxlan %s: %w", n.cfg.VXLANDevice, err)
		}
		vx = link.Attrs().Index
	}
	if n.cfg.Backend == BackendHostGW {
		var err error
		if uplink, _, err = n.uplink(); err != nil {
			return err
		}
	}
	wantR, wantN := wantEntries(&n.cfg, good, vx, uplink)
	n.fastSetPeers(good)
	haveR, err := n.ourRoutes()
	if err != nil {
		return err
	}
	var haveN []neighEntry
	if vx != 0 {
		if haveN, err = n.vxlanNeighs(vx); err != nil {
			return err
		}
	}
	addR, delR := plan(wantR, haveR, routeKey)
	addN, delN := plan(wantN, haveN, neighKey)
	var errs []error
	if perr != nil {
		errs = append(errs, perr)
	}
	for _, r := range delR {
		if err := n.nh.RouteDel(r.route()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route to %s: %w", r.Dst, err))
		}
	}
	for _, e := range delN {
		if err := n.nh.NeighDel(e.neigh(vx)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete %s: %w", e, err))
		}
	}
	for _, e := range addN {
		if err := n.nh.NeighSet(e.neigh(vx)); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", e, err))
		}
	}
	for _, r := range addR {
		if err := n.nh.RouteReplace(r.route()); err != nil {
			errs = append(errs, fmt.Errorf("route to %s via %s: %w", r.Dst, r.Gw, err))
		}
	}
	if len(addR)+len(delR)+len(addN)+len(delN) > 0 {
		n.log.Info("peer routes updated", "peers", len(good), "routesAdded", len(addR), "routesRemoved", len(delR),
			"neighboursSet", len(addN), "neighboursRemoved", len(delN))
	}
	return errors.Join(errs...)
}

// ourRoutes lists the IPv4 main-table routes tagged with routeProtocol.
func (n *Network) ourRoutes() ([]routeEntry, error) {
	rs, err := n.nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]routeEntry, 0, len(rs))
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		gw, _ := netip.AddrFromSlice(r.Gw)
		out = append(out, routeEntry{Dst: netip.PrefixFrom(dst.Unmap(), ones), Gw: gw.Unmap(), Link: r.LinkIndex,
			OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0})
	}
	return out, nil
}

// vxlanNeighs lists the permanent neighbour and FDB entries on the VXLAN
// device: all of them are ours.
func (n *Network) vxlanNeighs(vx int) ([]neighEntry, error) {
	var out []neighEntry
	for _, fam := range []int{familyInet, familyBridge} {
		ns, err := n.nh.NeighList(vx, fam)
		if err != nil {
			return nil, fmt.Errorf("list neighbours: %w", err)
		}
		for _, e := range ns {
			if e.State&netlink.NUD_PERMANENT == 0 || e.LinkIndex != vx || e.IP == nil || len(e.HardwareAddr) != 6 {
				continue
			}
			ip, _ := netip.AddrFromSlice(e.IP)
			out = append(out, neighEntry{Family: fam, IP: ip.Unmap(), MAC: e.HardwareAddr.String()})
		}
	}
	return out, nil
}

func (r routeEntry) route() *netlink.Route {
	rt := &netlink.Route{
		Dst:       prefixNet(r.Dst),
		Gw:        r.Gw.AsSlice(),
		LinkIndex: r.Link,
		Protocol:  routeProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.OnLink {
		rt.Flags = int(netlink.FLAG_ONLINK)
	}
	return rt
}

func (e neighEntry) neigh(vx int) *netlink.Neigh {
	mac, _ := net.ParseMAC(e.MAC)
	nb := &netlink.Neigh{LinkIndex: vx, Family: e.Family, State: netlink.NUD_PERMANENT, IP: e.IP.AsSlice(), HardwareAddr: mac}
	if e.Family == familyBridge {
		nb.Flags = netlink.NTF_SELF
	}
	return nb
}

func (e neighEntry) String() string {
	if e.Family == familyBridge {
		return fmt.Sprintf("fdb entry %s -> %s", e.MAC, e.IP)
	}
	return fmt.Sprintf("neighbour %s -> %s", e.IP, e.MAC)
}

// Uninstall removes everything Init, SetPeers and Setup put in the node
// namespace outside the pods: peer routes, the pods' routes, the pod
// CIDR's unreachable route and gateway address, the VXLAN device, a legacy bridge and the
// masquerade table. The pods' veths stay (they go with the pods), without
// routes; address allocations stay on disk. For `orch agent` uninstall and
// tests.
func (n *Network) Uninstall() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopFastPath()
	n.removePodFilters()
	var errs []error
	routes, err := n.ourRoutes()
	errs = append(errs, err)
	for _, r := range routes {
		if err := n.nh.RouteDel(r.route()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route to %s: %w", r.Dst, err))
		}
	}
	pods, err := n.podProtocolRoutes()
	errs = append(errs, err)
	for _, r := range pods {
		if err := n.nh.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route to %s: %w", r.Dst, err))
		}
	}
	errs = append(errs, n.removeGatewayAddr(), n.deleteLink(n.cfg.VXLANDevice), n.deleteLink(n.cfg.Bridge), n.deleteMasquerade())
	n.inited, n.bridge = false, 0
	return errors.Join(errs...)
}
