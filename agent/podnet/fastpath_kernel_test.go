package podnet

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/internal/lab"
)

// TestFastPath checks the eBPF fast path (fastpath.go) in a lab of two
// 2-node VXLAN clusters, h0 and h1 with it and h2 and h3 without.
func TestFastPath(t *testing.T) {
	if why := fastPathUnsupported(); why != "" {
		t.Skip("the fast path needs what this kernel lacks: " + why)
	}
	l := lab.New(t, 4)
	fast := newNodesWith(t, l.Hosts[0:2], func(*Config) {})
	normal := newNodesWith(t, l.Hosts[2:4], func(c *Config) { c.NoFastPath = true })
	for _, n := range fast {
		if n.net.fast == nil {
			t.Fatalf("%s: fast path not loaded (see the log)", n.host.Role)
		}
	}
	for _, n := range normal {
		if n.net.fast != nil {
			t.Fatalf("%s: fast path loaded with NoFastPath", n.host.Role)
		}
	}
	pa, pb, pc := newPod(t, l, fast[0], "pa"), newPod(t, l, fast[1], "pb"), newPod(t, l, fast[0], "pc")
	na, nb := newPod(t, l, normal[0], "na"), newPod(t, l, normal[1], "nb")

	const bulk = 4 << 20
	t.Run("pod traffic bypasses the VXLAN device", func(t *testing.T) {
		// The first packets may go through the device while the uplink's
		// neighbour entry for the peer node is resolved.
		before := vxlanBytes(t, fast[0], fast[1])
		transfer(t, pa.ns, pb.ns, pb.ip.Addr.Addr(), bulk)
		transfer(t, pb.ns, pa.ns, pa.ip.Addr.Addr(), bulk)
		if d := vxlanBytes(t, fast[0], fast[1]) - before; d > bulk/8 {
			t.Errorf("fast path: %d bytes crossed the VXLAN devices for 2 x %d bytes between pods", d, bulk)
		}
		before = vxlanBytes(t, normal[0], normal[1])
		transfer(t, na.ns, nb.ns, nb.ip.Addr.Addr(), bulk)
		if d := vxlanBytes(t, normal[0], normal[1]) - before; d < bulk {
			t.Errorf("normal path: only %d bytes crossed the VXLAN devices for %d bytes between pods", d, bulk)
		}
	})
	t.Run("pods of one node, UDP, nodes", func(t *testing.T) {
		if got := echoTCP(t, pa.ns, pc.ns, pc.ip.Addr.Addr()); got != pa.ip.Addr.Addr() {
			t.Errorf("server saw %s, want %s", got, pa.ip.Addr.Addr())
		}
		echoUDP(t, pa.ns, pb.ns, pb.ip.Addr.Addr())
		echoUDP(t, pb.ns, pa.ns, pa.ip.Addr.Addr())
		echoTCP(t, fast[0].host.NS, pb.ns, pb.ip.Addr.Addr())
		echoTCP(t, pb.ns, fast[0].host.NS, fast[0].host.IP)
	})
	t.Run("NATed flows keep netfilter", func(t *testing.T) {
		// A Service-like DNAT on the client's node: the replies come back
		// over the tunnel and must be un-NATed there.
		vip := netip.MustParseAddrPort("10.43.9.9:80")
		backend := netip.AddrPortFrom(pb.ip.Addr.Addr(), 8080)
		dnat(t, fast[0].host.NS, vip, backend)
		if got := echoTCPAt(t, pa.ns, pb.ns, backend, &vip); got != pa.ip.Addr.Addr() {
			t.Errorf("server saw %s, want %s", got, pa.ip.Addr.Addr())
		}
		// A DNAT on the server's node: the replies leave it through the
		// server pod's veth and must be un-NATed before the tunnel.
		alias := netip.AddrPortFrom(netip.MustParseAddr("10.42.1.250"), 81)
		backend = netip.AddrPortFrom(pb.ip.Addr.Addr(), 8081)
		dnat(t, fast[1].host.NS, alias, backend)
		if got := echoTCPAt(t, pa.ns, pb.ns, backend, &alias); got != pa.ip.Addr.Addr() {
			t.Errorf("server saw %s, want %s", got, pa.ip.Addr.Addr())
		}
		// The node's own connection to a Service address whose backend
		// is on another node: it leaves with the node's address, the
		// backend's node answers it straight over the underlay, and
		// neither node may miss the flow's beginning.
		vip = netip.MustParseAddrPort("10.43.9.10:80")
		backend = netip.AddrPortFrom(pb.ip.Addr.Addr(), 8082)
		dnat(t, fast[0].host.NS, vip, backend)
		uplink, err := fast[0].net.nh.LinkByName(fast[0].host.Iface)
		if err != nil {
			t.Fatal(err)
		}
		// A route for the connect (the lab hosts have no default route).
		if err := fast[0].net.nh.RouteAdd(&netlink.Route{LinkIndex: uplink.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: prefixNet(netip.PrefixFrom(vip.Addr(), 32))}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if got := echoTCPAt(t, fast[0].host.NS, pb.ns, backend, &vip); got != fast[0].host.IP {
				t.Errorf("server saw %s, want the node's %s", got, fast[0].host.IP)
			}
		}
	})
	t.Run("datagrams from others take the normal path", func(t *testing.T) {
		// A VXLAN datagram to h1 from the client host, not a node: the
		// kernel's VXLAN device (and the node's firewall before it) gets
		// it, not orch_decap.
		rx := func() uint64 { return vxlanStats(t, fast[1]).RxPackets }
		before := rx()
		frame := vxlanFrame(fast[1].net.vtepMAC, netip.MustParseAddr("10.42.0.99"), pb.ip.Addr.Addr(), 9, []byte("x"))
		if err := l.Client.Do(func() error {
			c, err := net.Dial("udp4", netip.AddrPortFrom(fast[1].host.IP, DefaultVXLANPort).String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(frame)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for rx() == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if rx() == before {
			t.Error("a VXLAN datagram from a host that is no peer skipped the VXLAN device")
		}
	})
	t.Run("turned off, the filters go", func(t *testing.T) {
		normal[0].cfg.NoFastPath = false
		normal[0].restart(t, t)
		if n := filterCount(t, normal[0], na); n != 1 {
			t.Fatalf("fast path on: %d filters on the pod veth, want 1", n)
		}
		normal[0].cfg.NoFastPath = true
		normal[0].restart(t, t)
		if n := filterCount(t, normal[0], na); n != 0 {
			t.Fatalf("fast path off: %d filters on the pod veth, want 0", n)
		}
		echoTCP(t, na.ns, nb.ns, nb.ip.Addr.Addr())
	})
	t.Run("maps follow pods and peers", func(t *testing.T) {
		f := fast[0].net.fast
		if n := mapLen(t, f.vteps); n != 1 {
			t.Errorf("VTEP map holds %d peers, want 1", n)
		}
		if n := mapLen(t, f.nodes); n != 1 {
			t.Errorf("node map holds %d peers, want 1", n)
		}
		if n := mapLen(t, f.pods); n != 2 {
			t.Errorf("pod map holds %d veths, want 2", n)
		}
		if err := fast[0].net.Teardown(context.Background(), pc.uid, pc.ns.Path); err != nil {
			t.Fatal(err)
		}
		if n := mapLen(t, f.pods); n != 1 {
			t.Errorf("pod map holds %d veths after a teardown, want 1", n)
		}
		if err := fast[0].net.SetPeers(nil); err != nil {
			t.Fatal(err)
		}
		if n := mapLen(t, f.vteps); n != 0 {
			t.Errorf("VTEP map holds %d peers with none, want 0", n)
		}
		if n := mapLen(t, f.nodes); n != 0 {
			t.Errorf("node map holds %d peers with none, want 0", n)
		}
		announce(t, fast)
		if n := mapLen(t, f.vteps); n != 1 {
			t.Errorf("VTEP map holds %d peers, want 1", n)
		}
		echoTCP(t, pa.ns, pb.ns, pb.ip.Addr.Addr())
	})
	t.Run("restart reattaches", func(t *testing.T) {
		// The pod veth's filter outlives the old process; the new one
		// replaces it.
		fast[1].restart(t, t)
		if n := mapLen(t, fast[1].net.fast.pods); n != 1 {
			t.Errorf("pod map after restart holds %d veths, want 1", n)
		}
		announce(t, fast)
		before := vxlanBytes(t, fast[0], fast[1])
		transfer(t, pa.ns, pb.ns, pb.ip.Addr.Addr(), bulk)
		if d := vxlanBytes(t, fast[0], fast[1]) - before; d > bulk/8 {
			t.Errorf("after restart: %d bytes crossed the VXLAN devices for %d bytes between pods", d, bulk)
		}
	})
}

// vxlanFrame is a VXLAN payload (VNI 1) carrying an Ethernet frame to
// vtep with a UDP datagram from src to dst:port.
func vxlanFrame(vtep net.HardwareAddr, src, dst netip.Addr, port uint16, data []byte) []byte {
	b := []byte{0x08, 0, 0, 0, 0, 0, 1, 0}
	b = append(b, vtep...)
	b = append(b, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(data)))
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := binary.BigEndian.AppendUint16(nil, 40000)
	udp = binary.BigEndian.AppendUint16(udp, port)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(data)))
	udp = append(udp, 0, 0)
	return append(append(append(b, ip...), udp...), data...)
}

