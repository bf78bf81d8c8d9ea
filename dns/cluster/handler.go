package cluster

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// Name is the plugin's directive in a Corefile.
const Name = "orch"

// DefaultTTL is the TTL of every cluster record (Kubernetes DNS spec).
const DefaultTTL = 5

// Resolver looks a name up through the rest of the server; the plugin uses it
// to chase an ExternalName's CNAME target.
type Resolver interface {
	Lookup(ctx context.Context, state request.Request, name string, qtype uint16) (*dns.Msg, error)
}

// Handler is the `orch` plugin: it answers the cluster zone from an Index,
// the reverse zones for cluster addresses, and node names; everything else
// goes to the next plugin.
type Handler struct {
	Next plugin.Handler
	// Zone is the cluster domain, lower case and fully qualified ("cluster.local.").
	Zone string
	// ReverseZones are the reverse zones it answers PTR records in (fully
	// qualified); unknown addresses fall through to the next plugin.
	ReverseZones []string
	// NS are the addresses of the cluster DNS service: ns.dns.<zone>.
	NS []netip.Addr
	// TTL of every record.
	TTL uint32
	// Index holds the records.
	Index *Index
	// Upstream chases ExternalName targets; nil answers the CNAME alone.
	Upstream Resolver
}

// Name implements plugin.Handler.
func (h *Handler) Name() string { return Name }

// ServeDNS implements plugin.Handler.
func (h *Handler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	state := request.Request{W: w, Req: r}
	qname := state.Name() // lower case
	if state.QClass() != dns.ClassINET && state.QClass() != dns.ClassANY {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	switch {
	case dns.IsSubDomain(h.Zone, qname):
		m := h.cluster(ctx, state, qname)
		return writeMsg(w, m)
	case h.isReverse(qname):
		if m := h.reverse(state, qname); m != nil {
			return writeMsg(w, m)
		}
	default:
		if m := h.node(state, qname); m != nil {
			return writeMsg(w, m)
		}
	}
	return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
}

func writeMsg(w dns.ResponseWriter, m *dns.Msg) (int, error) {
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	return m.Rcode, nil
}

func (h *Handler) isReverse(qname string) bool {
	for _, z := range h.ReverseZones {
		if dns.IsSubDomain(z, qname) {
			return true
		}
	}
	return false
}

func (h *Handler) reply(state request.Request) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(state.Req)
	m.Authoritative = true
	m.RecursionAvailable = true
	return m
}

func (h *Handler) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: h.TTL}
}

func (h *Handler) soa() dns.RR {
	return &dns.SOA{
		Hdr:     h.hdr(h.Zone, dns.TypeSOA),
		Ns:      "ns.dns." + h.Zone,
		Mbox:    "hostmaster." + h.Zone,
		Serial:  h.Index.serial.Load(),
		Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: h.TTL,
	}
}

// negative finishes m as NXDOMAIN (nx) or NODATA, with the SOA in authority.
func (h *Handler) negative(m *dns.Msg, nx bool) *dns.Msg {
	if nx {
		m.Rcode = dns.RcodeNameError
	}
	m.Answer = nil
	m.Ns = []dns.RR{h.soa()}
	return m
}

// addrRR returns an A or AAAA record for a, or nil when a's family is not qtype's.
func (h *Handler) addrRR(name string, qtype uint16, a netip.Addr) dns.RR {
	switch {
	case qtype == dns.TypeA && a.Is4():
		return &dns.A{Hdr: h.hdr(name, dns.TypeA), A: net.IP(a.AsSlice())}
	case qtype == dns.TypeAAAA && a.Is6():
		return &dns.AAAA{Hdr: h.hdr(name, dns.TypeAAAA), AAAA: net.IP(a.AsSlice())}
	}
	return nil
}

// addrAnswer answers an A/AAAA/ANY query for name with addrs: true when the
// name exists (the caller then never says NXDOMAIN).
func (h *Handler) addrAnswer(m *dns.Msg, owner string, qtype uint16, addrs []netip.Addr) {
	for _, a := range addrs {
		if qtype == dns.TypeANY {
			if rr := h.addrRR(owner, dns.TypeA, a); rr != nil {
				m.Answer = append(m.Answer, rr)
			} else if rr := h.addrRR(owner, dns.TypeAAAA, a); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
			continue
		}
		if rr := h.addrRR(owner, qtype, a); rr != nil {
			m.Answer = append(m.Answer, rr)
		}
	}
}

