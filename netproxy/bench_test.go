package netproxy

import (
	"fmt"
	"golang.org/x/sys/unix"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// benchServices returns n Services with 3 endpoints each, as changes.
func benchServices(n, offset int) []change {
	out := make([]change, 0, n)
	for i := offset; i < offset+n; i++ {
		ip := fmt.Sprintf("10.%d.%d.%d", 44+i/65536, (i/256)%256, i%256)
		name := fmt.Sprintf("svc-%d", i)
		svc := mkService("bench", name, ip)
		sl := mkSlice("bench", name, name+"-1", tcpPorts,
			readyEP(fmt.Sprintf("10.42.%d.%d", (i/250)%250, 1+i%250), "node1"),
			readyEP(fmt.Sprintf("10.42.%d.%d", (i/250)%250, 2+i%250), "node2"),
			readyEP(fmt.Sprintf("10.42.%d.%d", (i/250)%250, 3+i%250), "node3"))
		ports, _ := servicePorts(svc, sl1(sl), "node1")
		out = append(out, change{key: "bench/" + name, ports: ports})
	}
	return out
}

func sl1[T any](v T) []T { return []T{v} }

func benchDial(b testing.TB, ns netns.NsHandle) func() *batchConn {
	return func() *batchConn {
		c, err := dialBatch(int(ns))
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
}

// cpuTime is the process's user+system CPU time. Reported per op next to
// wall time because the test machine's cores are shared: wall time grows
// with other processes' load, CPU time much less.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

var benchRenderer = renderer{clusterCIDR: netip.MustParsePrefix("10.42.0.0/16"), mark: 0x4000}

// BenchmarkFullSync10k measures one full sync (table recreated in one batch)
// of 10,000 Services with 3 endpoints each.
func BenchmarkFullSync10k(b *testing.B) { benchFullSync(b, 10000) }

// BenchmarkFullSync1k is the same with 1,000 Services (to see the scaling).
func BenchmarkFullSync1k(b *testing.B) { benchFullSync(b, 1000) }

func benchFullSync(b *testing.B, n int) {
	needRoot(b)
	ns, _ := newNetns(b, "bench")
	dial := benchDial(b, ns)
	changes := benchServices(n, 0)
	b.ResetTimer()
	defer reportCPU(b, cpuTime(b))
	for i := 0; i < b.N; i++ {
		c := dial()
		if _, _, err := apply(c, "orchtest-px-bench", &benchRenderer, newState(), changes, true); err != nil {
			b.Fatal(err)
		}
		_ = c.close()
	}
}

// BenchmarkAddServiceWith10k measures adding one Service (3 endpoints) when
// 10,000 are installed: render, diff, one batch, kernel commit.
func BenchmarkAddServiceWith10k(b *testing.B) {
	needRoot(b)
	ns, _ := newNetns(b, "bench")
	dial := benchDial(b, ns)
	c := dial()
	_, st, err := apply(c, "orchtest-px-bench", &benchRenderer, newState(), benchServices(10000, 0), true)
	if err != nil {
		b.Fatal(err)
	}
	_ = c.close()
	extra := benchServices(b.N, 10000)
	b.ResetTimer()
	defer reportCPU(b, cpuTime(b))
	for i := 0; i < b.N; i++ {
		c := dial()
		_, st, err = apply(c, "orchtest-px-bench", &benchRenderer, st, extra[i:i+1], false)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.close()
	}
}

// BenchmarkConnect compares TCP connection set-up (connect, one read, close)
// from the node to a pod straight and through a ClusterIP, with 10,000 other
// Services installed.
func BenchmarkConnect(b *testing.B) {
	tp := newTopo(b)
	tp.startEcho(b)
	dial := benchDial(b, tp.node)
	changes := benchServices(10000, 0)
	web := mkService("default", "web", "10.43.0.10")
	ports, _ := servicePorts(web, sl1(mkSlice("default", "web", "web-1", tcpPorts, readyEP(tp.podIPs[0], "node1"))), "node1")
	changes = append(changes, change{key: "default/web", ports: ports})
	c := dial()
	if _, _, err := apply(c, "orchtest-px", &benchRenderer, newState(), changes, true); err != nil {
		b.Fatal(err)
	}
	_ = c.close()
	// Interleave the two kinds of connections so that load from other
	// processes on the machine hits both alike; report each and the ratio.
	var pod, svc time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, _, err := tcpAsk(tp.node, tp.podIPs[0]+":8080", 2*time.Second); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, _, err := tcpAsk(tp.node, "10.43.0.10:80", 2*time.Second); err != nil {
			b.Fatal(err)
		}
		pod += t1.Sub(t0)
		svc += time.Since(t1)
	}
	b.ReportMetric(float64(pod.Nanoseconds())/float64(b.N), "ns/pod-conn")
	b.ReportMetric(float64(svc.Nanoseconds())/float64(b.N), "ns/clusterip-conn")
	b.ReportMetric(float64(svc)/float64(pod), "clusterip/pod")
}
