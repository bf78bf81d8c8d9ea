package netproxy

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// flowFilter selects UDP conntrack entries that would keep sending packets
// to a place that is no longer right. UDP has no connection end, so without
// this a client keeps talking to a deleted endpoint (or to nothing) for as
// long as it keeps sending.
type flowFilter struct {
	// Endpoint, when valid: flows that were DNATed to it (reply source).
	Endpoint netip.AddrPort
	// Dst, when valid: flows to this address and DstPort that were NOT
	// DNATed (sent before the Service had endpoints).
	Dst     netip.Addr
	DstPort uint16
	// AnyLocalPort, when non-zero: un-DNATed flows to this port on any
	// address (a NodePort or LoadBalancer port that gained endpoints).
	AnyLocalPort uint16
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f flowFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	if fl.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	if f.Endpoint.IsValid() {
		a, ok := netip.AddrFromSlice(fl.Reverse.SrcIP)
		return ok && a.Unmap() == f.Endpoint.Addr() && fl.Reverse.SrcPort == f.Endpoint.Port()
	}
	unNATed := fl.Reverse.SrcIP.Equal(fl.Forward.DstIP) && fl.Reverse.SrcPort == fl.Forward.DstPort
	if !unNATed {
		return false
	}
	if f.AnyLocalPort != 0 {
		return fl.Forward.DstPort == f.AnyLocalPort
	}
	a, ok := netip.AddrFromSlice(fl.Forward.DstIP)
	return ok && a.Unmap() == f.Dst && fl.Forward.DstPort == f.DstPort
}

// staleFlows lists the UDP flows to delete when a Service's ports go from
// old to new: flows DNATed to endpoints that went away, and un-DNATed flows
// to service addresses that just gained endpoints.
func staleFlows(old, new []servicePort, full bool) []flowFilter {
	var out []flowFilter
	newByName := map[string]*servicePort{}
	for i := range new {
		newByName[new[i].Name] = &new[i]
	}
	oldByName := map[string]*servicePort{}
	for i := range old {
		oldByName[old[i].Name] = &old[i]
	}
	for i := range old {
		o := &old[i]
		if o.Proto != unix.IPPROTO_UDP {
			continue
		}
		keep := map[endpoint]bool{}
		if n := newByName[o.Name]; n != nil {
			for _, e := range n.allEndpoints() {
				keep[endpoint{IP: e.IP, Port: e.Port}] = true
			}
		}
		for _, e := range o.allEndpoints() {
			if !keep[endpoint{IP: e.IP, Port: e.Port}] {
				out = append(out, flowFilter{Endpoint: netip.AddrPortFrom(e.IP, e.Port)})
			}
		}
	}
	for i := range new {
		n := &new[i]
		if n.Proto != unix.IPPROTO_UDP || len(n.Endpoints) == 0 {
			continue
		}
		if o := oldByName[n.Name]; o != nil && len(o.Endpoints) > 0 && !full {
			continue
		}
		for _, ip := range n.ClusterIPs {
			out = append(out, flowFilter{Dst: ip, DstPort: n.Port})
		}
		for _, ip := range n.ExternalIPs {
			out = append(out, flowFilter{Dst: ip, DstPort: n.Port})
		}
		if n.NodePort != 0 {
			out = append(out, flowFilter{AnyLocalPort: n.NodePort})
		}
		if n.LoadBalance {
			out = append(out, flowFilter{AnyLocalPort: n.Port})
		}
	}
	return out
}

// conntrackCleaner deletes conntrack flows.
type conntrackCleaner interface {
	DeleteFlows(filters []flowFilter) (uint, error)
	Close() error
}

// netlinkConntrack deletes flows through a conntrack netlink socket opened in
// the proxy's network namespace.
type netlinkConntrack struct {
	h *netlink.Handle
}

func newNetlinkConntrack(nsFd int) (*netlinkConntrack, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if nsFd >= 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(nsFd), unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("conntrack netlink socket: %w", err)
	}
	return &netlinkConntrack{h: h}, nil
}

func (c *netlinkConntrack) DeleteFlows(filters []flowFilter) (uint, error) {
	if len(filters) == 0 {
		return 0, nil
	}
	fs := make([]netlink.CustomConntrackFilter, len(filters))
	for i, f := range filters {
		fs[i] = f
	}
	n, err := c.h.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, fs...)
	if err != nil {
		return n, fmt.Errorf("delete conntrack flows: %w", err)
	}
	return n, nil
}

func (c *netlinkConntrack) Close() error {
	c.h.Close()
	return nil
}