// fastPathUnsupported says why this kernel cannot run the fast path (tcx
// came with Linux 6.6; the kfuncs' ids come from the kernel's BTF), or "".
func fastPathUnsupported() string {
	if _, err := os.Stat(kernelBTF); err != nil {
		return "no " + kernelBTF
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err.Error()
	}
	var major, minor int
	release := unix.ByteSliceToString(u.Release[:])
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return "kernel release " + release + ": " + err.Error()
	}
	if major < 6 || major == 6 && minor < 6 {
		return "Linux " + release + " predates tcx (6.6)"
	}
	return ""
}

// filterCount counts orch_fwd filters on the pod's host veth.
func filterCount(t *testing.T, n *testNode, p *testPod) int {
	t.Helper()
	l, err := n.net.nh.LinkByName(vethName(p.uid))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := n.net.nh.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		t.Fatal(err)
	}
	c := 0
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == fwdName {
			c++
		}
	}
	return c
}

// vxlanBytes is what the nodes' VXLAN devices sent and received.
func vxlanBytes(t *testing.T, nodes ...*testNode) int64 {
	t.Helper()
	var sum int64
	for _, n := range nodes {
		s := vxlanStats(t, n)
		sum += int64(s.TxBytes + s.RxBytes)
	}
	return sum
}