// cluster answers a name inside the cluster zone.
func (h *Handler) cluster(ctx context.Context, state request.Request, qname string) *dns.Msg {
	m := h.reply(state)
	owner := state.QName()
	qtype := state.QType()
	rel := ""
	if len(qname) > len(h.Zone) {
		rel = qname[:len(qname)-len(h.Zone)-1]
	}
	if rel == "" { // apex
		switch qtype {
		case dns.TypeSOA:
			m.Answer = []dns.RR{h.soa()}
			m.Answer[0].Header().Name = owner
			return m
		case dns.TypeNS:
			m.Answer = []dns.RR{&dns.NS{Hdr: h.hdr(owner, dns.TypeNS), Ns: "ns.dns." + h.Zone}}
			h.addrAnswer(m, "ns.dns."+h.Zone, dns.TypeANY, h.NS)
			m.Extra, m.Answer = m.Answer[1:], m.Answer[:1]
			return m
		}
		return h.negative(m, false)
	}
	labels := dns.SplitDomainName(rel)
	n := len(labels)
	switch labels[n-1] {
	case "svc":
		return h.services(ctx, state, m, owner, qtype, labels[:n-1])
	case "pod":
		return h.pods(m, owner, qtype, labels[:n-1])
	case "dns":
		switch {
		case n == 1 && len(h.NS) > 0:
			return h.negative(m, false)
		case n == 2 && labels[0] == "ns" && len(h.NS) > 0:
			h.addrAnswer(m, owner, qtype, h.NS)
			if len(m.Answer) == 0 {
				return h.negative(m, false)
			}
			return m
		}
	}
	return h.negative(m, true)
}

// pods answers <a-b-c-d>.<ns>.pod.<zone> (CoreDNS's "pods insecure" mode:
// the address is taken from the name).
func (h *Handler) pods(m *dns.Msg, owner string, qtype uint16, labels []string) *dns.Msg {
	switch len(labels) {
	case 0, 1:
		return h.negative(m, false)
	case 2:
		a, ok := undash(labels[0])
		if !ok {
			return h.negative(m, true)
		}
		h.addrAnswer(m, owner, qtype, []netip.Addr{a})
		if len(m.Answer) == 0 {
			return h.negative(m, false)
		}
		return m
	}
	return h.negative(m, true)
}

// services answers names under svc.<zone>; labels are the labels left of "svc".
func (h *Handler) services(ctx context.Context, state request.Request, m *dns.Msg, owner string, qtype uint16, labels []string) *dns.Msg {
	x := h.Index
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := len(labels)
	if n == 0 {
		return h.negative(m, false)
	}
	ns := labels[n-1]
	if n == 1 {
		return h.negative(m, x.nsCount[ns] == 0)
	}
	s := x.services[svcKey(ns, labels[n-2])]
	if s == nil {
		return h.negative(m, true)
	}
	svcName := labels[n-2] + "." + ns + ".svc." + h.Zone
	switch n {
	case 2: // <svc>.<ns>
		return h.service(ctx, state, m, owner, qtype, s, svcName)
	case 3: // <endpoint>.<svc>.<ns> or the empty non-terminal _<proto>.<svc>.<ns>
		l := labels[0]
		if strings.HasPrefix(l, "_") {
			if s.ExternalName == "" && len(h.srvs(s, svcName, "", l[1:], 1)) > 0 {
				return h.negative(m, false)
			}
			return h.negative(m, true)
		}
		if !s.Headless {
			return h.negative(m, true)
		}
		found := false
		for _, sl := range x.groups[svcKey(ns, labels[n-2])] {
			for _, e := range sl.Endpoints {
				if endpointLabel(e) == l {
					found = true
					h.addrAnswer(m, owner, qtype, []netip.Addr{e.Addr})
				}
			}
		}
		if !found {
			return h.negative(m, true)
		}
		if len(m.Answer) == 0 {
			return h.negative(m, false)
		}
		return m
	case 4: // _<port>._<proto>.<svc>.<ns>
		p, proto := labels[0], labels[1]
		if !strings.HasPrefix(p, "_") || !strings.HasPrefix(proto, "_") || s.ExternalName != "" {
			return h.negative(m, true)
		}
		srvs := h.srvs(s, svcName, p[1:], proto[1:], 0)
		if len(srvs) == 0 {
			return h.negative(m, true)
		}
		if qtype != dns.TypeSRV && qtype != dns.TypeANY {
			return h.negative(m, false)
		}
		h.srvAnswer(m, owner, s, srvs)
		return m
	}
	return h.negative(m, true)
}

// maxChase bounds how many ExternalName targets one query follows.
const maxChase = 8

// chaseKey holds, in a query's context, how many ExternalName targets it
// has followed.
type chaseKey struct{}

