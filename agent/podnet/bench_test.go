package podnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
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
// to pod over VXLAN, so that load from elsewhere on the machine hits both
// alike; it reports each throughput and the pod/host ratio (target >= 85%).
func BenchmarkVXLANVersusUnderlay(b *testing.B) {
	vxlanVersusUnderlay(b, 4<<20)
}

// BenchmarkVXLANVersusUnderlayBulk is BenchmarkVXLANVersusUnderlay with
// 64 MiB transfers: closer to a bulk stream, as the acknowledgement round
// trip after each chunk weighs less. On the same machine in the same hour
// it reported 76-88 % (median 80) where the 4 MiB one gave 81-90 %
// (median 86).
func BenchmarkVXLANVersusUnderlayBulk(b *testing.B) {
	vxlanVersusUnderlay(b, 64<<20)
}

func vxlanVersusUnderlay(b *testing.B, chunk int) {
	l, nodes := newCluster(b, BackendVXLAN, 2)
	pa := newPod(b, l, nodes[0], "pa")
	pb := newPod(b, l, nodes[1], "pb")
	host := openSink(b, nodes[0].host.NS, nodes[1].host.NS, nodes[1].host.IP, chunk)
	pod := openSink(b, pa.ns, pb.ns, pb.ip.Addr.Addr(), chunk)
	var hostTime, podTime time.Duration
	for b.Loop() {
		hostTime += host.send(b)
		podTime += pod.send(b)
	}
	mb := float64(b.N) * float64(chunk) / 1e6
	b.ReportMetric(mb/hostTime.Seconds(), "host-MB/s")
	b.ReportMetric(mb/podTime.Seconds(), "pod-MB/s")
	b.ReportMetric(100*hostTime.Seconds()/podTime.Seconds(), "pod/host-%")
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
	if _, err := s.c.Write(s.buf); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(s.c, s.ack); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

const throughputChunk = 16 << 20

func tcpThroughput(b *testing.B, from, to lab.NS, addr netip.Addr) {
	var ln net.Listener
	if err := to.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		var n int64
		buf := make([]byte, 1<<20)
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
		}
		got <- n
	}()
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
