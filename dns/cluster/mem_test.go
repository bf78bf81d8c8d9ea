package cluster

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// BenchmarkIndexMemory10k measures the index alone for 10,000 Services with
// an EndpointSlice of two endpoints each.
func BenchmarkIndexMemory10k(b *testing.B) {
	const n = 10000
	for range b.N {
		before := heapNow()
		x := NewIndex()
		for i := range n {
			ns := fmt.Sprintf("ns%d", i%50)
			name := fmt.Sprintf("svc-%d", i)
			x.SetService(Service{Namespace: ns, Name: name, ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 43, byte(i / 250), byte(i%250 + 1)})},
				Ports: []Port{{Name: "http", Proto: "tcp", Port: 80}}})
			x.SetSlice(Slice{Namespace: ns, Name: name + "-x", Service: name, Ports: []Port{{Name: "http", Proto: "tcp", Port: 80}},
				Endpoints: []Endpoint{{Addr: netip.AddrFrom4([4]byte{10, 42, byte(i % 200), byte(i/200 + 2)})}, {Addr: netip.AddrFrom4([4]byte{10, 42, byte(i % 200), byte(i/200 + 3)})}}})
		}
		after := heapNow()
		b.ReportMetric(float64(after-before)/(1<<20), "MB")
		b.ReportMetric(float64(after-before)/n, "B/service")
		runtime.KeepAlive(x)
	}
}

func heapNow() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
