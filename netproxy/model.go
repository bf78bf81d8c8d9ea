package netproxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// endpoint is one backend of a service port.
type endpoint struct {
	IP    netip.Addr
	Port  uint16
	Local bool // runs on this node
}

func (e endpoint) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// servicePort is everything the rules of one port of one Service depend on.
// Two equal servicePorts render to identical nftables objects, which is what
// makes syncs incremental.
type servicePort struct {
	Name        string // "namespace/name/proto/port", unique, used in object names
	Proto       uint8  // IPPROTO_TCP, _UDP or _SCTP
	Port        uint16
	ClusterIPs  []netip.Addr
	NodePort    uint16
	LoadBalance bool         // type LoadBalancer: answer on every node address at Port (ServiceLB)
	ExternalIPs []netip.Addr // spec.externalIPs and status.loadBalancer.ingress IPs
	Affinity    time.Duration
	ExtLocal    bool // externalTrafficPolicy Local
	IntLocal    bool // internalTrafficPolicy Local
	// Endpoints are the ready endpoints (or, if none is ready, the serving
	// terminating ones), sorted.
	Endpoints []endpoint
	// LocalEndpoints apply the same rule to the endpoints on this node; only
	// computed when a Local traffic policy needs them.
	LocalEndpoints []endpoint
}

func (sp *servicePort) hasExternal() bool {
	return sp.NodePort != 0 || sp.LoadBalance || len(sp.ExternalIPs) > 0
}

// allEndpoints is the union of Endpoints and LocalEndpoints: every endpoint
// that needs a chain.
func (sp *servicePort) allEndpoints() []endpoint {
	out := slices.Clone(sp.Endpoints)
	for _, e := range sp.LocalEndpoints {
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

func protoNumber(p v1.Protocol) (uint8, bool) {
	switch p {
	case v1.ProtocolTCP, "":
		return 6, true
	case v1.ProtocolUDP:
		return 17, true
	case v1.ProtocolSCTP:
		return 132, true
	}
	return 0, false
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return fmt.Sprint(p)
}

// servicePorts computes the service ports of svc given its EndpointSlices.
// Unsupported parts (IPv6 addresses, unknown protocols) are skipped and
// reported in the returned warnings; they never fail the whole Service.
func servicePorts(svc *v1.Service, slices_ []*discoveryv1.EndpointSlice, nodeName string) ([]servicePort, []string) {
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		return nil, nil
	}
	var warnings []string
	clusterIPs := parseIPv4s(svc.Spec.ClusterIPs, &warnings, "clusterIP")
	if len(svc.Spec.ClusterIPs) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != v1.ClusterIPNone {
		clusterIPs = parseIPv4s([]string{svc.Spec.ClusterIP}, &warnings, "clusterIP")
	}
	if len(clusterIPs) == 0 {
		// Headless or not yet allocated: nothing to load-balance.
		return nil, warnings
	}
	extIPs := parseIPv4s(svc.Spec.ExternalIPs, &warnings, "externalIP")
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP != "" {
				extIPs = append(extIPs, parseIPv4s([]string{ing.IP}, &warnings, "loadBalancer ingress")...)
			}
		}
	}
	slices.SortFunc(extIPs, netip.Addr.Compare)
	extIPs = slices.Compact(extIPs)

	var affinity time.Duration
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		secs := int32(v1.DefaultClientIPServiceAffinitySeconds)
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			secs = *c.ClientIP.TimeoutSeconds
		}
		if secs > 0 {
			affinity = time.Duration(secs) * time.Second
		}
	}
	extLocal := svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal &&
		(svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer || len(extIPs) > 0)
	intLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal

	var out []servicePort
	for _, p := range svc.Spec.Ports {
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			warnings = append(warnings, fmt.Sprintf("port %q: unsupported protocol %q", p.Name, p.Protocol))
			continue
		}
		if p.Port <= 0 || p.Port > 65535 {
			warnings = append(warnings, fmt.Sprintf("port %q: invalid port %d", p.Name, p.Port))
			continue
		}
		sp := servicePort{
			Name:        fmt.Sprintf("%s/%s/%s/%d", svc.Namespace, svc.Name, protoName(proto), p.Port),
			Proto:       proto,
			Port:        uint16(p.Port),
			ClusterIPs:  clusterIPs,
			ExternalIPs: extIPs,
			Affinity:    affinity,
			ExtLocal:    extLocal,
			IntLocal:    intLocal,
		}
		if (svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer) && p.NodePort > 0 && p.NodePort <= 65535 {
			sp.NodePort = uint16(p.NodePort)
		}
		sp.LoadBalance = svc.Spec.Type == v1.ServiceTypeLoadBalancer
		sp.Endpoints, sp.LocalEndpoints = pickEndpoints(slices_, p.Name, proto, nodeName, sp.ExtLocal || sp.IntLocal)
		out = append(out, sp)
	}
	return out, warnings
}

