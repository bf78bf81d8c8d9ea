package netproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/internal/kube/clientgo"
)

// ---- Kubernetes object builders shared by all tests ----

type svcOpt func(*v1.Service)

func mkService(ns, name, clusterIP string, opts ...svcOpt) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
		},
	}
	for _, o := range opts {
		o(s)
	}
	if len(s.Spec.Ports) == 0 {
		s.Spec.Ports = []v1.ServicePort{{Name: "tcp", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}
	}
	return s
}

func withPort(name string, proto v1.Protocol, port, nodePort int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: name, Protocol: proto, Port: port, NodePort: nodePort})
	}
}

func withType(t v1.ServiceType) svcOpt { return func(s *v1.Service) { s.Spec.Type = t } }

func withAffinity(secs int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &secs}}
	}
}

func withExtLocal() svcOpt {
	return func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
}

func withIntLocal() svcOpt {
	return func(s *v1.Service) {
		p := v1.ServiceInternalTrafficPolicyLocal
		s.Spec.InternalTrafficPolicy = &p
	}
}

func withExternalIPs(ips ...string) svcOpt {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

type ep struct {
	ip, node             string
	ready, serving, term bool
}

func readyEP(ip, node string) ep { return ep{ip: ip, node: node, ready: true, serving: true} }

type slicePort struct {
	name  string
	proto v1.Protocol
	port  int32
}

func mkSlice(ns, svc, name string, ports []slicePort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr(p.name), Protocol: ptr(p.proto), Port: ptr(p.port)})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			NodeName:   ptr(e.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.term)},
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// ---- network namespaces (root only) ----

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
}

var nsCounter atomic.Int64

// newNetns creates a named network namespace that is deleted when the test
// ends.
func newNetns(t testing.TB, role string) (netns.NsHandle, string) {
	t.Helper()
	name := fmt.Sprintf("orchtest-px-%s-%d-%d", role, os.Getpid(), nsCounter.Add(1))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		// The thread is in the wrong namespace; keep it locked so it dies.
		runtime.LockOSThread()
		t.Fatalf("restore netns: %v", serr)
	}
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns, filepath.Join("/run/netns", name)
}

// inNS runs fn on a thread switched into ns. Sockets created by fn stay in ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, err) // thread stays locked and is discarded
	}
	runtime.UnlockOSThread()
	return ferr
}

// topo is the test network:
//
//	client ns   eth0 192.168.77.2/24 --- node ns tocli 192.168.77.1/24
//	pod ns i    eth0 10.42.0.1i/32   --- node ns vpodi, route 10.42.0.1i/32
//	                                     node ns lo 10.42.0.1/32 (the pods' gateway)
//
// like a node with three pods on routed veths, as agent/podnet sets them up:
// no bridge, each pod's default route via the gateway onlink, a pod reaching
// itself through a Service routed back out of its own veth. The node routes
// the service range 10.43.0.0/16 towards the client (as a node's default
// route would).
type topo struct {
	node, client netns.NsHandle
	pods         []netns.NsHandle
	nodePath     string
	podIPs       []string
	nodeIP       string
}

func newTopo(t testing.TB) *topo {
	t.Helper()
	needRoot(t)
	tp := &topo{podIPs: []string{"10.42.0.11", "10.42.0.12", "10.42.0.13"}, nodeIP: "192.168.77.1"}
	tp.node, tp.nodePath = newNetns(t, "node")
	tp.client, _ = newNetns(t, "cli")
	hn := mustHandle(t, tp.node)
	hc := mustHandle(t, tp.client)
	up := func(h *netlink.Handle, name string, addrs ...string) netlink.Link {
		l, err := h.LinkByName(name)
		must(t, err)
		for _, a := range addrs {
			ad, err := netlink.ParseAddr(a)
			must(t, err)
			must(t, h.AddrAdd(l, ad))
		}
		must(t, h.LinkSetUp(l))
		return l
	}
	gw := func(h *netlink.Handle, via string) {
		must(t, h.RouteAdd(&netlink.Route{Gw: net.ParseIP(via)}))
	}
	up(hn, "lo", "10.42.0.1/32")
	for i, ip := range tp.podIPs {
		pod, _ := newNetns(t, fmt.Sprintf("pod%d", i))
		tp.pods = append(tp.pods, pod)
		hp := mustHandle(t, pod)
		port := fmt.Sprintf("vpod%d", i)
		must(t, hn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod))}))
		l := up(hn, port)
		must(t, hn.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(32, 32)}, LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK}))
		up(hp, "lo")
		eth := up(hp, "eth0", ip+"/32")
		must(t, hp.RouteAdd(&netlink.Route{Gw: net.ParseIP("10.42.0.1"), LinkIndex: eth.Attrs().Index, Flags: int(netlink.FLAG_ONLINK)}))
	}
	must(t, hn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tocli"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(tp.client))}))
	up(hn, "tocli", "192.168.77.1/24")
	up(hc, "lo")
	up(hc, "eth0", "192.168.77.2/24")
	gw(hc, "192.168.77.1")
	_, svcNet, _ := net.ParseCIDR("10.43.0.0/16")
	must(t, hn.RouteAdd(&netlink.Route{Dst: svcNet, Gw: net.ParseIP("192.168.77.2")}))
	// Forwarding inside the node namespace only (sysctls under /proc/sys/net
	// belong to the opener's network namespace).
	must(t, inNS(tp.node, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}))
	return tp
}

