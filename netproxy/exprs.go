package netproxy

import (
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders for the nftables expressions the rules use. Each mirrors
// what `nft` itself generates for the commented statement (checked with
// `nft --debug=netlink`).

const rtnLocal = 2 // RTN_LOCAL, the fib addrtype of the node's own addresses

// loadSaddr: ip saddr => reg 1
func loadSaddr() expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

// loadDaddr: ip daddr => reg 1
func loadDaddr() expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

// matchPrefix: ip saddr|daddr (!)= prefix
func matchPrefix(load expr.Any, p netip.Prefix, negate bool) []expr.Any {
	var m [4]byte
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	net := p.Masked().Addr().As4()
	op := expr.CmpOpEq
	if negate {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: net[:]},
	}
}

// notLoopback: ip daddr != 127.0.0.0/8
func notLoopback() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{127}},
	}
}

// fibLocal: fib saddr|daddr type local
func fibLocal(daddr bool) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: daddr, FlagSADDR: !daddr, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(rtnLocal)},
	}
}

// loadDaddrProtoPort: ip daddr . meta l4proto . th dport => reg 1, 9, 10
func loadDaddrProtoPort() []expr.Any {
	return []expr.Any{
		loadDaddr(),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// loadProtoPort: meta l4proto . th dport => reg 1, 9
func loadProtoPort() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// vmapLookup: ... vmap @name
func vmapLookup(name string) expr.Any {
	return &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: name}
}

// matchL4: meta l4proto == p
func matchL4(p uint8) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// ctStateNew: ct state new
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// setMarkBit: meta mark set meta mark | bit
func setMarkBit(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bit), Xor: binaryutil.NativeEndian.PutUint32(bit)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// returnUnlessMarked: meta mark & bit == 0 return
func returnUnlessMarked(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
}

// clearMarkBit: meta mark set meta mark ^ bit (only reached when the bit is set)
func clearMarkBit(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(0xffffffff), Xor: binaryutil.NativeEndian.PutUint32(bit)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// dnatTo: dnat to ip:port
func dnatTo(ep endpoint) []expr.Any {
	ip := ep.IP.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: ip[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(ep.Port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// updateAffinity: update @set { ip saddr }
func updateAffinity(set string) []expr.Any {
	return []expr.Any{loadSaddr(), &expr.Dynset{SrcRegKey: 1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE}}
}

// inAffinity: ip saddr @set
func inAffinity(set string) []expr.Any {
	return []expr.Any{loadSaddr(), &expr.Lookup{SourceRegister: 1, SetName: set}}
}

func verdictExpr(v verdict) expr.Any {
	return &expr.Verdict{Kind: v.Kind, Chain: v.Chain}
}

func gotoChain(c string) verdict { return verdict{Kind: expr.VerdictGoto, Chain: c} }
func jumpChain(c string) verdict { return verdict{Kind: expr.VerdictJump, Chain: c} }

var (
	verdictDrop = verdict{Kind: expr.VerdictDrop}
)

// keyIPProtoPort encodes ipv4_addr . inet_proto . inet_service (each padded
// to 4 bytes, as in registers).
func keyIPProtoPort(ip netip.Addr, proto uint8, port uint16) string {
	a := ip.As4()
	return string([]byte{a[0], a[1], a[2], a[3], proto, 0, 0, 0, byte(port >> 8), byte(port), 0, 0})
}

// keyProtoPort encodes inet_proto . inet_service.
func keyProtoPort(proto uint8, port uint16) string {
	return string([]byte{proto, 0, 0, 0, byte(port >> 8), byte(port), 0, 0})
}

// randomOneIn: numgen random mod n == 0 (true with probability 1/n)
func randomOneIn(n uint32) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: n, Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// matchHairpin: ip saddr . ip daddr @hairpin
func matchHairpin() []expr.Any {
	return []expr.Any{
		loadSaddr(),
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: setHairpin},
	}
}

// keyHairpin encodes ipv4_addr . ipv4_addr for ip . ip.
func keyHairpin(ip netip.Addr) []byte {
	a := ip.As4()
	return []byte{a[0], a[1], a[2], a[3], a[0], a[1], a[2], a[3]}
}