func parseIPv4s(in []string, warnings *[]string, what string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		if s == "" || s == v1.ClusterIPNone {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			*warnings = append(*warnings, fmt.Sprintf("%s %q: %v", what, s, err))
			continue
		}
		if !a.Is4() {
			if !a.Is4In6() {
				continue // IPv6 families are not programmed by this (ip family) table.
			}
			a = a.Unmap()
		}
		out = append(out, a)
	}
	return out
}

type candidate struct {
	ep                   endpoint
	ready, serving, term bool
}

// pickEndpoints selects the endpoints of the slice port named portName. Ready
// endpoints are used; when there is none, serving+terminating ones are (as
// upstream's ProxyTerminatingEndpoints). With wantLocal, the same rule is
// applied separately to the endpoints on this node, returned second.
func pickEndpoints(sl []*discoveryv1.EndpointSlice, portName string, proto uint8, nodeName string, wantLocal bool) (all, local []endpoint) {
	seen := map[netip.AddrPort]int{}
	var cands []candidate
	for _, s := range sl {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32 = -1
		for _, p := range s.Ports {
			pp, ok := protoNumber(ptrOr(p.Protocol, v1.ProtocolTCP))
			if ok && pp == proto && ptrOr(p.Name, "") == portName && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || !a.Unmap().Is4() {
				continue
			}
			c := candidate{
				ep:      endpoint{IP: a.Unmap(), Port: uint16(port), Local: e.NodeName != nil && *e.NodeName == nodeName},
				ready:   ptrOr(e.Conditions.Ready, true),
				serving: ptrOr(e.Conditions.Serving, ptrOr(e.Conditions.Ready, true)),
				term:    ptrOr(e.Conditions.Terminating, false),
			}
			key := netip.AddrPortFrom(c.ep.IP, c.ep.Port)
			if i, dup := seen[key]; dup {
				// The same endpoint in two slices (during a move): keep the best view.
				o := &cands[i]
				o.ready = o.ready || c.ready
				o.serving = o.serving || c.serving
				o.term = o.term && c.term
				o.ep.Local = o.ep.Local || c.ep.Local
				continue
			}
			seen[key] = len(cands)
			cands = append(cands, c)
		}
	}
	pick := func(onlyLocal bool) []endpoint {
		var ready, fallback []endpoint
		for _, c := range cands {
			if onlyLocal && !c.ep.Local {
				continue
			}
			switch {
			case c.ready:
				ready = append(ready, c.ep)
			case c.serving && c.term:
				fallback = append(fallback, c.ep)
			}
		}
		out := ready
		if len(out) == 0 {
			out = fallback
		}
		slices.SortFunc(out, func(a, b endpoint) int {
			return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port))
		})
		return out
	}
	all = pick(false)
	if wantLocal {
		local = pick(true)
	}
	return all, local
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// serviceKeyOf returns "namespace/name" of the Service an EndpointSlice
// belongs to, or "" if it is not managed for a Service.
func serviceKeyOf(s *discoveryv1.EndpointSlice) string {
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return ""
	}
	return s.Namespace + "/" + name
}

func splitKey(key string) (ns, name string) {
	ns, name, _ = strings.Cut(key, "/")
	return ns, name
}
