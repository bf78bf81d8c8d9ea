package dns

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/orch-dev/orch/dns/cluster"
	"github.com/orch-dev/orch/internal/kube/clientgo"
)

// freeAddr returns a loopback address and port free for both UDP and TCP.
func freeAddr(tb testing.TB) (netip.Addr, int) {
	tb.Helper()
	ip := netip.MustParseAddr("127.0.0.1")
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return ip, port
		}
	}
	tb.Fatal("no free port")
	return ip, 0
}

// loadQueries sends name A queries to addr from b.RunParallel's goroutines,
// each on its own UDP socket, and reports queries/s and the p99 latency.
func loadQueries(b *testing.B, addr, name string) {
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := mdns.Dial("udp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			m.Id = mdns.Id()
			t0 := time.Now()
			if err := conn.WriteMsg(m); err != nil {
				b.Error(err)
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			r, err := conn.ReadMsg()
			if err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
			if len(r.Answer) != 1 {
				b.Errorf("answer %v", r)
				return
			}
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	el := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/el.Seconds(), "queries/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkQuery compares a cluster name against the embedded server with
// the floor: a minimal miekg/dns server answering one static record, in the
// same run on loopback.
func BenchmarkQuery(b *testing.B) {
	b.Run("floor", func(b *testing.B) {
		ip, port := freeAddr(b)
		addr := net.JoinHostPort(ip.String(), fmt.Sprint(port))
		rr, _ := mdns.NewRR("redis.default.svc.cluster.local. 5 IN A 10.43.0.20")
		srv := &mdns.Server{Addr: addr, Net: "udp", Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
			m := new(mdns.Msg)
			m.SetReply(r)
			m.Answer = []mdns.RR{rr}
			_ = w.WriteMsg(m)
		})}
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ListenAndServe() }()
		<-started
		defer func() { _ = srv.Shutdown() }()
		loadQueries(b, addr, "redis.default.svc.cluster.local.")
	})
	b.Run("embedded", func(b *testing.B) {
		ip, port := freeAddr(b)
		cs := fake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: "default"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.43.0.20", ClusterIPs: []string{"10.43.0.20"}, Ports: []corev1.ServicePort{{Name: "redis", Port: 6379}}}})
		rc := filepath.Join(b.TempDir(), "resolv.conf")
		if err := os.WriteFile(rc, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		srv, err := New(Config{Addrs: []netip.Addr{ip}, Port: port, Interface: "-", ResolvConf: rc}, clientgo.Wrap(cs), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}()
		addr := net.JoinHostPort(ip.String(), fmt.Sprint(port))
		c := &mdns.Client{Timeout: time.Second}
		m := new(mdns.Msg)
		m.SetQuestion("redis.default.svc.cluster.local.", mdns.TypeA)
		for deadline := time.Now().Add(10 * time.Second); ; {
			if r, _, err := c.Exchange(m, addr); err == nil && len(r.Answer) == 1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("embedded server not answering")
			}
			time.Sleep(10 * time.Millisecond)
		}
		loadQueries(b, addr, "redis.default.svc.cluster.local.")
	})
}

// BenchmarkMemory10kServices measures the heap the DNS records of 10,000
// Services (each with an EndpointSlice of two endpoints) add: informer caches
// of stripped objects plus the index. The fake API's own objects are counted
// before the feed starts and subtracted.
func BenchmarkMemory10kServices(b *testing.B) {
	const n = 10000
	for range b.N {
		cs := fake.NewClientset()
		ctx := context.Background()
		for i := range n {
			ns := fmt.Sprintf("ns%d", i%50)
			name := fmt.Sprintf("svc-%d", i)
			ip := fmt.Sprintf("10.43.%d.%d", i/250+1, i%250+1)
			if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
				Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Selector: map[string]string{"app": name},
					Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-x", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](80)}}}
			for j := range 2 {
				es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.42.%d.%d", i%200, j+i/200+2)},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}, NodeName: ptr("node-a")})
			}
			if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		before := heap()
		x := cluster.NewIndex()
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- cluster.NewFeed(clientgo.Wrap(cs), x, slog.New(slog.NewTextHandler(io.Discard, nil))).Run(fctx)
		}()
		for !x.Synced() || x.Len() < n {
			time.Sleep(10 * time.Millisecond)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/(1<<20), "MB-extra")
		b.ReportMetric(float64(after-before)/n, "B/service")
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

func heap() int64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
