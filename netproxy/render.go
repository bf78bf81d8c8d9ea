package netproxy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables/expr"
)

// Names of the table's fixed objects.
const (
	mapServiceIPs      = "service-ips"           // ipv4_addr . inet_proto . inet_service : verdict
	mapNodePorts       = "service-nodeports"     // inet_proto . inet_service : verdict (on local addresses)
	mapNoEndpointIPs   = "no-endpoint-services"  // like service-ips, for services without endpoints
	mapNoEndpointPorts = "no-endpoint-nodeports" // like service-nodeports, for services without endpoints
	setHairpin         = "hairpin"               // ipv4_addr . ipv4_addr: {ip . ip} for every endpoint ip

	chainServices      = "services"
	chainMarkMasq      = "mark-for-masquerade"
	chainReject        = "reject-chain"
	chainEndpointCheck = "endpoints-check"
)

// verdict is a map element's or rule's verdict.
type verdict struct {
	Kind  expr.VerdictKind
	Chain string
}

// ruleSpec is one rule: its expressions.
type ruleSpec struct {
	Exprs []expr.Any
}

// chainSpec is a regular (non-base) chain and its rules.
type chainSpec struct {
	Name  string
	Rules []ruleSpec
}

// setSpec is a per-endpoint affinity set: `type ipv4_addr; flags dynamic,timeout`.
type setSpec struct {
	Name    string
	Timeout time.Duration
}

// elemKey names one element of one of the four maps.
type elemKey struct {
	Map string
	Key string
}

// plan is what one Service renders to: its chains, sets and map elements,
// and the endpoint addresses that need hairpin masquerade.
type plan struct {
	Chains  []chainSpec
	Sets    []setSpec
	Elems   map[elemKey]verdict
	Hairpin []netip.Addr
}

// renderer turns servicePorts into plans.
type renderer struct {
	clusterCIDR netip.Prefix
	mark        uint32
}

func svcChain(sp *servicePort) string { return "svc-" + sp.Name }
func locChain(sp *servicePort) string { return "loc-" + sp.Name }
func extChain(sp *servicePort) string { return "ext-" + sp.Name }
func epChain(sp *servicePort, e endpoint) string {
	return "ep-" + sp.Name + "/" + e.String()
}
func affSet(sp *servicePort, e endpoint) string {
	return fmt.Sprintf("aff-%s/%s/%d", sp.Name, e, int64(sp.Affinity/time.Second))
}

// render returns the plan of all ports of one Service.
func (r *renderer) render(ports []servicePort) plan {
	p := plan{Elems: map[elemKey]verdict{}}
	for i := range ports {
		r.renderPort(&p, &ports[i])
	}
	return p
}