// vxlanStats are the node's VXLAN device's counters.
func vxlanStats(t *testing.T, n *testNode) *netlink.LinkStatistics {
	t.Helper()
	l, err := n.net.nh.LinkByName(n.net.cfg.VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics
}

// transfer sends n bytes over TCP from `from` to addr in `to` and checks
// that all arrived.
func transfer(t *testing.T, from, to lab.NS, addr netip.Addr, n int) {
	t.Helper()
	ln, got := countingListener(t, to, addr)
	defer ln.Close()
	if err := from.Do(func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(make([]byte, n)); err != nil {
			return err
		}
		return c.(*net.TCPConn).CloseWrite()
	}); err != nil {
		t.Fatalf("TCP %s -> %s: %v", from.Name, ln.Addr(), err)
	}
	if m := <-got; m != int64(n) {
		t.Fatalf("TCP %s -> %s: %d of %d bytes arrived", from.Name, ln.Addr(), m, n)
	}
}

// dnat adds, in a table of the test's own in ns, `ip daddr <match addr>
// tcp dport <match port> dnat to <to>` at prerouting and output.
func dnat(t *testing.T, ns lab.NS, match, to netip.AddrPort) {
	t.Helper()
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tab := c.AddTable(&nftables.Table{Name: fmt.Sprintf("orch-test-dnat-%d", match.Port()), Family: nftables.TableFamilyIPv4})
	for _, hook := range []*nftables.ChainHook{nftables.ChainHookPrerouting, nftables.ChainHookOutput} {
		ch := c.AddChain(&nftables.Chain{Name: fmt.Sprintf("dnat-%d", *hook), Table: tab, Type: nftables.ChainTypeNAT,
			Hooknum: hook, Priority: nftables.ChainPriorityNATDest})
		c.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: match.Addr().AsSlice()},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(match.Port())},
			&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("dnat %s -> %s in %s: %v", match, to, ns.Name, err)
	}
}

// mapLen counts a map's entries.
func mapLen(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	key, val := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	n := 0
	it := m.Iterate()
	for it.Next(key, val) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
