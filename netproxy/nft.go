package netproxy

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The table's family is `ip`: the cluster is IPv4 (DESIGN.md: 10.42/16 pods,
// 10.43/16 services), every map key is typed ipv4_addr, and an ip table needs
// no `meta nfproto` guard in front of each rule. IPv6 would be a second
// table of family ip6 rendered by the same code with ipv6_addr keys, as
// kube-proxy's nftables mode does.
const tableFamily = nftables.TableFamilyIPv4

var (
	keyIPProtoPortType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	keyProtoPortType   = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	keyHairpinType     = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)
)

// batch queues the messages of one sync on an nftables connection. It owns
// set IDs (the library's own allocator is a package-level counter shared by
// every connection).
type batch struct {
	conn    *nftables.Conn
	table   *nftables.Table
	maps    map[string]*nftables.Set
	hairpin *nftables.Set
	setID   uint32
}

func newBatch(conn *nftables.Conn, tableName string) *batch {
	t := &nftables.Table{Name: tableName, Family: tableFamily}
	b := &batch{conn: conn, table: t, maps: map[string]*nftables.Set{}}
	for _, m := range []struct {
		name string
		key  nftables.SetDatatype
	}{
		{mapServiceIPs, keyIPProtoPortType},
		{mapNoEndpointIPs, keyIPProtoPortType},
		{mapNodePorts, keyProtoPortType},
		{mapNoEndpointPorts, keyProtoPortType},
	} {
		b.maps[m.name] = &nftables.Set{Table: t, Name: m.name, IsMap: true, KeyType: m.key, DataType: nftables.TypeVerdict}
	}
	b.hairpin = &nftables.Set{Table: t, Name: setHairpin, KeyType: keyHairpinType}
	return b
}

// setHairpinElems queues adding or deleting hairpin elements.
func (b *batch) setHairpinElems(add bool, ips []netip.Addr) error {
	for len(ips) > 0 {
		n := min(len(ips), elemsPerMessage)
		es := make([]nftables.SetElement, n)
		for i, ip := range ips[:n] {
			es[i] = nftables.SetElement{Key: keyHairpin(ip)}
		}
		var err error
		if add {
			err = b.conn.SetAddElements(b.hairpin, es)
		} else {
			err = b.conn.SetDeleteElements(b.hairpin, es)
		}
		if err != nil {
			return fmt.Errorf("set %s: %w", setHairpin, err)
		}
		ips = ips[n:]
	}
	return nil
}

func (b *batch) nextSetID() uint32 {
	b.setID++
	return b.setID
}

func (b *batch) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: b.table}
}

// recreateTable queues: ensure the table exists, delete it (and everything
// in it), create it again with the fixed objects. Within one batch this
// replaces the table atomically.
func (b *batch) recreateTable(mark uint32) error {
	b.conn.AddTable(b.table)
	b.conn.DelTable(b.table)
	b.conn.AddTable(b.table)
	for _, name := range []string{mapServiceIPs, mapNoEndpointIPs, mapNodePorts, mapNoEndpointPorts} {
		m := b.maps[name]
		m.ID = b.nextSetID()
		if err := b.conn.AddSet(m, nil); err != nil {
			return fmt.Errorf("add map %s: %w", name, err)
		}
	}
	b.hairpin.ID = b.nextSetID()
	if err := b.conn.AddSet(b.hairpin, nil); err != nil {
		return fmt.Errorf("add set %s: %w", setHairpin, err)
	}
	// Regular chains first, base chains (which jump to them) last.
	for _, c := range []chainSpec{
		{Name: chainMarkMasq, Rules: []ruleSpec{{Exprs: setMarkBit(mark)}}},
		{Name: chainReject, Rules: []ruleSpec{
			{Exprs: append(matchL4(unix.IPPROTO_TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})},
			{Exprs: []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable}}},
		}},
		{Name: chainServices, Rules: []ruleSpec{
			{Exprs: append(loadDaddrProtoPort(), vmapLookup(mapServiceIPs))},
			{Exprs: concat(fibLocal(true), notLoopback(), loadProtoPort(), []expr.Any{vmapLookup(mapNodePorts)})},
		}},
		{Name: chainEndpointCheck, Rules: []ruleSpec{
			{Exprs: append(loadDaddrProtoPort(), vmapLookup(mapNoEndpointIPs))},
			{Exprs: concat(fibLocal(true), notLoopback(), loadProtoPort(), []expr.Any{vmapLookup(mapNoEndpointPorts)})},
		}},
	} {
		b.conn.AddChain(b.chain(c.Name))
		if err := b.addRules(c); err != nil {
			return err
		}
	}
	for _, bc := range baseChains(mark) {
		ch := &nftables.Chain{Name: bc.name, Table: b.table, Type: bc.typ, Hooknum: bc.hook, Priority: bc.prio}
		b.conn.AddChain(ch)
		for _, r := range bc.rules {
			b.conn.AddRule(&nftables.Rule{Table: b.table, Chain: ch, Exprs: r})
		}
	}
	return nil
}

