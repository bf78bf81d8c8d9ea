package podnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/internal/lab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The kernel tests run each node of a cluster in a lab host (a network
// namespace) and each pod in a plain namespace made by the lab: no container
// runtime, the real kernel otherwise.

type testNode struct {
	host *lab.Host
	cfg  Config
	net  *Network
}

type testPod struct {
	uid string
	ns  lab.NS
	ip  PodIP
}

func testLogger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newCluster makes n nodes with pod CIDRs 10.42.<i>.0/24 and tells each
// about the others through the annotations path the agent will use.
func newCluster(t testing.TB, backend Backend, n int) (*lab.Lab, []*testNode) {
	t.Helper()
	l := lab.New(t, n)
	return l, newNodes(t, backend, l.Hosts)
}

// newNodes makes a cluster of the given lab hosts: host hN gets pod CIDR
// 10.42.N.0/24, and each node is told about the others, so clusters of
// disjoint hosts of one lab do not overlap.
func newNodes(t testing.TB, backend Backend, hosts []*lab.Host) []*testNode {
	t.Helper()
	return newNodesWith(t, hosts, func(c *Config) { c.Backend = backend })
}

// newNodesWith is newNodes with each node's Config finished by set.
func newNodesWith(t testing.TB, hosts []*lab.Host, set func(*Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, len(hosts))
	for i, h := range hosts {
		var idx int
		if _, err := fmt.Sscanf(h.Role, "h%d", &idx); err != nil {
			t.Fatalf("lab host %q: want a cluster host h<N>", h.Role)
		}
		cfg := Config{
			NodeName:    h.Role,
			ClusterCIDR: DefaultClusterCIDR,
			PodCIDR:     netip.MustParsePrefix(fmt.Sprintf("10.42.%d.0/24", idx)),
			NodeIP:      h.IP,
			DataDir:     h.DataDir,
			NetnsPath:   h.Path,
		}
		set(&cfg)
		nodes[i] = &testNode{host: h, cfg: cfg}
		nodes[i].start(t, t)
	}
	announce(t, nodes)
	return nodes
}

// start makes a fresh Network for the node (as a restarted agent does) and
// runs Init. The Network is closed when owner (the whole test) ends.
func (tn *testNode) start(t, owner testing.TB) {
	t.Helper()
	nw, err := New(tn.cfg, testLogger(owner))
	if err != nil {
		t.Fatalf("%s: New: %v", tn.host.Role, err)
	}
	owner.Cleanup(func() { nw.Close() })
	if err := nw.Init(context.Background()); err != nil {
		t.Fatalf("%s: Init: %v", tn.host.Role, err)
	}
	tn.net = nw
}

// restart closes the node's Network and starts a fresh one, as an agent
// restart does.
func (tn *testNode) restart(t, owner testing.TB) {
	t.Helper()
	if err := tn.net.Close(); err != nil {
		t.Fatalf("%s: Close: %v", tn.host.Role, err)
	}
	tn.start(t, owner)
}

func peersOf(t testing.TB, nodes []*testNode) []Peer {
	var peers []Peer
	for _, o := range nodes {
		p, err := PeerFromNode(o.cfg.NodeName, o.cfg.PodCIDR.String(), o.net.Annotations())
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
	}
	return peers
}

func announce(t testing.TB, nodes []*testNode) {
	t.Helper()
	peers := peersOf(t, nodes)
	for _, n := range nodes {
		if err := n.net.SetPeers(peers); err != nil {
			t.Fatalf("%s: SetPeers: %v", n.host.Role, err)
		}
	}
}

func newPod(t testing.TB, l *lab.Lab, n *testNode, name string) *testPod {
	t.Helper()
	ns := l.NewNS(t, name)
	uid := fmt.Sprintf("uid-%s-%d", name, time.Now().UnixNano())
	ip, err := n.net.Setup(context.Background(), uid, ns.Path)
	if err != nil {
		t.Fatalf("Setup %s on %s: %v", name, n.host.Role, err)
	}
	if !n.cfg.PodCIDR.Contains(ip.Addr.Addr()) || ip.Gateway != gatewayOf(n.cfg.PodCIDR) {
		t.Fatalf("pod %s got %+v outside %s", name, ip, n.cfg.PodCIDR)
	}
	return &testPod{uid: uid, ns: ns, ip: ip}
}

// echoTCP dials from `from` to `addr` in `to` and checks an echo; it returns
// the address the server saw the client as.
func echoTCP(t testing.TB, from, to lab.NS, addr netip.Addr) netip.Addr {
	t.Helper()
	return echoTCPAt(t, from, to, netip.AddrPortFrom(addr, 0), nil)
}

// echoTCPAt is echoTCP with the server listening on listen and the client
// dialling dial (nil: the listener's address), as through a DNAT.
func echoTCPAt(t testing.TB, from, to lab.NS, listen netip.AddrPort, dial *netip.AddrPort) netip.Addr {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() (err error) {
		ln, err = net.Listen("tcp4", listen.String())
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", listen, err)
	}
	defer ln.Close()
	target := ln.Addr().String()
	if dial != nil {
		target = dial.String()
	}
	peer := make(chan netip.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peer <- netip.Addr{}
			return
		}
		defer c.Close()
		peer <- netip.MustParseAddrPort(c.RemoteAddr().String()).Addr()
		_, _ = io.Copy(c, c)
	}()
	var c net.Conn
	if err := from.Do(func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp4", target)
		return err
	}); err != nil {
		t.Fatalf("TCP %s -> %s: %v", from.Name, target, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hello " + from.Name)
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("TCP write to %s: %v", target, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
		t.Fatalf("TCP echo from %s: %q %v", target, buf, err)
	}
	return <-peer
}

// echoUDP sends datagrams from `from` to `addr` in `to` until one is echoed.
func echoUDP(t testing.TB, from, to lab.NS, addr netip.Addr) {
	t.Helper()
	var srv net.PacketConn
	if err := to.Do(func() (err error) {
		srv, err = net.ListenPacket("udp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen UDP on %s: %v", addr, err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, a, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:n], a)
		}
	}()
	var c net.Conn
	if err := from.Do(func() (err error) {
		c, err = net.Dial("udp4", srv.LocalAddr().String())
		return err
	}); err != nil {
		t.Fatalf("UDP socket %s -> %s: %v", from.Name, srv.LocalAddr(), err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for try := 0; try < 10; try++ {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatalf("UDP write: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return
		}
	}
	t.Fatalf("UDP %s -> %s: no echo", from.Name, srv.LocalAddr())
}

// noTCP checks that a connection from `from` to addr:port fails (nothing
// routes there).
func noTCP(t testing.TB, from lab.NS, addr netip.Addr) {
	t.Helper()
	err := from.Do(func() error {
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(addr, 9).String())
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("%s reached %s, want unreachable", from.Name, addr)
	}
}

func TestVXLANCluster(t *testing.T) {
	top := t
	machineForward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	l, nodes := newCluster(t, BackendVXLAN, 2)
	a, b := nodes[0], nodes[1]
	pa := newPod(t, l, a, "pa")
	pa2 := newPod(t, l, a, "pa2")
	pb := newPod(t, l, b, "pb")
	ip := func(p *testPod) netip.Addr { return p.ip.Addr.Addr() }

	t.Run("pod to pod across nodes", func(t *testing.T) {
		if src := echoTCP(t, pa.ns, pb.ns, ip(pb)); src != ip(pa) {
			t.Errorf("pod-to-pod source seen as %s, want the pod's own %s (no NAT)", src, ip(pa))
		}
		echoTCP(t, pb.ns, pa.ns, ip(pa))
		echoUDP(t, pa.ns, pb.ns, ip(pb))
		echoUDP(t, pb.ns, pa.ns, ip(pa))
	})
	t.Run("pod to pod on one node", func(t *testing.T) {
		echoTCP(t, pa.ns, pa2.ns, ip(pa2))
		echoUDP(t, pa2.ns, pa.ns, ip(pa))
	})
	t.Run("nodes and pods", func(t *testing.T) {
		echoTCP(t, a.host.NS, pb.ns, ip(pb)) // node to remote pod
		echoTCP(t, b.host.NS, pb.ns, ip(pb)) // node to own pod
		echoTCP(t, pb.ns, a.host.NS, a.host.IP)
		echoTCP(t, pb.ns, b.host.NS, b.host.IP)
		echoUDP(t, a.host.NS, pb.ns, ip(pb))
	})
	t.Run("masquerade leaving the cluster", func(t *testing.T) {
		if src := echoTCP(t, pa.ns, l.Client.NS, lab.ClientIP); src != a.host.IP {
			t.Errorf("client saw the pod as %s, want node IP %s (masquerade)", src, a.host.IP)
		}
		out, err := a.host.Command(context.Background(), "nft", "list", "table", "ip", DefaultTable).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		for _, want := range []string{"ip saddr 10.42.0.0/24 ip daddr 10.42.0.0/16 return", "masquerade",
			"ip daddr " + a.host.IP.String() + " udp dport 8472 notrack", "ip saddr " + a.host.IP.String() + " udp dport 8472 notrack"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("masquerade table lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("sysctls in the node namespace only", func(t *testing.T) {
		var v []byte
		if err := a.host.Do(func() (err error) { v, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); return err }); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(v)) != "1" {
			t.Errorf("ip_forward in the node namespace = %q, want 1", v)
		}
		now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if string(now) != string(machineForward) {
			t.Errorf("the machine's own ip_forward changed from %q to %q", machineForward, now)
		}
	})
	t.Run("MTU and routed veths", func(t *testing.T) {
		if a.net.MTU() != 1500-VXLANOverhead {
			t.Errorf("MTU %d, want %d", a.net.MTU(), 1500-VXLANOverhead)
		}
		ph, err := pa.ns.Handle()
		if err != nil {
			t.Fatal(err)
		}
		defer ph.Close()
		eth, err := ph.LinkByName("eth0")
		if err != nil || eth.Attrs().MTU != 1450 {
			t.Errorf("pod eth0 %v MTU, err %v", eth, err)
		}
		if pa.ip.Addr.Bits() != 32 {
			t.Errorf("pod address %s, want a /32", pa.ip.Addr)
		}
		ctx := context.Background()
		out, _ := a.host.Command(ctx, "ip", "-d", "link", "show", vethName(pa.uid)).CombinedOutput()
		if strings.Contains(string(out), "master") {
			t.Errorf("host veth is on a bridge:\n%s", out)
		}
		out, _ = a.host.Command(ctx, "ip", "route", "show", ip(pa).String()+"/32").CombinedOutput()
		if want := "dev " + vethName(pa.uid) + " proto 112 scope link"; !strings.Contains(string(out), want) {
			t.Errorf("node route to the pod %q, want %q", out, want)
		}
		out, _ = a.host.Command(ctx, "ip", "route", "show", "table", "main", "10.42.0.0/24").CombinedOutput()
		if !strings.Contains(string(out), "unreachable 10.42.0.0/24") {
			t.Errorf("node route to the pod CIDR %q, want unreachable", out)
		}
		if _, err := ph.LinkByName(DefaultBridge); err == nil {
			t.Error("pod namespace has a bridge")
		}
		h, err := a.host.Handle()
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.LinkByName(DefaultBridge); err == nil {
			t.Errorf("node has a bridge %s", DefaultBridge)
		}
		// Neither side resolves the other by ARP: both entries are
		// permanent.
		for _, c := range []struct {
			h    *netlink.Handle
			link string
			ip   netip.Addr
		}{{ph, "eth0", pa.ip.Gateway}, {h, vethName(pa.uid), ip(pa)}} {
			l, err := c.h.LinkByName(c.link)
			if err != nil {
				t.Fatal(err)
			}
			if !hasNeigh(c.h, l, c.ip) {
				t.Errorf("no permanent neighbour %s on %s", c.ip, c.link)
			}
		}
	})
	t.Run("the gateway is the node", func(t *testing.T) {
		// Pods reach their node at the gateway; the node's own traffic
		// to its pods comes from it.
		gw := pa.ip.Gateway
		if src := echoTCP(t, pa.ns, a.host.NS, gw); src != ip(pa) {
			t.Errorf("node saw pod at %s, want %s", src, ip(pa))
		}
		if src := echoTCP(t, a.host.NS, pa2.ns, ip(pa2)); src != gw {
			t.Errorf("pod saw its node as %s, want the gateway %s", src, gw)
		}
	})
	t.Run("free pod CIDR addresses are unreachable", func(t *testing.T) {
		noTCP(t, pa.ns, netip.MustParseAddr("10.42.0.200"))
		noTCP(t, pb.ns, netip.MustParseAddr("10.42.0.200"))
	})

	t.Run("agent restart keeps pods and connectivity", func(t *testing.T) {
		// A connection open across the restart must survive it.
		var ln net.Listener
		if err := pb.ns.Do(func() (err error) { ln, err = net.Listen("tcp4", netip.AddrPortFrom(ip(pb), 0).String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				_, _ = io.Copy(c, c)
				c.Close()
			}
		}()
		var c net.Conn
		if err := pa.ns.Do(func() (err error) { c, err = net.Dial("tcp4", ln.Addr().String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, n := range nodes {
			n.restart(t, top)
		}
		announce(t, nodes)
		again, err := a.net.Setup(context.Background(), pa.uid, pa.ns.Path)
		if err != nil || again != pa.ip {
			t.Errorf("Setup of a running pod after restart = %+v %v, want %+v", again, err, pa.ip)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("still")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Errorf("connection across the restart broke: %v", err)
		}
		echoUDP(t, pb.ns, pa.ns, ip(pa))
		out, err := a.host.Command(context.Background(), "nft", "list", "table", "ip", DefaultTable).CombinedOutput()
		if err != nil || strings.Count(string(out), "masquerade") != 1 || strings.Count(string(out), "return") != 2 {
			t.Errorf("masquerade table after re-Init (%v):\n%s", err, out)
		}
		fresh := newPod(t, l, a, "pa3")
		for _, p := range []*testPod{pa, pa2} {
			if ip(fresh) == ip(p) {
				t.Errorf("new pod got %s, held by a running pod", ip(fresh))
			}
		}
	})

	t.Run("peer removed", func(t *testing.T) {
		if err := a.net.SetPeers(peersOf(t, nodes[:1])); err != nil {
			t.Fatal(err)
		}
		ah, err := a.host.Handle()
		if err != nil {
			t.Fatal(err)
		}
		defer ah.Close()
		routes, neighs := kernelPeerState(t, ah, DefaultVXLAN)
		if len(routes) != 0 || len(neighs) != 0 {
			t.Errorf("after b left, a still has routes %v neighbours %v", routes, neighs)
		}
		noTCP(t, pa.ns, ip(pb))
		announce(t, nodes)
		routes, neighs = kernelPeerState(t, ah, DefaultVXLAN)
		if len(routes) != 1 || len(neighs) != 2 {
			t.Errorf("after b came back: routes %v neighbours %v, want 1 and 2", routes, neighs)
		}
		echoTCP(t, pa.ns, pb.ns, ip(pb))
	})
}

func kernelPeerState(t testing.TB, h *netlink.Handle, vxlan string) ([]netlink.Route, []netlink.Neigh) {
	t.Helper()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(vxlan)
	if err != nil {
		all, lerr := h.LinkList()
		for _, l := range all {
			t.Logf("link %s", l.Attrs().Name)
		}
		t.Fatal(err, lerr)
	}
	var neighs []netlink.Neigh
	for _, fam := range []int{unix.AF_INET, unix.AF_BRIDGE} {
		ns, err := h.NeighList(link.Attrs().Index, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.State&netlink.NUD_PERMANENT != 0 && n.IP != nil {
				neighs = append(neighs, n)
			}
		}
	}
	return routes, neighs
}

func TestHostGWCluster(t *testing.T) {
	l, nodes := newCluster(t, BackendHostGW, 2)
	pa := newPod(t, l, nodes[0], "pa")
	pb := newPod(t, l, nodes[1], "pb")
	echoTCP(t, pa.ns, pb.ns, pb.ip.Addr.Addr())
	echoUDP(t, pb.ns, pa.ns, pa.ip.Addr.Addr())
	echoTCP(t, nodes[0].host.NS, pb.ns, pb.ip.Addr.Addr())
	if nodes[0].net.MTU() != 1500 {
		t.Errorf("host-gw MTU %d, want the uplink's 1500", nodes[0].net.MTU())
	}
	h, err := nodes[0].host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(DefaultVXLAN); err == nil {
		t.Error("host-gw node has a vxlan device")
	}
	if err := nodes[0].net.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	noTCP(t, pa.ns, pb.ip.Addr.Addr())
}

func TestBackendSwitch(t *testing.T) {
	l, nodes := newCluster(t, BackendVXLAN, 2)
	pa := newPod(t, l, nodes[0], "pa")
	pb := newPod(t, l, nodes[1], "pb")
	echoTCP(t, pa.ns, pb.ns, pb.ip.Addr.Addr())
	// The agents restart with host-gw: the vxlan device and its routes go,
	// routes via the node IPs replace them, and the pods keep their
	// addresses and connectivity.
	for _, n := range nodes {
		n.cfg.Backend = BackendHostGW
		n.restart(t, t)
	}
	announce(t, nodes)
	h, err := nodes[0].host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(DefaultVXLAN); err == nil {
		t.Error("vxlan device left after switching to host-gw")
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || !routes[0].Gw.Equal(nodes[1].host.IP.AsSlice()) {
		t.Errorf("routes after switch: %v, want one via %s", routes, nodes[1].host.IP)
	}
	ip, err := nodes[0].net.Setup(context.Background(), pa.uid, pa.ns.Path)
	if err != nil || ip != pa.ip {
		t.Errorf("pod after switch: %+v %v, want %+v", ip, err, pa.ip)
	}
	if fastPathUnsupported() == "" {
		if n := filterCount(t, nodes[0], pa); n != 0 {
			t.Errorf("%d fast-path filters left on a pod veth after switching to host-gw", n)
		}
	}
	echoTCP(t, pa.ns, pb.ns, pb.ip.Addr.Addr())
	echoUDP(t, pb.ns, pa.ns, pa.ip.Addr.Addr())
}

func TestNoneBackendInstallsNothingBetweenNodes(t *testing.T) {
	l, nodes := newCluster(t, BackendNone, 2)
	pa := newPod(t, l, nodes[0], "pa")
	pb := newPod(t, l, nodes[1], "pb")
	echoTCP(t, nodes[0].host.NS, pa.ns, pa.ip.Addr.Addr())
	noTCP(t, pa.ns, pb.ip.Addr.Addr())
}

func TestIPLifecycle(t *testing.T) {
	l, nodes := newCluster(t, BackendVXLAN, 1)
	n := nodes[0]
	ctx := context.Background()
	const count = 16
	nss := make([]lab.NS, count)
	for i := range nss {
		nss[i] = l.NewNS(t, fmt.Sprintf("p%d", i))
	}
	// Concurrent Setup never hands out one address twice.
	ips := make([]PodIP, count)
	var wg sync.WaitGroup
	for i := range nss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if ips[i], err = n.net.Setup(ctx, fmt.Sprintf("pod-%d", i), nss[i].Path); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, ip := range ips {
		if j, dup := seen[ip.Addr]; dup {
			t.Fatalf("pods %d and %d both got %s", i, j, ip.Addr)
		}
		seen[ip.Addr] = i
	}
	// Every pod answers on its address (each has its own eth0).
	for i := 0; i < count; i += 5 {
		echoTCP(t, n.host.NS, nss[i], ips[i].Addr.Addr())
	}

	// The agent crashes: a new instance on the same data dir sees every
	// allocation, gives running pods their addresses and new ones others.
	n.start(t, t)
	allocs, err := n.net.Allocations()
	if err != nil || len(allocs) != count {
		t.Fatalf("after restart %d allocations (%v), want %d", len(allocs), err, count)
	}
	extra := l.NewNS(t, "extra")
	eip, err := n.net.Setup(ctx, "pod-extra", extra.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, dup := seen[eip.Addr]; dup {
		t.Fatalf("after restart %s handed out twice", eip.Addr)
	}

	// Pods 0..7 went while the agent was down: Reconcile frees them and
	// removes their veths; the others keep working.
	var live []string
	for i := 8; i < count; i++ {
		live = append(live, fmt.Sprintf("pod-%d", i))
	}
	live = append(live, "pod-extra")
	freed, err := n.net.Reconcile(ctx, live)
	if err != nil || len(freed) != 8 {
		t.Fatalf("Reconcile freed %v (%v), want 8 pods", freed, err)
	}
	h, err := n.host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(vethName("pod-0")); err == nil {
		t.Error("veth of a reconciled pod remains")
	}
	echoTCP(t, n.host.NS, nss[9], ips[9].Addr.Addr())

	// Teardown frees; a torn-down pod's namespace has no eth0 left; a
	// second Teardown, or one of an unknown pod, is no error.
	if err := n.net.Teardown(ctx, "pod-9", nss[9].Path); err != nil {
		t.Fatal(err)
	}
	if err := n.net.Teardown(ctx, "pod-9", nss[9].Path); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	ph, _ := nss[9].Handle()
	if _, err := ph.LinkByName("eth0"); err == nil {
		t.Error("eth0 left in a torn-down pod")
	}
	ph.Close()
	// The torn-down and reconciled pods' routes went with their veths;
	// the pod CIDR's unreachable route and the live pods' remain.
	podRoutes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: podRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	live32 := 0
	for _, r := range podRoutes {
		if ones, _ := r.Dst.Mask.Size(); ones == 32 {
			live32++
			if r.Dst.IP.Equal(ips[9].Addr.Addr().AsSlice()) || r.Dst.IP.Equal(ips[0].Addr.Addr().AsSlice()) {
				t.Errorf("route to a gone pod left: %v", r)
			}
		}
	}
	if live32 != count-8 {
		t.Errorf("%d pod routes, want %d", live32, count-8)
	}
	allocs, _ = n.net.Allocations()
	if len(allocs) != count-8 {
		t.Errorf("%d allocations, want %d", len(allocs), count-8)
	}
}

func TestExhaustedPodCIDR(t *testing.T) {
	l := lab.New(t, 1)
	h := l.Hosts[0]
	cfg := Config{NodeName: "h0", ClusterCIDR: DefaultClusterCIDR, PodCIDR: netip.MustParsePrefix("10.42.0.0/28"),
		NodeIP: h.IP, DataDir: h.DataDir, NetnsPath: h.Path}
	nw, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if err := nw.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]bool{}
	var pod3 netip.Addr
	for i := range 13 {
		ns := l.NewNS(t, fmt.Sprintf("p%d", i))
		ip, err := nw.Setup(context.Background(), fmt.Sprintf("pod-%d", i), ns.Path)
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		got[ip.Addr.Addr()] = true
		if i == 3 {
			pod3 = ip.Addr.Addr()
		}
	}
	if len(got) != 13 {
		t.Fatalf("%d distinct addresses, want 13", len(got))
	}
	ns := l.NewNS(t, "p14")
	_, err = nw.Setup(context.Background(), "pod-14", ns.Path)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("Setup on a full CIDR: %v, want ErrExhausted", err)
	}
	hh, _ := h.Handle()
	defer hh.Close()
	if _, err := hh.LinkByName(vethName("pod-14")); err == nil {
		t.Error("failed Setup left a veth")
	}
	if err := nw.Teardown(context.Background(), "pod-3", ""); err != nil {
		t.Fatal(err)
	}
	ip, err := nw.Setup(context.Background(), "pod-14", ns.Path)
	if err != nil {
		t.Fatalf("Setup after a pod left: %v", err)
	}
	if ip.Addr.Addr() != pod3 {
		t.Errorf("new pod got %s, want the freed %s", ip.Addr.Addr(), pod3)
	}
}

func TestUninstall(t *testing.T) {
	l, nodes := newCluster(t, BackendVXLAN, 2)
	n := nodes[0]
	newPod(t, l, n, "pa")
	if err := n.net.Uninstall(); err != nil {
		t.Fatal(err)
	}
	h, err := n.host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{DefaultBridge, DefaultVXLAN} {
		if _, err := h.LinkByName(name); err == nil {
			t.Errorf("%s left after Uninstall", name)
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil || len(routes) != 0 {
		t.Errorf("routes left after Uninstall: %v %v", routes, err)
	}
	out, err := n.host.Command(context.Background(), "nft", "list", "tables").CombinedOutput()
	if err != nil || strings.Contains(string(out), DefaultTable) {
		t.Errorf("table left after Uninstall (%v): %s", err, out)
	}
	out, err = n.host.Command(context.Background(), "ip", "-4", "addr", "show", "dev", "lo").CombinedOutput()
	if err != nil || strings.Contains(string(out), gatewayLabel) {
		t.Errorf("gateway left on lo after Uninstall (%v): %s", err, out)
	}
	if err := n.net.Uninstall(); err != nil {
		t.Errorf("second Uninstall: %v", err)
	}
	// Init brings it all back.
	if err := n.net.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	announce(t, nodes)
	pa := newPod(t, l, n, "pa2")
	pb := newPod(t, l, nodes[1], "pb")
	echoTCP(t, pa.ns, pb.ns, pb.ip.Addr.Addr())
}

// TestFirstPacketsOfNewPods sends one datagram from each new pod the moment
// Setup returns, the first on a fresh bridge included. The kernel activates
// a new link's queueing from a work queue after carrier comes and drops
// what is sent before, such as the pod's first ARP request; Setup waits for
// that. The pods' ARP retransmit time is raised to 60 s so that a lost
// first ARP exchange shows as a missing datagram, not as a delay.
func TestFirstPacketsOfNewPods(t *testing.T) {
	l, nodes := newCluster(t, BackendVXLAN, 2)
	pa := newPod(t, l, nodes[1], "pa")
	var srv net.PacketConn
	if err := pa.ns.Do(func() (err error) {
		srv, err = net.ListenPacket("udp4", netip.AddrPortFrom(pa.ip.Addr.Addr(), 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const pods = 8
	for i := range pods {
		ns := l.NewNS(t, fmt.Sprintf("new%d", i))
		if _, err := nodes[0].net.Setup(context.Background(), fmt.Sprintf("new-%d", i), ns.Path); err != nil {
			t.Fatal(err)
		}
		if err := ns.Do(func() error {
			if err := os.WriteFile("/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", []byte("60000"), 0o644); err != nil {
				return err
			}
			c, err := net.Dial("udp4", srv.LocalAddr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = fmt.Fprintf(c, "pod %d", i)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	buf := make([]byte, 64)
	_ = srv.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(got) < pods {
		n, _, err := srv.ReadFrom(buf)
		if err != nil {
			break
		}
		got[string(buf[:n])] = true
	}
	if len(got) != pods {
		t.Errorf("%d of %d first datagrams arrived: %v", len(got), pods, got)
	}
}

// legacyPod plugs a pod in the way nodes did before pods were routed: a
// bridge holding the gateway as <gateway>/24, the host veth a port of it in
// hairpin mode, eth0 with a /24 and a default route via the gateway.
func legacyPod(t testing.TB, l *lab.Lab, n *testNode, name string) *testPod {
	t.Helper()
	ns := l.NewNS(t, name)
	uid := fmt.Sprintf("uid-%s-%d", name, time.Now().UnixNano())
	ip, err := n.net.ipam.Allocate(uid)
	if err != nil {
		t.Fatal(err)
	}
	h, err := n.host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	gw := gatewayOf(n.cfg.PodCIDR)
	br, err := h.LinkByName(DefaultBridge)
	if err != nil {
		br = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: DefaultBridge, MTU: n.net.MTU()}}
		must(t, h.LinkAdd(br))
		must(t, h.AddrAdd(br, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(gw, 24))}))
		must(t, h.LinkSetUp(br))
	}
	podNS, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	nsFd, err := os.Open(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nsFd.Close()
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: vethName(uid), MTU: n.net.MTU(), MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
		PeerName:  podIface, PeerMTU: uint32(n.net.MTU()), PeerNamespace: netlink.NsFd(int(nsFd.Fd())),
	}
	must(t, h.LinkAdd(veth))
	must(t, h.LinkSetHairpin(veth, true))
	lo, err := podNS.LinkByName("lo")
	must(t, err)
	must(t, podNS.LinkSetUp(lo))
	eth, err := podNS.LinkByName(podIface)
	must(t, err)
	addr := netip.PrefixFrom(ip, 24)
	must(t, podNS.AddrAdd(eth, &netlink.Addr{IPNet: prefixNet(addr)}))
	must(t, podNS.LinkSetUp(eth))
	must(t, podNS.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}))
	return &testPod{uid: uid, ns: ns, ip: PodIP{Addr: addr, Gateway: gw}}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFromBridge: a node whose pods are on the bridge of an earlier
// version keeps them connected across the agent's restart, routes new pods
// next to them, moves each to a routed veth when Setup sees it again, and
// drops the bridge with its last port.
func TestUpgradeFromBridge(t *testing.T) {
	l, nodes := newCluster(t, BackendVXLAN, 2)
	a, b := nodes[0], nodes[1]
	old1 := legacyPod(t, l, a, "old1")
	old2 := legacyPod(t, l, a, "old2")
	pb := newPod(t, l, b, "pb")
	ip := func(p *testPod) netip.Addr { return p.ip.Addr.Addr() }
	a.restart(t, t)
	announce(t, nodes)
	fresh := newPod(t, l, a, "fresh")
	h, err := a.host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(DefaultBridge); err != nil {
		t.Fatalf("legacy bridge with pods removed: %v", err)
	}
	// check: every pod of node a reaches the others and pb on node b,
	// and is reached by both nodes, without NAT; traffic to outside
	// leaves with a's address.
	check := func(t *testing.T, pods ...*testPod) {
		for _, p := range pods {
			for _, q := range append(pods, pb) {
				if p != q {
					if src := echoTCP(t, p.ns, q.ns, ip(q)); src != ip(p) {
						t.Errorf("%s seen by %s as %s, want %s", p.ns.Name, q.ns.Name, src, ip(p))
					}
				}
			}
			echoTCP(t, pb.ns, p.ns, ip(p))
			echoTCP(t, a.host.NS, p.ns, ip(p))
			echoTCP(t, b.host.NS, p.ns, ip(p))
			echoTCP(t, p.ns, a.host.NS, a.host.IP)
			echoTCP(t, p.ns, a.host.NS, gatewayOf(a.cfg.PodCIDR))
			echoUDP(t, p.ns, pb.ns, ip(pb))
			if src := echoTCP(t, p.ns, l.Client.NS, lab.ClientIP); src != a.host.IP {
				t.Errorf("client saw %s as %s, want node IP %s", p.ns.Name, src, a.host.IP)
			}
		}
	}
	bridge := func() bool { _, err := h.LinkByName(DefaultBridge); return err == nil }
	t.Run("bridged and routed pods together", func(t *testing.T) { check(t, old1, old2, fresh) })
	t.Run("bridged pods move to routed veths", func(t *testing.T) {
		for i, p := range []*testPod{old1, old2} {
			got, err := a.net.Setup(context.Background(), p.uid, p.ns.Path)
			if err != nil || got.Addr.Addr() != ip(p) || got.Addr.Bits() != 32 {
				t.Fatalf("Setup of bridged pod %s = %+v %v, want %s/32", p.ns.Name, got, err, ip(p))
			}
			p.ip = got
			if gone := !bridge(); gone != (i == 1) {
				t.Errorf("after moving %d of 2 pods, bridge gone = %v", i+1, gone)
			}
		}
		check(t, old1, old2, fresh)
	})
	t.Run("Teardown of the last bridged pod drops the bridge", func(t *testing.T) {
		old3 := legacyPod(t, l, a, "old3")
		a.restart(t, t)
		check(t, old1, old3)
		if err := a.net.Teardown(context.Background(), old3.uid, old3.ns.Path); err != nil {
			t.Fatal(err)
		}
		if bridge() {
			t.Error("bridge left after its last pod's Teardown")
		}
	})
	t.Run("Init drops an empty bridge", func(t *testing.T) {
		old4 := legacyPod(t, l, a, "old4")
		must(t, h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethName(old4.uid)}}))
		a.restart(t, t)
		if bridge() {
			t.Error("Init kept an empty legacy bridge")
		}
		check(t, old1, fresh)
	})
}