func mustHandle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	t.Cleanup(h.Close)
	return h
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// echo servers: each pod IP answers TCP on 8080 and UDP on 5353 with
// "<its own ip> <peer ip>".
func (tp *topo) startEcho(t testing.TB) {
	t.Helper()
	var wg sync.WaitGroup
	var lns []io.Closer
	for i, ip := range tp.podIPs {
		var ln net.Listener
		var pc net.PacketConn
		must(t, inNS(tp.pods[i], func() error {
			var err error
			ln, err = net.Listen("tcp4", ip+":8080")
			if err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp4", ip+":5353")
			return err
		}))
		lns = append(lns, ln, pc)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				peer := c.RemoteAddr().(*net.TCPAddr).IP.String()
				_, _ = fmt.Fprintf(c, "%s %s\n", ip, peer)
				_ = c.Close()
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				peer := from.(*net.UDPAddr).IP.String()
				_, _ = pc.WriteTo([]byte(ip+" "+peer+"\n"), from)
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range lns {
			_ = c.Close()
		}
		wg.Wait()
	})
}

// dialer returns a net.Dialer-like function whose sockets live in ns.
func tcpAsk(ns netns.NsHandle, addr string, timeout time.Duration) (server, peer string, err error) {
	var c net.Conn
	err = inNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", "", fmt.Errorf("read from %s: %w", addr, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("bad answer %q", line)
	}
	return f[0], f[1], nil
}

// udpConn is a UDP socket in ns that keeps its source port across asks.
type udpConn struct{ c *net.UDPConn }

func newUDPConn(t testing.TB, ns netns.NsHandle, addr string) *udpConn {
	t.Helper()
	var c *net.UDPConn
	must(t, inNS(ns, func() error {
		ra, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp4", nil, ra)
		return err
	}))
	t.Cleanup(func() { _ = c.Close() })
	return &udpConn{c: c}
}

func (u *udpConn) ask(timeout time.Duration) (string, error) {
	if _, err := u.c.Write([]byte("?")); err != nil {
		return "", err
	}
	_ = u.c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 100)
	n, err := u.c.Read(buf)
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) != 2 {
		return "", fmt.Errorf("bad answer %q", buf[:n])
	}
	return f[0], nil
}

// runProxy starts a Proxy in the node namespace against a fake clientset.
func (tp *topo) runProxy(t testing.TB, objs ...k8sruntime.Object) (*Proxy, kube.Interface) {
	t.Helper()
	client := clientgo.Wrap(fake.NewClientset(objs...))
	p, err := New(Config{
		NodeName:        "node1",
		NodeIPs:         []netip.Addr{netip.MustParseAddr(tp.nodeIP)},
		ClusterCIDR:     netip.MustParsePrefix("10.42.0.0/16"),
		TableName:       "orchtest-px",
		NetNS:           tp.nodePath,
		MinSyncInterval: 10 * time.Millisecond,
		CheckInterval:   100 * time.Millisecond,
	}, client, testLogger(t))
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, 10*time.Second, func() error {
		if p.Stats().FullSyncs == 0 {
			return errors.New("no full sync yet")
		}
		return nil
	})
	return p, client
}

// eventually retries fn until it succeeds or the deadline passes (waiting
// for the proxy to converge; not a performance assertion).
func eventually(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