type baseChain struct {
	name  string
	typ   nftables.ChainType
	hook  *nftables.ChainHook
	prio  *nftables.ChainPriority
	rules [][]expr.Any
}

// baseChains are the hooked chains. NAT happens at dstnat priority in
// prerouting (traffic arriving) and output (the node's own traffic);
// masquerade at srcnat in postrouting; and new connections to services that
// have no endpoints are refused in the filter hooks (reject is not allowed
// in prerouting).
func baseChains(mark uint32) []baseChain {
	jumpServices := []expr.Any{verdictExpr(jumpChain(chainServices))}
	check := append(ctStateNew(), verdictExpr(jumpChain(chainEndpointCheck)))
	return []baseChain{
		{"nat-prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, [][]expr.Any{jumpServices}},
		{"nat-output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest, [][]expr.Any{jumpServices}},
		{"nat-postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, [][]expr.Any{
			append(matchHairpin(), &expr.Masq{FullyRandom: true}),
			returnUnlessMarked(mark),
			clearMarkBit(mark),
			// The node's own connections already carry a node address.
			append(fibLocal(false), &expr.Verdict{Kind: expr.VerdictReturn}),
			{&expr.Masq{FullyRandom: true}},
		}},
		{"filter-input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, [][]expr.Any{check}},
		{"filter-forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, [][]expr.Any{check}},
		{"filter-output", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter, [][]expr.Any{check}},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// addRules queues the rules of c (the chain must exist or be queued).
func (b *batch) addRules(c chainSpec) error {
	ch := b.chain(c.Name)
	for _, r := range c.Rules {
		b.conn.AddRule(&nftables.Rule{Table: b.table, Chain: ch, Exprs: r.Exprs})
	}
	return nil
}

func (b *batch) addChain(name string)   { b.conn.AddChain(b.chain(name)) }
func (b *batch) flushChain(name string) { b.conn.FlushChain(b.chain(name)) }
func (b *batch) delChain(name string)   { b.conn.DelChain(b.chain(name)) }

func (b *batch) addAffinitySet(s setSpec) error {
	set := &nftables.Set{Table: b.table, Name: s.Name, ID: b.nextSetID(), KeyType: nftables.TypeIPAddr,
		HasTimeout: true, Dynamic: true, Timeout: s.Timeout}
	if err := b.conn.AddSet(set, nil); err != nil {
		return fmt.Errorf("add affinity set %s: %w", s.Name, err)
	}
	return nil
}

func (b *batch) delSet(name string) {
	b.conn.DelSet(&nftables.Set{Table: b.table, Name: name})
}

// elemsPerMessage bounds the elements in one message: the element list is
// a single netlink attribute, whose length field is 16 bits (64 KiB); an
// element with its verdict chain name takes up to ~300 bytes.
const elemsPerMessage = 200

// setElems queues adding (or deleting) elements, in messages of at most
// elemsPerMessage elements.
func (b *batch) setElems(add bool, elems map[string][]nftables.SetElement) error {
	for _, name := range []string{mapServiceIPs, mapNoEndpointIPs, mapNodePorts, mapNoEndpointPorts} {
		es := elems[name]
		for len(es) > 0 {
			n := min(len(es), elemsPerMessage)
			var err error
			if add {
				err = b.conn.SetAddElements(b.maps[name], es[:n])
			} else {
				err = b.conn.SetDeleteElements(b.maps[name], es[:n])
			}
			if err != nil {
				return fmt.Errorf("map %s: %w", name, err)
			}
			es = es[n:]
		}
	}
	return nil
}

func element(k elemKey, v verdict) nftables.SetElement {
	return nftables.SetElement{Key: []byte(k.Key), VerdictData: &expr.Verdict{Kind: v.Kind, Chain: v.Chain}}
}

const icmpPortUnreachable = 3 // ICMP_PORT_UNREACH
