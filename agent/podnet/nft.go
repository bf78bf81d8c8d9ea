package podnet

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The node's table, in nft syntax:
//
//	table ip orch-net {
//	    chain postrouting {
//	        type nat hook postrouting priority srcnat;
//	        ip saddr <podCIDR> ip daddr <clusterCIDR> return
//	        ip saddr <podCIDR> ip daddr 224.0.0.0/4 return
//	        ip saddr <podCIDR> masquerade fully-random
//	    }
//	    # vxlan backend only:
//	    chain vxlan-in {
//	        type filter hook prerouting priority raw;
//	        ip daddr <nodeIP> udp dport <vxlanPort> notrack
//	    }
//	    chain vxlan-out {
//	        type filter hook output priority raw;
//	        ip saddr <nodeIP> udp dport <vxlanPort> notrack
//	    }
//	}
//
// Pod-to-pod traffic keeps its addresses; traffic that leaves the cluster
// CIDR leaves with the node's address. The VXLAN datagrams between nodes
// are not tracked: the pod packets inside are tracked where they are
// forwarded, which is all that Service NAT and masquerade need, and the
// tunnel's datagrams (node IP to node IP, never NATed, no replies) would
// otherwise cost a second conntrack lookup per packet on each node
// (BenchmarkVXLANVersusUnderlay: pod/host 82 % -> 85 %). A firewall on the
// node must accept UDP to the VXLAN port by port, not by conntrack state:
// the datagrams are in state untracked, so a rule that accepts only
// `ct state new` to the port drops them (firewalld's port rules accept
// `ct state { new, untracked }`, ufw's match no state).
//
// The table is replaced in one atomic batch (add, delete, add), so Init is
// idempotent and never leaves a window without the rules. No other table
// is read or touched.
const (
	masqChain     = "postrouting"
	vxlanInChain  = "vxlan-in"
	vxlanOutChain = "vxlan-out"
)

var multicast = netip.MustParsePrefix("224.0.0.0/4")

func (n *Network) nftConn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if n.nodeNS.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(n.nodeNS)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// ensureMasquerade replaces the table (masquerade and, for vxlan, the
// tunnel's notrack rules).
func (n *Network) ensureMasquerade() error {
	c, err := n.nftConn()
	if err != nil {
		return err
	}
	queueMasquerade(c, &n.cfg)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", n.cfg.Table, err)
	}
	return nil
}

// queueMasquerade queues the batch that replaces the table.
func queueMasquerade(c *nftables.Conn, cfg *Config) {
	t := &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name: masqChain, Table: t,
		Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	pod := cfg.PodCIDR
	for _, r := range [][]expr.Any{
		concat(matchPrefix(12, pod), matchPrefix(16, cfg.ClusterCIDR), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
		concat(matchPrefix(12, pod), matchPrefix(16, multicast), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
		concat(matchPrefix(12, pod), []expr.Any{&expr.Masq{FullyRandom: true}}),
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if cfg.Backend != BackendVXLAN || !cfg.NodeIP.Is4() {
		return
	}
	for _, h := range []struct {
		name   string
		hook   *nftables.ChainHook
		offset uint32 // of the node IP: daddr coming in, saddr going out
	}{{vxlanInChain, nftables.ChainHookPrerouting, 16}, {vxlanOutChain, nftables.ChainHookOutput, 12}} {
		ch := c.AddChain(&nftables.Chain{
			Name: h.name, Table: t,
			Type: nftables.ChainTypeFilter, Hooknum: h.hook, Priority: nftables.ChainPriorityRaw,
		})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
			matchPrefix(h.offset, netip.PrefixFrom(cfg.NodeIP, 32)),
			matchUDPDport(uint16(cfg.VXLANPort)),
			[]expr.Any{&expr.Notrack{}},
		)})
	}
}

// matchUDPDport matches UDP datagrams to port.
func matchUDPDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// deleteMasquerade removes the table; a missing table is no error.
func (n *Network) deleteMasquerade() error {
	c, err := n.nftConn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", n.cfg.Table, err)
	}
	return nil
}

// matchPrefix matches the IPv4 header's address at offset (12 source, 16
// destination) against p.
func matchPrefix(offset uint32, p netip.Prefix) []expr.Any {
	mask := prefixNet(p).Mask
	addr := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
