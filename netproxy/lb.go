package netproxy

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// LoadBalancerIngress computes status.loadBalancer.ingress for a
// LoadBalancer Service the way k3s' ServiceLB does: the Service answers on
// every node's address, so the ingress list is the nodes' addresses —
// ExternalIPs when any node has one, otherwise InternalIPs. Nodes that are
// not Ready or are unschedulable-and-being-deleted are skipped. The result is
// sorted and deduplicated so that writers can compare it with the current
// status to avoid needless updates.
func LoadBalancerIngress(nodes []*v1.Node) []v1.LoadBalancerIngress {
	var internal, external []netip.Addr
	for _, n := range nodes {
		if n.DeletionTimestamp != nil || !nodeReady(n) {
			continue
		}
		for _, a := range n.Status.Addresses {
			ip, err := netip.ParseAddr(a.Address)
			if err != nil {
				continue
			}
			switch a.Type {
			case v1.NodeExternalIP:
				external = append(external, ip.Unmap())
			case v1.NodeInternalIP:
				internal = append(internal, ip.Unmap())
			}
		}
	}
	ips := internal
	if len(external) > 0 {
		ips = external
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	out := make([]v1.LoadBalancerIngress, 0, len(ips))
	mode := v1.LoadBalancerIPModeVIP
	for _, ip := range ips {
		out = append(out, v1.LoadBalancerIngress{IP: ip.String(), IPMode: &mode})
	}
	return out
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}
