package podnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The node's side of its pod CIDR, besides each pod's /32 route:
//
//	lo:    <gateway>/32, label lo:orch
//	route: unreachable <pod CIDR> metric unreachableMetric
//
// The gateway on lo makes the pods' next hop an address of the node (pods
// reach their node at it, as at a bridge's address before), and, lo being
// the first link of every namespace, the source the kernel picks when a
// route's device has no address of its own: the node's traffic to its pods
// and what it masquerades towards them (NodePorts, a pod reaching itself
// through a Service) come from the gateway, as they came from the bridge.
// The unreachable route answers the pod CIDR's free addresses with ICMP
// unreachable instead of sending them along the node's default route.

// gatewayLabel marks the gateway address on lo as this package's.
const gatewayLabel = "lo:orch"

// ensureGatewayAddr puts the gateway on lo and removes gateways of pod
// CIDRs from an earlier life of the node.
func (n *Network) ensureGatewayAddr() error {
	lo, err := n.nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	want := netip.PrefixFrom(gatewayOf(n.cfg.PodCIDR), 32)
	addrs, err := n.nh.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	have := false
	for _, a := range addrs {
		if a.Label != gatewayLabel {
			continue
		}
		ones, _ := a.Mask.Size()
		ip, _ := netip.AddrFromSlice(a.IP)
		if netip.PrefixFrom(ip.Unmap(), ones) == want {
			have = true
			continue
		}
		if err := n.nh.AddrDel(lo, &a); err != nil {
			return fmt.Errorf("remove stale gateway %s from lo: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	if err := n.nh.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(want), Label: gatewayLabel}); err != nil {
		return fmt.Errorf("gateway %s on lo: %w", want, err)
	}
	return nil
}

// removeGatewayAddr removes the gateway (any of ours) from lo.
func (n *Network) removeGatewayAddr() error {
	lo, err := n.nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	addrs, err := n.nh.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	var errs []error
	for _, a := range addrs {
		if a.Label == gatewayLabel {
			if err := n.nh.AddrDel(lo, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("remove gateway %s from lo: %w", a.IPNet, err))
			}
		}
	}
	return errors.Join(errs...)
}

// podCIDRRoute is `unreachable <pod CIDR> metric unreachableMetric`: the
// pod CIDR's addresses that no pod holds (its gateway included) are
// answered with ICMP unreachable instead of following the node's default
// route out of the node.
func (n *Network) podCIDRRoute(cidr netip.Prefix) *netlink.Route {
	return &netlink.Route{Dst: prefixNet(cidr), Type: unix.RTN_UNREACHABLE, Priority: unreachableMetric,
		Protocol: podRouteProtocol, Table: unix.RT_TABLE_MAIN}
}

// ensurePodCIDRRoute installs the pod CIDR's unreachable route and removes
// those of pod CIDRs from an earlier life of the node.
func (n *Network) ensurePodCIDRRoute() error {
	stale, err := n.podCIDRRoutes()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range stale {
		if p == n.cfg.PodCIDR {
			continue
		}
		if err := n.nh.RouteDel(n.podCIDRRoute(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route to %s: %w", p, err))
		}
	}
	if err := n.nh.RouteReplace(n.podCIDRRoute(n.cfg.PodCIDR)); err != nil {
		errs = append(errs, fmt.Errorf("unreachable route to %s: %w", n.cfg.PodCIDR, err))
	}
	return errors.Join(errs...)
}

// podCIDRRoutes lists the destinations of the unreachable routes tagged
// with podRouteProtocol.
func (n *Network) podCIDRRoutes() ([]netip.Prefix, error) {
	rs, err := n.podProtocolRoutes()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range rs {
		if r.Type != unix.RTN_UNREACHABLE || r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

// podProtocolRoutes lists the main table's routes tagged with
// podRouteProtocol: the pods' /32 routes and the pod CIDR's unreachable one.
func (n *Network) podProtocolRoutes() ([]netlink.Route, error) {
	rs, err := n.nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: podRouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list pod routes: %w", err)
	}
	return rs, nil
}
