package dns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/orch-dev/orch/dns/loopguard"
	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/internal/lab"
)

var dnsIP = netip.MustParseAddr("10.43.0.10")

// stubIP is the upstream stub's address on the process's loopback (where
// CoreDNS's forward dials from); unique per run so parallel runs never meet.
var stubIP = fmt.Sprintf("127.53.%d.%d", os.Getpid()%250+1, time.Now().UnixNano()%250+1)

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
}

// testNS is a throw-away lab host (a network namespace) with lo up.
func testNS(t testing.TB) lab.NS {
	t.Helper()
	l := lab.New(t, 1)
	ns := l.Hosts[0].NS
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := lab.LinkUp(h, "lo"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// stub starts an upstream resolver on addr:53 of the process's loopback (UDP
// and TCP) that answers upstream.example. and NXDOMAIN for everything else,
// or forwards to forwardTo inside ns when set.
func stub(t testing.TB, ns lab.NS, addr, forwardTo string) {
	t.Helper()
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		if forwardTo != "" {
			var resp *mdns.Msg
			err := ns.Do(func() error {
				c := &mdns.Client{Timeout: time.Second}
				var err error
				resp, _, err = c.Exchange(r, forwardTo)
				return err
			})
			if err != nil {
				resp = new(mdns.Msg)
				resp.SetRcode(r, mdns.RcodeServerFailure)
			}
			_ = w.WriteMsg(resp)
			return
		}
		m := new(mdns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; strings.EqualFold(q.Name, "upstream.example.") && q.Qtype == mdns.TypeA {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")}}
		} else if !strings.EqualFold(q.Name, "upstream.example.") {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	serveStub(t, addr, handler)
}

// serveStub serves handler on addr port 53, UDP and TCP, until t ends.
func serveStub(t testing.TB, addr string, handler mdns.Handler) {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, "53"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "53"))
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

type harness struct {
	ns     lab.NS
	api    *apitest.Server
	client kube.Interface
	srv    *Server
	done   chan error
	cancel context.CancelFunc
}

func start(t *testing.T, ns lab.NS, api *apitest.Server, cfg Config) *harness {
	t.Helper()
	if cfg.NetNS == "" {
		cfg.NetNS = ns.Path
	}
	if len(cfg.Addrs) == 0 {
		cfg.Addrs = []netip.Addr{dnsIP}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := New(cfg, api.Kube, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{ns: ns, api: api, client: api.Kube, srv: srv, done: make(chan error, 1), cancel: cancel}
	go func() { h.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if h.done == nil {
			return
		}
		select {
		case err := <-h.done:
			if err != nil && !errors.Is(err, loopguard.ErrLoop) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Error("Run did not return")
		}
	})
	// Wait until it answers.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r, err := h.exchange("udp", "cluster.local.", mdns.TypeSOA); err == nil && r.Rcode == mdns.RcodeSuccess {
			return h
		}
		select {
		case err := <-h.done:
			h.done = nil
			t.Fatalf("Run ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not start answering")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exchange queries the server from inside the namespace.
func (h *harness) exchange(network, name string, qtype uint16) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	var r *mdns.Msg
	err := h.ns.Do(func() error {
		c := &mdns.Client{Net: network, Timeout: 2 * time.Second}
		var err error
		r, _, err = c.Exchange(m, net.JoinHostPort(dnsIP.String(), "53"))
		return err
	})
	return r, err
}

func (h *harness) mustExchange(t *testing.T, network, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	r, err := h.exchange(network, name, qtype)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, mdns.TypeToString[qtype], network, err)
	}
	return r
}

func answers(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, rr.A.String())
		case *mdns.AAAA:
			out = append(out, rr.AAAA.String())
		case *mdns.CNAME:
			out = append(out, "CNAME "+rr.Target)
		case *mdns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %s", rr.Port, rr.Target))
		case *mdns.PTR:
			out = append(out, "PTR "+rr.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func resolvConf(t testing.TB, servers ...string) string {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func create[T any](t testing.TB, fn func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := fn(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func headless(t testing.TB, cs kube.Interface, ns, name string, n int) {
	t.Helper()
	create(t, cs.CoreV1().Services(ns).Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}}})
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("pg"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](5432)}}}
	for i := range n {
		ep := discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.42.%d.%d", i/250, i%250+2)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}
		if i == 0 {
			ep.Hostname = ptr(name + "-0")
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	create(t, cs.DiscoveryV1().EndpointSlices(ns).Create, es)
}

// TestEndToEnd runs the embedded server in a throw-away namespace against a
// real API server and a stub upstream resolver inside the namespace.
func TestEndToEnd(t *testing.T) {
	needRoot(t)
	ns := testNS(t)
	stub(t, ns, stubIP, "")
	api := apitest.Start(t)
	cs := api.Kube
	create(t, cs.CoreV1().Services("default").Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.20", Ports: []corev1.ServicePort{{Name: "redis", Port: 6379}}}})
	create(t, cs.CoreV1().Services("default").Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "upstream.example"}})
	headless(t, cs, "default", "db", 3)
	headless(t, cs, "default", "big", 200)
	create(t, cs.CoreV1().Nodes().Create, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "orchtest-node"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.31.250.10"}}}})

	h := start(t, ns, api, Config{ResolvConf: resolvConf(t, stubIP, dnsIP.String())})
	if strings.Contains(h.srv.Corefile(), "forward . "+dnsIP.String()) {
		t.Errorf("the server's own address was kept as an upstream:\n%s", h.srv.Corefile())
	}

	check := func(network, name string, qtype uint16, rcode int, want ...string) {
		t.Helper()
		r := h.mustExchange(t, network, name, qtype)
		got := answers(r)
		if r.Rcode != rcode || strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s %s: %s %q, want %s %q", name, mdns.TypeToString[qtype], mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[rcode], want)
		}
	}
	ok := mdns.RcodeSuccess
	// The FQDNs a pod's search path produces for `redis` and `redis.default`.
	check("udp", "redis.default.svc.cluster.local.", mdns.TypeA, ok, "10.43.0.20")
	check("tcp", "redis.default.svc.cluster.local.", mdns.TypeA, ok, "10.43.0.20")
	check("udp", "redis.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError)
	check("udp", "redis.default.svc.cluster.local.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError)
	check("udp", "_redis._tcp.redis.default.svc.cluster.local.", mdns.TypeSRV, ok, "SRV 6379 redis.default.svc.cluster.local.")
	check("udp", "db-0.db.default.svc.cluster.local.", mdns.TypeA, ok, "10.42.0.2")
	check("udp", "20.0.43.10.in-addr.arpa.", mdns.TypePTR, ok, "PTR redis.default.svc.cluster.local.")
	check("udp", "ext.default.svc.cluster.local.", mdns.TypeA, ok, "CNAME upstream.example.", "192.0.2.1")
	check("udp", "upstream.example.", mdns.TypeA, ok, "192.0.2.1")
	check("udp", "nowhere.example.", mdns.TypeA, mdns.RcodeNameError)
	check("udp", "orchtest-node.", mdns.TypeA, ok, "172.31.250.10")
	if r := h.mustExchange(t, "udp", "db.default.svc.cluster.local.", mdns.TypeA); len(r.Answer) != 3 {
		t.Errorf("headless db: %q", answers(r))
	}
	if r := h.mustExchange(t, "udp", "_pg._tcp.db.default.svc.cluster.local.", mdns.TypeSRV); len(r.Answer) != 3 || len(r.Extra) != 3 {
		t.Errorf("headless SRV: %q extra %d", answers(r), len(r.Extra))
	}

	// Big answers: truncated with TC over UDP, whole over TCP.
	r := h.mustExchange(t, "udp", "big.default.svc.cluster.local.", mdns.TypeA)
	if !r.Truncated || len(r.Answer) >= 200 {
		t.Errorf("200 endpoints over UDP: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
	r = h.mustExchange(t, "tcp", "big.default.svc.cluster.local.", mdns.TypeA)
	if r.Truncated || len(r.Answer) != 200 {
		t.Errorf("200 endpoints over TCP: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}

	// Malformed and oversized input: garbage datagrams, a message with many
	// questions, a TCP frame longer than its content; the server keeps serving.
	if err := ns.Do(func() error {
		addr := net.JoinHostPort(dnsIP.String(), "53")
		u, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer u.Close()
		for _, b := range [][]byte{{}, {0}, []byte("garbage garbage garbage"), make([]byte, 4096), {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63}} {
			if _, err := u.Write(b); err != nil {
				return err
			}
		}
		m := new(mdns.Msg)
		m.SetQuestion("redis.default.svc.cluster.local.", mdns.TypeA)
		for range 500 {
			m.Question = append(m.Question, m.Question[0])
		}
		wire, err := m.Pack()
		if err != nil {
			return err
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, _ = c.Write(append([]byte{0xff, 0xff}, wire...)) // claims 65535 bytes, sends fewer
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = c.Read(make([]byte, 512))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("udp", "redis.default.svc.cluster.local.", mdns.TypeA, ok, "10.43.0.20")
	check("tcp", "redis.default.svc.cluster.local.", mdns.TypeA, ok, "10.43.0.20")

	// A new Service resolves at once (no negative caching of cluster names).
	check("udp", "fresh.default.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError)
	t0 := time.Now()
	create(t, cs.CoreV1().Services("default").Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.21", Ports: []corev1.ServicePort{{Port: 80}}}})
	for {
		r := h.mustExchange(t, "udp", "fresh.default.svc.cluster.local.", mdns.TypeA)
		if len(r.Answer) == 1 {
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatal("new Service never resolved")
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("a new Service resolved %v after its create call was sent", time.Since(t0))

	// coredns-custom: an override stanza, then a change, reloaded live.
	cm := create(t, cs.CoreV1().ConfigMaps("kube-system").Create, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns-custom", Namespace: "kube-system"},
		Data: map[string]string{"hosts.override": "hosts {\n  192.0.2.77 custom.example\n  fallthrough\n}"}})
	waitAnswer := func(name string, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := h.exchange("udp", name, mdns.TypeA)
			if err == nil && strings.Join(answers(r), ",") == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: never answered %q (last %v %v)", name, want, r, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitAnswer("custom.example.", "192.0.2.77")
	check("udp", "redis.default.svc.cluster.local.", mdns.TypeA, ok, "10.43.0.20")
	// A broken stanza is rejected and the running configuration stays.
	setData := func(data map[string]string) {
		t.Helper()
		cur, err := cs.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "coredns-custom", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Data = data
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setData(map[string]string{"bad.override": "nosuchplugin", "hosts.override": cm.Data["hosts.override"]})
	time.Sleep(300 * time.Millisecond)
	check("udp", "custom.example.", mdns.TypeA, ok, "192.0.2.77")
	setData(map[string]string{"hosts.override": "hosts {\n  192.0.2.78 custom.example\n  fallthrough\n}"})
	waitAnswer("custom.example.", "192.0.2.78")
	check("udp", "upstream.example.", mdns.TypeA, ok, "192.0.2.1")

	// Stopping removes the interface the server created.
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatal("Run did not return")
	}
	h.done <- nil
	nh, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if _, err := nh.LinkByName("orch-dns"); err == nil {
		t.Error("orch-dns link left behind")
	}
	addrs, err := nh.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.String() == dnsIP.String() {
			t.Errorf("%s left on %d", dnsIP, a.LinkIndex)
		}
	}
}

// TestForwardLoop points the upstream at a resolver that forwards straight
// back to the server: Run must end with ErrLoop, not kill the process.
func TestForwardLoop(t *testing.T) {
	needRoot(t)
	ns := testNS(t)
	stub(t, ns, stubIP, net.JoinHostPort(dnsIP.String(), "53"))
	api := apitest.Start(t)
	srv, err := New(Config{NetNS: ns.Path, Addrs: []netip.Addr{dnsIP}, ResolvConf: resolvConf(t, stubIP)}, api.Kube, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Run(ctx); !errors.Is(err, loopguard.ErrLoop) {
		t.Fatalf("Run: %v, want ErrLoop", err)
	}
	nh, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if _, err := nh.LinkByName("orch-dns"); err == nil {
		t.Error("orch-dns link left behind")
	}
}

// TestCustomServerBlock adds a whole server block (bound to the cluster DNS
// address automatically) for a zone that forwards elsewhere.
func TestCustomServerBlock(t *testing.T) {
	needRoot(t)
	ns := testNS(t)
	stub(t, ns, stubIP, "")
	api := apitest.Start(t)
	create(t, api.Kube.CoreV1().ConfigMaps("kube-system").Create, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns-custom", Namespace: "kube-system"},
		Data: map[string]string{"corp.server": "corp.internal:53 {\n  hosts {\n    192.0.2.99 app.corp.internal\n  }\n}"}})
	h := start(t, ns, api, Config{ResolvConf: resolvConf(t)})
	if !strings.Contains(h.srv.Corefile(), "bind "+dnsIP.String()+"\n  hosts") && !strings.Contains(h.srv.Corefile(), "corp.internal:53 {\n    bind") {
		t.Errorf("custom block not bound:\n%s", h.srv.Corefile())
	}
	r := h.mustExchange(t, "udp", "app.corp.internal.", mdns.TypeA)
	if got := answers(r); len(got) != 1 || got[0] != "192.0.2.99" {
		t.Errorf("custom block: %q", got)
	}
	// No upstream: other names fail cleanly and cluster names still work.
	r = h.mustExchange(t, "udp", "kubernetes.default.svc.cluster.local.", mdns.TypeA)
	if len(r.Answer) != 1 {
		t.Errorf("kubernetes service: %v", r)
	}
}
