package cluster

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/orch-dev/orch/internal/kube/clientgo"
)

func ptr[T any](v T) *T { return &v }

// fixture is a small cluster: a ClusterIP Service with named ports, a
// dual-stack one, a headless one with hostname endpoints and a not-ready one,
// an ExternalName Service, and a Node.
func fixture() []any {
	return []any{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: "default"}, Spec: corev1.ServiceSpec{
			ClusterIP: "10.43.0.20", ClusterIPs: []string{"10.43.0.20"},
			Ports: []corev1.ServicePort{{Name: "redis", Protocol: corev1.ProtocolTCP, Port: 6379}, {Name: "Metrics", Protocol: corev1.ProtocolUDP, Port: 9121}, {Port: 7000}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			ClusterIP: "10.43.0.30", ClusterIPs: []string{"10.43.0.30", "fd00:43::30"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.org"}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "db-abc", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("pg"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](5432)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.42.0.5"}, Hostname: ptr("db-0"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
				{Addresses: []string{"10.42.1.6"}, Conditions: discoveryv1.EndpointConditions{}},
				{Addresses: []string{"10.42.1.7"}, Hostname: ptr("db-2"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "172.31.250.10"}, {Type: corev1.NodeHostName, Address: "node-a"}}}},
	}
}

// newHandler starts a Feed on a fake clientset holding objs (the informers
// are client-go's real ones) and waits until the index has synced.
func newHandler(t *testing.T, objs ...any) (*Handler, *fake.Clientset) {
	t.Helper()
	var ros []any
	ros = append(ros, objs...)
	cs := fake.NewClientset()
	for _, o := range ros {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = cs.CoreV1().Services(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = cs.DiscoveryV1().EndpointSlices(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
		case *corev1.Node:
			_, err = cs.CoreV1().Nodes().Create(context.Background(), o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	x := NewIndex()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewFeed(clientgo.Wrap(cs), x, slog.New(slog.NewTextHandler(io.Discard, nil))).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("feed: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !x.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("feed did not sync")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h := &Handler{Zone: "cluster.local.", ReverseZones: []string{"in-addr.arpa.", "ip6.arpa."}, TTL: DefaultTTL, Index: x,
		NS: []netip.Addr{netip.MustParseAddr("10.43.0.10")}, Next: refuser{}}
	return h, cs
}

// refuser is the next plugin in tests: it answers REFUSED.
type refuser struct{}

func (refuser) Name() string { return "refuser" }
func (refuser) ServeDNS(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeRefused)
	return dns.RcodeRefused, w.WriteMsg(m)
}

func query(t *testing.T, h *Handler, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r := new(dns.Msg)
	r.SetQuestion(name, qtype)
	w := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := h.ServeDNS(context.Background(), w, r); err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	if w.Msg == nil {
		t.Fatalf("%s %s: no reply written", name, dns.TypeToString[qtype])
	}
	return w.Msg
}

// rrs renders a section without TTL-independent noise, sorted.
func rrs(sec []dns.RR) []string {
	var out []string
	for _, rr := range sec {
		s := rr.String()
		out = append(out, strings.Join(strings.Fields(s), " "))
	}
	sort.Strings(out)
	return out
}

func TestRecords(t *testing.T) {
	h, _ := newHandler(t, fixture()...)
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		extra  []string
		soa    bool // negative answer carries the SOA
	}{
		{name: "redis.default.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"redis.default.svc.cluster.local. 5 IN A 10.43.0.20"}},
		{name: "REDIS.Default.SVC.cluster.LOCAL.", qtype: dns.TypeA, answer: []string{"REDIS.Default.SVC.cluster.LOCAL. 5 IN A 10.43.0.20"}},
		{name: "redis.default.svc.cluster.local.", qtype: dns.TypeAAAA, soa: true},
		{name: "redis.default.svc.cluster.local.", qtype: dns.TypeTXT, soa: true},
		{name: "redis.other.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "nope.default.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "default.svc.cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "empty.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "svc.cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "x.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "*.default.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "a.b.redis.default.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "cluster.local.", qtype: dns.TypeSOA, answer: []string{"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"}},
		{name: "cluster.local.", qtype: dns.TypeNS, answer: []string{"cluster.local. 5 IN NS ns.dns.cluster.local."},
			extra: []string{"ns.dns.cluster.local. 5 IN A 10.43.0.10"}},
		{name: "ns.dns.cluster.local.", qtype: dns.TypeA, answer: []string{"ns.dns.cluster.local. 5 IN A 10.43.0.10"}},
		// Named ports.
		{name: "_redis._tcp.redis.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_redis._tcp.redis.default.svc.cluster.local. 5 IN SRV 0 100 6379 redis.default.svc.cluster.local."},
			extra:  []string{"redis.default.svc.cluster.local. 5 IN A 10.43.0.20"}},
		{name: "_metrics._udp.redis.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_metrics._udp.redis.default.svc.cluster.local. 5 IN SRV 0 100 9121 redis.default.svc.cluster.local."},
			extra:  []string{"redis.default.svc.cluster.local. 5 IN A 10.43.0.20"}},
		{name: "_redis._udp.redis.default.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: true},
		{name: "_redis._tcp.redis.default.svc.cluster.local.", qtype: dns.TypeA, soa: true},
		{name: "_tcp.redis.default.svc.cluster.local.", qtype: dns.TypeSRV, soa: true},
		{name: "_sctp.redis.default.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: true},
		{name: "redis.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"redis.default.svc.cluster.local. 5 IN SRV 0 50 6379 redis.default.svc.cluster.local.", "redis.default.svc.cluster.local. 5 IN SRV 0 50 9121 redis.default.svc.cluster.local."},
			extra:  []string{"redis.default.svc.cluster.local. 5 IN A 10.43.0.20"}},
		// Dual stack.
		{name: "web.shop.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"web.shop.svc.cluster.local. 5 IN A 10.43.0.30"}},
		{name: "web.shop.svc.cluster.local.", qtype: dns.TypeAAAA, answer: []string{"web.shop.svc.cluster.local. 5 IN AAAA fd00:43::30"}},
		// Headless: ready endpoints only, hostnames, dashed addresses.
		{name: "db.shop.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"db.shop.svc.cluster.local. 5 IN A 10.42.0.5", "db.shop.svc.cluster.local. 5 IN A 10.42.1.6"}},
		{name: "db-0.db.shop.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"db-0.db.shop.svc.cluster.local. 5 IN A 10.42.0.5"}},
		{name: "10-42-1-6.db.shop.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"10-42-1-6.db.shop.svc.cluster.local. 5 IN A 10.42.1.6"}},
		{name: "db-2.db.shop.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "db-0.db.shop.svc.cluster.local.", qtype: dns.TypeAAAA, soa: true},
		{name: "db-0.web.shop.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "_pg._tcp.db.shop.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 10-42-1-6.db.shop.svc.cluster.local.", "_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.shop.svc.cluster.local."},
			extra:  []string{"10-42-1-6.db.shop.svc.cluster.local. 5 IN A 10.42.1.6", "db-0.db.shop.svc.cluster.local. 5 IN A 10.42.0.5"}},
		// ExternalName.
		{name: "ext.shop.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"ext.shop.svc.cluster.local. 5 IN CNAME db.example.org."}},
		{name: "ext.shop.svc.cluster.local.", qtype: dns.TypeCNAME, answer: []string{"ext.shop.svc.cluster.local. 5 IN CNAME db.example.org."}},
		{name: "_x._tcp.ext.shop.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: true},
		// Pods.
		{name: "10-42-0-9.default.pod.cluster.local.", qtype: dns.TypeA, answer: []string{"10-42-0-9.default.pod.cluster.local. 5 IN A 10.42.0.9"}},
		{name: "fd00-42--9.default.pod.cluster.local.", qtype: dns.TypeAAAA, answer: []string{"fd00-42--9.default.pod.cluster.local. 5 IN AAAA fd00:42::9"}},
		{name: "10-42-0-9.default.pod.cluster.local.", qtype: dns.TypeAAAA, soa: true},
		{name: "10-42-0.default.pod.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "300-1-1-1.default.pod.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "default.pod.cluster.local.", qtype: dns.TypeA, soa: true},
		// PTR for service and endpoint addresses.
		{name: "20.0.43.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"20.0.43.10.in-addr.arpa. 5 IN PTR redis.default.svc.cluster.local."}},
		{name: "5.0.42.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"5.0.42.10.in-addr.arpa. 5 IN PTR db-0.db.shop.svc.cluster.local."}},
		{name: "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR,
			answer: []string{"0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web.shop.svc.cluster.local."}},
		// Node names (NodeHosts), not authoritative.
		{name: "node-a.", qtype: dns.TypeA, answer: []string{"node-a. 5 IN A 172.31.250.10"}},
	} {
		m := query(t, h, tc.name, tc.qtype)
		what := tc.name + " " + dns.TypeToString[tc.qtype]
		if m.Rcode != tc.rcode {
			t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
		}
		got := rrs(m.Answer)
		for i, a := range got {
			if strings.Contains(a, " SOA ") {
				got[i] = strings.Replace(a, strings.Fields(a)[6], "SERIAL", 1)
			}
		}
		if !slices.Equal(got, tc.answer) {
			t.Errorf("%s: answer\n%q\nwant\n%q", what, got, tc.answer)
		}
		if tc.extra != nil && !slices.Equal(rrs(m.Extra), tc.extra) {
			t.Errorf("%s: extra\n%q\nwant\n%q", what, rrs(m.Extra), tc.extra)
		}
		hasSOA := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA && m.Ns[0].Header().Ttl == DefaultTTL
		if hasSOA != tc.soa {
			t.Errorf("%s: SOA in authority %v, want %v (%v)", what, hasSOA, tc.soa, m.Ns)
		}
		if strings.Contains(tc.name, "cluster.local") && !m.Authoritative {
			t.Errorf("%s: not authoritative", what)
		}
	}
}

// selfResolver chases names through the handler itself, as CoreDNS's
// upstream lookup does through the whole server.
type selfResolver struct {
	h     *Handler
	calls int
}

func (s *selfResolver) Lookup(ctx context.Context, state request.Request, name string, qtype uint16) (*dns.Msg, error) {
	s.calls++
	r := new(dns.Msg)
	r.SetQuestion(name, qtype)
	w := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := s.h.ServeDNS(ctx, w, r); err != nil {
		return nil, err
	}
	return w.Msg, nil
}

func TestExternalNameInZoneChasedAndLoopsEnd(t *testing.T) {
	h, _ := newHandler(t,
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"}, Spec: corev1.ServiceSpec{
			ClusterIP: "10.43.0.2", ClusterIPs: []string{"10.43.0.2"}, Ports: []corev1.ServicePort{{Port: 80}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "alias", Namespace: "default"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "echo.default.svc.cluster.local"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "default"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "b.default.svc.cluster.local"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "default"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "a.default.svc.cluster.local"}},
	)
	up := &selfResolver{h: h}
	h.Upstream = up
	got := rrs(query(t, h, "alias.default.svc.cluster.local.", dns.TypeA).Answer)
	want := []string{"alias.default.svc.cluster.local. 5 IN CNAME echo.default.svc.cluster.local.", "echo.default.svc.cluster.local. 5 IN A 10.43.0.2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("alias A = %v, want %v", got, want)
	}
	// A CNAME question is answered with the alias alone.
	if got := rrs(query(t, h, "alias.default.svc.cluster.local.", dns.TypeCNAME).Answer); len(got) != 1 {
		t.Errorf("alias CNAME = %v", got)
	}
	up.calls = 0
	m := query(t, h, "a.default.svc.cluster.local.", dns.TypeA)
	if up.calls != maxChase {
		t.Errorf("a → b → a: %d lookups, want the bound %d", up.calls, maxChase)
	}
	for _, rr := range m.Answer {
		if rr.Header().Rrtype != dns.TypeCNAME {
			t.Errorf("a loop answered %v", rr)
		}
	}
}

func TestFallThrough(t *testing.T) {
	h, _ := newHandler(t, fixture()...)
	for _, name := range []string{"example.org.", "node-b.", "9.9.9.10.in-addr.arpa.", "in-addr.arpa.", "localcluster."} {
		m := query(t, h, name, dns.TypeA)
		if m.Rcode != dns.RcodeRefused {
			t.Errorf("%s: rcode %s, want the next plugin's REFUSED", name, dns.RcodeToString[m.Rcode])
		}
	}
}

// TestUpdates follows informer events: a new Service, endpoint changes, a
// deletion, a Service whose slices arrived first.
func TestUpdates(t *testing.T) {
	h, cs := newHandler(t, fixture()...)
	ctx := context.Background()
	eventually := func(name string, qtype uint16, want []string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			m := query(t, h, name, qtype)
			if slices.Equal(rrs(m.Answer), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: answer %q, want %q", name, rrs(m.Answer), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Slice first, then its headless Service.
	_, err := cs.DiscoveryV1().EndpointSlices("late").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "q-1", Namespace: "late", Labels: map[string]string{discoveryv1.LabelServiceName: "q"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.42.3.3"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Services("late").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "late"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually("q.late.svc.cluster.local.", dns.TypeA, []string{"q.late.svc.cluster.local. 5 IN A 10.42.3.3"})
	eventually("3.3.42.10.in-addr.arpa.", dns.TypePTR, []string{"3.3.42.10.in-addr.arpa. 5 IN PTR 10-42-3-3.q.late.svc.cluster.local."})
	// An endpoint turns not ready.
	es, _ := cs.DiscoveryV1().EndpointSlices("shop").Get(ctx, "db-abc", metav1.GetOptions{})
	es.Endpoints[0].Conditions.Ready = ptr(false)
	if _, err := cs.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("db.shop.svc.cluster.local.", dns.TypeA, []string{"db.shop.svc.cluster.local. 5 IN A 10.42.1.6"})
	eventually("5.0.42.10.in-addr.arpa.", dns.TypePTR, nil)
	// Deleting a Service removes its records and reverse records.
	if err := cs.CoreV1().Services("default").Delete(ctx, "redis", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("redis.default.svc.cluster.local.", dns.TypeA, nil)
	if m := query(t, h, "redis.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("deleted service: rcode %s", dns.RcodeToString[m.Rcode])
	}
	if m := query(t, h, "default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("namespace without services: rcode %s", dns.RcodeToString[m.Rcode])
	}
	if m := query(t, h, "20.0.43.10.in-addr.arpa.", dns.TypePTR); m.Rcode != dns.RcodeRefused {
		t.Errorf("reverse of a deleted service: rcode %s, want fall through", dns.RcodeToString[m.Rcode])
	}
	// Node removal.
	if err := cs.CoreV1().Nodes().Delete(ctx, "node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for query(t, h, "node-a.", dns.TypeA).Rcode != dns.RcodeRefused {
		if time.Now().After(deadline) {
			t.Fatal("deleted node still answered")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMalformedQueries(t *testing.T) {
	h, _ := newHandler(t, fixture()...)
	for _, r := range []*dns.Msg{
		{},                                  // no question
		{Question: make([]dns.Question, 2)}, // two questions
		{MsgHdr: dns.MsgHdr{Opcode: dns.OpcodeUpdate}, Question: []dns.Question{{Name: "redis.default.svc.cluster.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}},
		{Question: []dns.Question{{Name: "redis.default.svc.cluster.local.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}}},
	} {
		w := dnstest.NewRecorder(&test.ResponseWriter{})
		if _, err := h.ServeDNS(context.Background(), w, r); err != nil {
			t.Errorf("%v: %v", r.Question, err)
		}
		if w.Msg == nil || w.Msg.Rcode != dns.RcodeRefused {
			t.Errorf("%v: want the next plugin to answer", r.Question)
		}
	}
}

func TestUndash(t *testing.T) {
	for in, want := range map[string]string{"1-2-3-4": "1.2.3.4", "fd00--1": "fd00::1", "1-2-3": "", "a-b-c-d": "", "--": "::", "1-2-3-4-5": ""} {
		a, ok := undash(in)
		if got := ""; ok {
			got = a.String()
			if got != want {
				t.Errorf("undash(%q) = %s, want %q", in, got, want)
			}
		} else if want != "" {
			t.Errorf("undash(%q) failed, want %s", in, want)
		}
	}
}