func (r *renderer) renderPort(p *plan, sp *servicePort) {
	noEndpoints := verdictDrop
	if len(sp.Endpoints) == 0 {
		// No endpoint anywhere: refuse the connection rather than black-hole it.
		noEndpoints = gotoChain(chainReject)
	}
	internal, external := noEndpoints, noEndpoints

	// Hairpin (a pod reaching itself through the Service) is masqueraded
	// by one rule in postrouting that matches `ip saddr . ip daddr` against
	// {ip . ip} of every endpoint: no per-endpoint rule.
	for _, e := range sp.allEndpoints() {
		if !slices.Contains(p.Hairpin, e.IP) {
			p.Hairpin = append(p.Hairpin, e.IP)
		}
	}
	// Endpoint chains, only needed to remember the client for affinity;
	// otherwise the balancing rules DNAT directly.
	if sp.Affinity > 0 {
		for _, e := range sp.allEndpoints() {
			set := affSet(sp, e)
			p.Sets = append(p.Sets, setSpec{Name: set, Timeout: sp.Affinity})
			p.Chains = append(p.Chains, chainSpec{Name: epChain(sp, e), Rules: []ruleSpec{
				{Exprs: updateAffinity(set)},
				{Exprs: append(matchL4(sp.Proto), dnatTo(e)...)},
			}})
		}
	}

	// Cluster-wide chain.
	if len(sp.Endpoints) > 0 {
		c := chainSpec{Name: svcChain(sp)}
		if r.clusterCIDR.IsValid() {
			// Traffic from outside the pod network (the node itself, other
			// hosts) is masqueraded so replies come back through this node.
			c.Rules = append(c.Rules, ruleSpec{Exprs: append(matchPrefix(loadSaddr(), r.clusterCIDR, true), verdictExpr(jumpChain(chainMarkMasq)))})
		}
		c.Rules = append(c.Rules, r.balance(sp, sp.Endpoints)...)
		p.Chains = append(p.Chains, c)
		internal, external = gotoChain(c.Name), gotoChain(c.Name)
	}
	// Node-local chain, for the Local traffic policies.
	local := verdictDrop
	if (sp.IntLocal || sp.ExtLocal) && len(sp.LocalEndpoints) > 0 {
		c := chainSpec{Name: locChain(sp), Rules: r.balance(sp, sp.LocalEndpoints)}
		p.Chains = append(p.Chains, c)
		local = gotoChain(c.Name)
	}
	if sp.IntLocal && len(sp.Endpoints) > 0 {
		internal = local
	}

	// External chain: NodePort, LoadBalancer, externalIPs.
	if sp.hasExternal() && len(sp.Endpoints) > 0 {
		c := chainSpec{Name: extChain(sp)}
		cluster := verdictExpr(gotoChain(svcChain(sp)))
		if !sp.ExtLocal {
			c.Rules = append(c.Rules,
				ruleSpec{Exprs: []expr.Any{verdictExpr(jumpChain(chainMarkMasq))}},
				ruleSpec{Exprs: []expr.Any{cluster}})
		} else {
			if r.clusterCIDR.IsValid() {
				// Pods reaching an external address of the Service stay inside.
				c.Rules = append(c.Rules, ruleSpec{Exprs: append(matchPrefix(loadSaddr(), r.clusterCIDR, false), cluster)})
			}
			// The node itself: masquerade and use any endpoint.
			c.Rules = append(c.Rules,
				ruleSpec{Exprs: append(fibLocal(false), verdictExpr(jumpChain(chainMarkMasq)))},
				ruleSpec{Exprs: append(fibLocal(false), cluster)},
				// Everyone else keeps their source address and only reaches
				// endpoints on this node (or is dropped).
				ruleSpec{Exprs: []expr.Any{verdictExpr(local)}})
		}
		p.Chains = append(p.Chains, c)
		external = gotoChain(c.Name)
	}

	// Map elements.
	add := func(m, key string, v verdict) {
		if v == gotoChain(chainReject) || v == verdictDrop {
			// Services without (usable) endpoints go to the filter-hook maps.
			switch m {
			case mapServiceIPs:
				m = mapNoEndpointIPs
			case mapNodePorts:
				m = mapNoEndpointPorts
			}
		}
		p.Elems[elemKey{Map: m, Key: key}] = v
	}
	for _, ip := range sp.ClusterIPs {
		add(mapServiceIPs, keyIPProtoPort(ip, sp.Proto, sp.Port), internal)
	}
	for _, ip := range sp.ExternalIPs {
		add(mapServiceIPs, keyIPProtoPort(ip, sp.Proto, sp.Port), external)
	}
	if sp.NodePort != 0 {
		add(mapNodePorts, keyProtoPort(sp.Proto, sp.NodePort), external)
	}
	if sp.LoadBalance {
		add(mapNodePorts, keyProtoPort(sp.Proto, sp.Port), external)
	}
}

// balance returns the rules that spread new connections over eps: first the
// affinity lookups (a client seen recently goes to the same endpoint), then a
// uniform random choice as a cascade —
//
//	numgen random mod N == 0 meta l4proto tcp dnat to ep0
//	numgen random mod N-1 == 0 meta l4proto tcp dnat to ep1
//	...
//	meta l4proto tcp dnat to epN-1
//
// where each endpoint is picked with probability 1/N (with affinity, the
// DNAT is a goto to the endpoint's chain, which also records the client).
// A cascade is used instead of `numgen random mod N vmap { ... }` because
// every such vmap is an anonymous set, and the kernel looks sets up by
// walking lists of them: with 10,000 Services a full sync became quadratic
// (minutes). Only a connection's first packet traverses these rules.
func (r *renderer) balance(sp *servicePort, eps []endpoint) []ruleSpec {
	var rules []ruleSpec
	to := func(e endpoint) []expr.Any {
		if sp.Affinity > 0 {
			return []expr.Any{verdictExpr(gotoChain(epChain(sp, e)))}
		}
		return append(matchL4(sp.Proto), dnatTo(e)...)
	}
	if sp.Affinity > 0 {
		for _, e := range eps {
			rules = append(rules, ruleSpec{Exprs: append(inAffinity(affSet(sp, e)), to(e)...)})
		}
	}
	for i, e := range eps {
		left := len(eps) - i
		if left == 1 {
			rules = append(rules, ruleSpec{Exprs: to(e)})
			break
		}
		rules = append(rules, ruleSpec{Exprs: append(randomOneIn(uint32(left)), to(e)...)})
	}
	return rules
}
