package podnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/internal/lab"
)

// BenchmarkSetup measures Setup on a fresh pod namespace (the namespace is
// made, and the pod torn down, with the timer stopped).
func BenchmarkSetup(b *testing.B) {
	l, nodes := newCluster(b, BackendVXLAN, 1)
	n := nodes[0]
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ns := l.NewNS(b, fmt.Sprintf("bp%d", i))
		uid := fmt.Sprintf("bench-%d", i)
		b.StartTimer()
		if _, err := n.net.Setup(ctx, uid, ns.Path); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := n.net.Teardown(ctx, uid, ns.Path); err != nil {
			b.Fatal(err)
		}
		if err := l.DeleteNS(ns); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkTeardown measures Teardown of a set-up pod.
func BenchmarkTeardown(b *testing.B) {
	l, nodes := newCluster(b, BackendVXLAN, 1)
	n := nodes[0]
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ns := l.NewNS(b, fmt.Sprintf("bt%d", i))
		uid := fmt.Sprintf("bench-%d", i)
		if _, err := n.net.Setup(ctx, uid, ns.Path); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := n.net.Teardown(ctx, uid, ns.Path); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := l.DeleteNS(ns); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkCrossNodeTCP is bulk TCP throughput between two lab hosts:
// host to host (the underlay) and pod to pod over each backend, one stream.
// Compare the MB/s columns.
func BenchmarkCrossNodeTCP(b *testing.B) {
	b.Run("host-to-host", func(b *testing.B) {
		l := lab.New(b, 2)
		tcpThroughput(b, l.Hosts[0].NS, l.Hosts[1].NS, l.Hosts[1].IP)
	})
	for _, be := range []Backend{BackendVXLAN, BackendHostGW} {
		b.Run("pod-to-pod-"+string(be), func(b *testing.B) {
			l, nodes := newCluster(b, be, 2)
			pa := newPod(b, l, nodes[0], "pa")
			pb := newPod(b, l, nodes[1], "pb")
			tcpThroughput(b, pa.ns, pb.ns, pb.ip.Addr.Addr())
		})
	}
}

// BenchmarkVXLANVersusUnderlay alternates 4 MiB transfers over two open
// connections between the same two lab hosts, one host to host and one pod
// to pod over VXLAN (with the fast path, as nodes run by default), so that
// load from elsewhere on the machine hits both alike; it reports each
// throughput and the pod/host ratio (target >= 85%).
func BenchmarkVXLANVersusUnderlay(b *testing.B) {
	vxlanVersusUnderlay(b, 4<<20, 1)
}

// BenchmarkVXLANVersusUnderlayBulk is BenchmarkVXLANVersusUnderlay with
// 64 MiB transfers: closer to a bulk stream, as the acknowledgement round
// trip after each chunk weighs less.
func BenchmarkVXLANVersusUnderlayBulk(b *testing.B) {
	vxlanVersusUnderlay(b, 64<<20, 1)
}

// BenchmarkVXLANVersusUnderlayParallel is BenchmarkVXLANVersusUnderlay
// with four connections each way, sending at once: what the path carries
// when the CPUs, not one stream's round trips, are the limit. On this
// two-CPU machine a single stream leaves both CPUs partly idle (host to
// host 66 % and 77 % busy, pod to pod 78 % and 70 %), so it measures
// wake-up latency between the sender's and the receiver's CPU as much as
// the cost of the path.
func BenchmarkVXLANVersusUnderlayParallel(b *testing.B) {
	vxlanVersusUnderlay(b, 4<<20, 4)
}

// vxlanVersusUnderlay opens streams connections host to host and as many
// pod to pod, and alternates rounds: chunk bytes on every host connection
// at once, then on every pod connection at once.
func vxlanVersusUnderlay(b *testing.B, chunk, streams int) {
	l, nodes := newCluster(b, BackendVXLAN, 2)
	pa := newPod(b, l, nodes[0], "pa")
	pb := newPod(b, l, nodes[1], "pb")
	var host, pod []*sink
	for range streams {
		host = append(host, openSink(b, nodes[0].host.NS, nodes[1].host.NS, nodes[1].host.IP, chunk))
		pod = append(pod, openSink(b, pa.ns, pb.ns, pb.ip.Addr.Addr(), chunk))
	}
	var hostTime, podTime time.Duration
	for b.Loop() {
		hostTime += sendAll(b, host)
		podTime += sendAll(b, pod)
	}
	mb := float64(b.N) * float64(chunk) * float64(streams) / 1e6
	b.ReportMetric(mb/hostTime.Seconds(), "host-MB/s")
	b.ReportMetric(mb/podTime.Seconds(), "pod-MB/s")
	b.ReportMetric(100*hostTime.Seconds()/podTime.Seconds(), "pod/host-%")
}

// sendAll sends a chunk on each sink at once and returns when every one is
// acknowledged.
func sendAll(b *testing.B, sinks []*sink) time.Duration {
	if len(sinks) == 1 {
		return sinks[0].send(b)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(sinks))
	for i, s := range sinks {
		wg.Go(func() { errs[i] = s.transfer() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkBackendsVersusUnderlay measures how far the pod path can get in
// this lab at all. One lab of four hosts holds two 2-node clusters, VXLAN on
// h0 and h1 and host-gw on h2 and h3, and the benchmark alternates 4 MiB
// transfers over four open connections: host h0 to h1, pod to pod over
// VXLAN, host h2 to h3, pod to pod over host-gw. host-gw crosses the same
// pod veths, netfilter and forwarding hops as VXLAN without the
// encapsulation, so host-gw/host-% is the floor of the pod path's own cost
// and vxlan/host-gw-% what the encapsulation takes on top. Each ratio is
// against both host pairs' time pooled.
func BenchmarkBackendsVersusUnderlay(b *testing.B) {
	l := lab.New(b, 4)
	vx := newNodes(b, BackendVXLAN, l.Hosts[0:2])
	gw := newNodes(b, BackendHostGW, l.Hosts[2:4])
	va, vb := newPod(b, l, vx[0], "va"), newPod(b, l, vx[1], "vb")
	ga, gb := newPod(b, l, gw[0], "ga"), newPod(b, l, gw[1], "gb")
	const chunk = 4 << 20
	sinks := []*sink{
		openSink(b, l.Hosts[0].NS, l.Hosts[1].NS, l.Hosts[1].IP, chunk),
		openSink(b, va.ns, vb.ns, vb.ip.Addr.Addr(), chunk),
		openSink(b, l.Hosts[2].NS, l.Hosts[3].NS, l.Hosts[3].IP, chunk),
		openSink(b, ga.ns, gb.ns, gb.ip.Addr.Addr(), chunk),
	}
	took := make([]time.Duration, len(sinks))
	for b.Loop() {
		for i, s := range sinks {
			took[i] += s.send(b)
		}
	}
	host := (took[0] + took[2]).Seconds() / 2
	vxlan, hostGW := took[1].Seconds(), took[3].Seconds()
	mb := float64(b.N) * chunk / 1e6
	b.ReportMetric(mb/host, "host-MB/s")
	b.ReportMetric(mb/vxlan, "vxlan-MB/s")
	b.ReportMetric(mb/hostGW, "host-gw-MB/s")
	b.ReportMetric(100*host/vxlan, "vxlan/host-%")
	b.ReportMetric(100*host/hostGW, "host-gw/host-%")
	b.ReportMetric(100*hostGW/vxlan, "vxlan/host-gw-%")
}

// BenchmarkFastPath measures what the fast path (fastpath.go) gains. One
// lab of four hosts holds two 2-node VXLAN clusters, h0 and h1 with the fast
// path and h2 and h3 without, and the benchmark alternates rounds over open
// connections: host h0 to h1, pod to pod with the fast path, host h2 to h3,
// pod to pod without. Ratios of throughput are against both host pairs'
// time pooled; cpu-s/GB is the machine's busy CPU time (all CPUs, steal
// left out) during each path's rounds per GB carried.
func BenchmarkFastPath(b *testing.B) {
	for _, c := range []struct {
		name           string
		chunk, streams int
	}{{"4MiB", 4 << 20, 1}, {"64MiB", 64 << 20, 1}, {"4MiBx4", 4 << 20, 4}} {
		b.Run(c.name, func(b *testing.B) {
			l := lab.New(b, 4)
			fast := newNodesWith(b, l.Hosts[0:2], func(*Config) {})
			normal := newNodesWith(b, l.Hosts[2:4], func(c *Config) { c.NoFastPath = true })
			fa, fb := newPod(b, l, fast[0], "fa"), newPod(b, l, fast[1], "fb")
			na, nb := newPod(b, l, normal[0], "na"), newPod(b, l, normal[1], "nb")
			groups := make([][]*sink, 4)
			for range c.streams {
				groups[0] = append(groups[0], openSink(b, l.Hosts[0].NS, l.Hosts[1].NS, l.Hosts[1].IP, c.chunk))
				groups[1] = append(groups[1], openSink(b, fa.ns, fb.ns, fb.ip.Addr.Addr(), c.chunk))
				groups[2] = append(groups[2], openSink(b, l.Hosts[2].NS, l.Hosts[3].NS, l.Hosts[3].IP, c.chunk))
				groups[3] = append(groups[3], openSink(b, na.ns, nb.ns, nb.ip.Addr.Addr(), c.chunk))
			}
			took := make([]time.Duration, len(groups))
			cpu := make([]time.Duration, len(groups))
			for b.Loop() {
				for i, g := range groups {
					before := busyCPU(b)
					took[i] += sendAll(b, g)
					cpu[i] += busyCPU(b) - before
				}
			}
			host := (took[0] + took[2]).Seconds() / 2
			withFast, without := took[1].Seconds(), took[3].Seconds()
			gb := float64(b.N) * float64(c.chunk) * float64(c.streams) / 1e9
			b.ReportMetric(1e3*gb/host, "host-MB/s")
			b.ReportMetric(1e3*gb/withFast, "fast-MB/s")
			b.ReportMetric(1e3*gb/without, "normal-MB/s")
			b.ReportMetric(100*host/withFast, "fast/host-%")
			b.ReportMetric(100*host/without, "normal/host-%")
			b.ReportMetric(100*without/withFast, "fast/normal-%")
			b.ReportMetric((cpu[0]+cpu[2]).Seconds()/2/gb, "host-cpu-s/GB")
			b.ReportMetric(cpu[1].Seconds()/gb, "fast-cpu-s/GB")
			b.ReportMetric(cpu[3].Seconds()/gb, "normal-cpu-s/GB")
		})
	}
}

// busyCPU is the machine's busy CPU time so far (/proc/stat: all but idle,
// iowait and steal), at the kernel's tick resolution.
func busyCPU(b *testing.B) time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		b.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for i, f := range fields[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 || i == 7 {
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/stat (100 on Linux's ABI).
const clockTicks = 100

// sink is a TCP connection into a namespace whose far end reads each chunk
// whole and acknowledges it with one byte, so a timed send covers the bytes
// arriving, not just leaving.
type sink struct {
	c     *net.TCPConn
	ln    net.Listener
	chunk int
	buf   []byte
	ack   []byte
}

func openSink(b *testing.B, from, to lab.NS, addr netip.Addr, chunk int) *sink {
	b.Helper()
	s := &sink{chunk: chunk, buf: make([]byte, chunk), ack: make([]byte, 1)}
	if err := to.Do(func() (err error) {
		s.ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.ln.Close() })
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, chunk)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write([]byte{1}); err != nil {
				return
			}
		}
	}()
	if err := from.Do(func() error {
		c, err := net.Dial("tcp4", s.ln.Addr().String())
		if err == nil {
			s.c = c.(*net.TCPConn)
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.c.Close() })
	for range 4 {
		s.send(b) // slow start, ARP
	}
	return s
}

// send transfers one chunk and waits for its acknowledgement.
func (s *sink) send(b *testing.B) time.Duration {
	start := time.Now()
	if err := s.transfer(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// transfer writes one chunk and reads its acknowledgement (safe to call
// from a goroutine other than the benchmark's).
func (s *sink) transfer() error {
	if _, err := s.c.Write(s.buf); err != nil {
		return err
	}
	_, err := io.ReadFull(s.c, s.ack)
	return err
}

const throughputChunk = 16 << 20

func tcpThroughput(b *testing.B, from, to lab.NS, addr netip.Addr) {
	ln, got := countingListener(b, to, addr)
	defer ln.Close()
	var c net.Conn
	if err := from.Do(func() (err error) {
		c, err = net.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	// Warm up: slow start, ARP, GRO.
	for range 4 {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(throughputChunk)
	b.ResetTimer()
	sent := int64(4 * len(buf))
	for b.Loop() {
		for w := 0; w < throughputChunk; w += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		sent += throughputChunk
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if n := <-got; n != sent {
		b.Fatalf("receiver got %d bytes, sent %d", n, sent)
	}
	b.StopTimer()
	c.Close()
}

// countingListener listens on addr in ns and, for the first connection,
// sends on the channel how many bytes it carried until its end (-1 when
// the listener closed first).
func countingListener(tb testing.TB, ns lab.NS, addr netip.Addr) (net.Listener, <-chan int64) {
	tb.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	return ln, got
}
