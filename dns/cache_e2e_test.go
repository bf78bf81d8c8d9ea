package dns

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/orch-dev/orch/internal/apitest"
)

// countingStub starts an upstream resolver on addr:53 of the process's
// loopback that answers cached.example. (A, TTL 60), NXDOMAIN with an SOA
// for everything else, and counts the queries it gets for each (lower-cased) name.
func countingStub(t *testing.T, addr string) func(name string) int32 {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]int32{}
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		mu.Lock()
		seen[strings.ToLower(q.Name)]++
		mu.Unlock()
		if strings.EqualFold(q.Name, "cached.example.") {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.60")}}
		} else {
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: "example.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 120},
				Ns: "ns.example.", Mbox: "admin.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: 30}}
		}
		_ = w.WriteMsg(m)
	})
	serveStub(t, addr, handler)
	return func(name string) int32 {
		mu.Lock()
		defer mu.Unlock()
		return seen[name]
	}
}

// TestCacheEndToEnd checks orch's cache in a running server: upstream answers
// (positive and negative) are asked for once and served with decreasing
// TTLs, cluster names do not go through it, and a coredns-custom server
// block may use `cache` with a block of options.
func TestCacheEndToEnd(t *testing.T) {
	needRoot(t)
	ns := testNS(t)
	seen := countingStub(t, stubIP)
	api := apitest.Start(t)
	create(t, api.Kube.CoreV1().ConfigMaps("kube-system").Create, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns-custom", Namespace: "kube-system"},
		Data: map[string]string{"corp.server": "corp.example:53 {\n  forward . " + stubIP + "\n  cache 30 {\n    success 100 20\n    denial 100\n    servfail 0\n  }\n}"}})
	h := start(t, ns, api, Config{ResolvConf: resolvConf(t, stubIP)})
	if !strings.Contains(h.srv.Corefile(), "    cache 30\n") {
		t.Fatalf("no cache in the main block:\n%s", h.srv.Corefile())
	}

	first := h.mustExchange(t, "udp", "cached.example.", mdns.TypeA)
	if len(first.Answer) != 1 || first.Answer[0].Header().Ttl > 30 {
		t.Fatalf("first answer %v", first)
	}
	time.Sleep(1100 * time.Millisecond)
	for _, network := range []string{"udp", "tcp"} {
		r := h.mustExchange(t, network, "CACHED.example.", mdns.TypeA)
		if len(r.Answer) != 1 || r.Question[0].Name != "CACHED.example." {
			t.Fatalf("cached answer over %s: %v", network, r)
		}
		if ttl := r.Answer[0].Header().Ttl; ttl >= first.Answer[0].Header().Ttl {
			t.Errorf("cached TTL %d over %s, want below %d", ttl, network, first.Answer[0].Header().Ttl)
		}
	}
	if n := seen("cached.example."); n != 1 {
		t.Errorf("upstream asked %d times for cached.example., want 1", n)
	}

	for range 3 {
		if r := h.mustExchange(t, "udp", "gone.example.", mdns.TypeA); r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
			t.Fatalf("negative answer %v", r)
		}
	}
	if n := seen("gone.example."); n != 1 {
		t.Errorf("upstream asked %d times for gone.example., want 1", n)
	}

	// The custom block's own cache (forwarding to the same stub).
	before := seen("x.corp.example.")
	for range 3 {
		if r := h.mustExchange(t, "udp", "x.corp.example.", mdns.TypeAAAA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("custom block answer %v", r)
		}
	}
	if n := seen("x.corp.example.") - before; n != 1 {
		t.Errorf("custom block asked upstream %d times, want 1", n)
	}

	// Cluster names are answered before the cache: a new Service resolves at
	// once even right after its name was denied.
	name := "late.default.svc.cluster.local."
	if r := h.mustExchange(t, "udp", name, mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("%s before the Service: %v", name, r)
	}
	create(t, api.Kube.CoreV1().Services("default").Create, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.77", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		r := h.mustExchange(t, "udp", name, mdns.TypeA)
		if got := answers(r); len(got) == 1 && got[0] == "10.43.0.77" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never resolved after the Service was created", name)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