// service answers <svc>.<ns>.svc.<zone>.
func (h *Handler) service(ctx context.Context, state request.Request, m *dns.Msg, owner string, qtype uint16, s *service, svcName string) *dns.Msg {
	if s.ExternalName != "" {
		target := dns.Fqdn(s.ExternalName)
		m.Answer = []dns.RR{&dns.CNAME{Hdr: h.hdr(owner, dns.TypeCNAME), Target: target}}
		// The target is chased through the whole server, in the cluster
		// zone too (an ExternalName naming another Service), as CoreDNS's
		// kubernetes plugin does; a chain of aliases stops after
		// maxChase, so a loop of them ends.
		if depth, _ := ctx.Value(chaseKey{}).(int); h.Upstream != nil && qtype != dns.TypeCNAME && depth < maxChase {
			cctx := context.WithValue(ctx, chaseKey{}, depth+1)
			if up, err := h.Upstream.Lookup(cctx, state, target, qtype); err == nil && up != nil {
				m.Answer = append(m.Answer, up.Answer...)
			}
		}
		return m
	}
	switch qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		if s.Headless {
			seen := map[netip.Addr]bool{}
			for _, sl := range h.Index.groups[svcKey(s.Namespace, s.Name)] {
				for _, e := range sl.Endpoints {
					if !seen[e.Addr] {
						seen[e.Addr] = true
						h.addrAnswer(m, owner, qtype, []netip.Addr{e.Addr})
					}
				}
			}
		} else {
			h.addrAnswer(m, owner, qtype, s.ClusterIPs)
		}
		if qtype == dns.TypeANY {
			h.srvAnswer(m, owner, s, h.srvs(s, svcName, "", "", 0))
		}
	case dns.TypeSRV:
		h.srvAnswer(m, owner, s, h.srvs(s, svcName, "", "", 0))
	}
	if len(m.Answer) == 0 {
		return h.negative(m, false)
	}
	return m
}

type srv struct {
	port   uint16
	target string
	addr   netip.Addr
}

// srvs lists the SRV targets of s for a port name and protocol ("" matches
// any), at most limit (0: no limit). x.mu is read-locked.
func (h *Handler) srvs(s *service, svcName, port, proto string, limit int) []srv {
	match := func(p Port) bool {
		if port == "" {
			return p.Name != "" && (proto == "" || p.Proto == proto)
		}
		return p.Name == port && p.Proto == proto
	}
	var out []srv
	if !s.Headless {
		for _, p := range s.Ports {
			if match(p) {
				out = append(out, srv{port: p.Port, target: svcName})
				if limit > 0 && len(out) >= limit {
					return out
				}
			}
		}
		return out
	}
	for _, sl := range h.Index.groups[svcKey(s.Namespace, s.Name)] {
		for _, p := range sl.Ports {
			if !match(p) {
				continue
			}
			for _, e := range sl.Endpoints {
				out = append(out, srv{port: p.Port, target: endpointLabel(e) + "." + svcName, addr: e.Addr})
				if limit > 0 && len(out) >= limit {
					return out
				}
			}
		}
	}
	return out
}

func (h *Handler) srvAnswer(m *dns.Msg, owner string, s *service, srvs []srv) {
	seen := map[string]bool{}
	weight := uint16(max(1, 100/len(srvs)))
	for _, r := range srvs {
		m.Answer = append(m.Answer, &dns.SRV{Hdr: h.hdr(owner, dns.TypeSRV), Weight: weight, Port: r.port, Target: r.target})
		if seen[r.target] {
			continue
		}
		seen[r.target] = true
		addrs := []netip.Addr{r.addr}
		if !s.Headless {
			addrs = s.ClusterIPs
		}
		for _, a := range addrs {
			if rr := h.addrRR(r.target, dns.TypeA, a); rr != nil {
				m.Extra = append(m.Extra, rr)
			} else if rr := h.addrRR(r.target, dns.TypeAAAA, a); rr != nil {
				m.Extra = append(m.Extra, rr)
			}
		}
	}
}

// reverse answers PTR queries for Service and headless endpoint addresses;
// nil lets the query fall through.
func (h *Handler) reverse(state request.Request, qname string) *dns.Msg {
	ip := dnsutil.ExtractAddressFromReverse(qname)
	if ip == "" {
		return nil
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil
	}
	x := h.Index
	x.mu.RLock()
	defer x.mu.RUnlock()
	refs := x.ptr[a.Unmap()]
	if len(refs) == 0 {
		return nil
	}
	m := h.reply(state)
	if state.QType() != dns.TypePTR && state.QType() != dns.TypeANY {
		m.Ns = []dns.RR{h.soa()}
		return m
	}
	for _, r := range refs {
		name := r.svc.Name + "." + r.svc.Namespace + ".svc." + h.Zone
		if r.host != "" {
			name = r.host + "." + name
		}
		m.Answer = append(m.Answer, &dns.PTR{Hdr: h.hdr(state.QName(), dns.TypePTR), Ptr: name})
	}
	return m
}

// node answers a node's name with its InternalIPs (k3s's NodeHosts); nil
// lets the query fall through.
func (h *Handler) node(state request.Request, qname string) *dns.Msg {
	x := h.Index
	x.mu.RLock()
	addrs, ok := x.nodes[qname]
	x.mu.RUnlock()
	if !ok {
		return nil
	}
	m := h.reply(state)
	m.Authoritative = false
	h.addrAnswer(m, state.QName(), state.QType(), addrs)
	return m
}

// portLabel returns a port name as a DNS label or "" when it is not one.
func portLabel(name string) string {
	name = strings.ToLower(name)
	if name == "" || len(name) > 63 {
		return ""
	}
	if _, ok := dns.IsDomainName(name); !ok || strings.Contains(name, ".") {
		return ""
	}
	return name
}
