package cluster

import (
	"context"
	"net/netip"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// FuzzServeDNS feeds arbitrary wire messages to the handler: it must never
// panic, and whatever it writes must pack.
func FuzzServeDNS(f *testing.F) {
	x := NewIndex()
	x.SetService(Service{Namespace: "default", Name: "redis", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.43.0.20")},
		Ports: []Port{{Name: "redis", Proto: "tcp", Port: 6379}}})
	x.SetService(Service{Namespace: "shop", Name: "db", Headless: true, Ports: []Port{{Name: "pg", Proto: "tcp", Port: 5432}}})
	x.SetSlice(Slice{Namespace: "shop", Name: "db-1", Service: "db", Ports: []Port{{Name: "pg", Proto: "tcp", Port: 5432}},
		Endpoints: []Endpoint{{Addr: netip.MustParseAddr("10.42.0.5"), Hostname: "db-0"}, {Addr: netip.MustParseAddr("fd00::5")}}})
	x.SetService(Service{Namespace: "shop", Name: "ext", ExternalName: "db.example.org"})
	x.SetNode("node-a", []netip.Addr{netip.MustParseAddr("172.31.250.10")})
	h := &Handler{Zone: "cluster.local.", ReverseZones: []string{"in-addr.arpa.", "ip6.arpa."}, TTL: DefaultTTL, Index: x,
		NS: []netip.Addr{netip.MustParseAddr("10.43.0.10")}, Next: refuser{}}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"redis.default.svc.cluster.local.", dns.TypeA}, {"_pg._tcp.db.shop.svc.cluster.local.", dns.TypeSRV},
		{"db-0.db.shop.svc.cluster.local.", dns.TypeANY}, {"ext.shop.svc.cluster.local.", dns.TypeAAAA},
		{"5.0.42.10.in-addr.arpa.", dns.TypePTR}, {"1-2-3-4.x.pod.cluster.local.", dns.TypeA}, {"cluster.local.", dns.TypeNS},
		{"node-a.", dns.TypeA}, {"_.svc.cluster.local.", dns.TypeSRV},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			return
		}
		w := dnstest.NewRecorder(&test.ResponseWriter{})
		if _, err := h.ServeDNS(context.Background(), w, r); err != nil {
			return
		}
		if w.Msg == nil {
			t.Fatal("no reply")
		}
		if _, err := w.Msg.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v\n%v", err, w.Msg)
		}
	})
}
