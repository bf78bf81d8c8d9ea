package netproxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var tcpPorts = []slicePort{{name: "tcp", proto: v1.ProtocolTCP, port: 8080}}

func allPods(tp *topo) []ep {
	var out []ep
	for _, ip := range tp.podIPs {
		out = append(out, readyEP(ip, "node1"))
	}
	return out
}

func dumpTable(t *testing.T, tp *topo) {
	t.Helper()
	_ = inNS(tp.node, func() error {
		out, err := exec.Command("nft", "list", "table", "ip", "orchtest-px").CombinedOutput()
		t.Logf("nft list table (err %v):\n%s", err, out)
		return nil
	})
}

func TestKernelServiceTypes(t *testing.T) {
	tp := newTopo(t)
	tp.startEcho(t)
	ctx := context.Background()
	_, client := tp.runProxy(t,
		mkService("default", "web", "10.43.0.10"),
		mkSlice("default", "web", "web-1", tcpPorts, allPods(tp)...),
		mkService("default", "np", "10.43.0.11", withType(v1.ServiceTypeNodePort), withPort("tcp", v1.ProtocolTCP, 80, 30080)),
		mkSlice("default", "np", "np-1", tcpPorts, allPods(tp)[0]),
		mkService("default", "lb", "10.43.0.12", withType(v1.ServiceTypeLoadBalancer), withPort("tcp", v1.ProtocolTCP, 8443, 30443)),
		mkSlice("default", "lb", "lb-1", tcpPorts, allPods(tp)[1]),
		mkService("default", "local", "10.43.0.13", withType(v1.ServiceTypeNodePort), withExtLocal(), withPort("tcp", v1.ProtocolTCP, 80, 30081)),
		mkSlice("default", "local", "local-1", tcpPorts, allPods(tp)[2]),
		mkService("default", "empty", "10.43.0.14", withType(v1.ServiceTypeNodePort), withPort("tcp", v1.ProtocolTCP, 80, 30082)),
		mkService("default", "ext", "10.43.0.15", withExternalIPs("192.168.77.1")),
		mkSlice("default", "ext", "ext-1", []slicePort{{name: "tcp", proto: v1.ProtocolTCP, port: 8080}}, allPods(tp)[0]),
	)
	defer func() {
		if t.Failed() {
			dumpTable(t, tp)
		}
	}()

	t.Run("ClusterIP from node", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 60 && len(seen) < 3; i++ {
			srv, _, err := tcpAsk(tp.node, "10.43.0.10:80", 2*time.Second)
			must(t, err)
			seen[srv] = true
		}
		if len(seen) != 3 {
			t.Fatalf("reached %v, want all 3 endpoints", seen)
		}
	})
	t.Run("ClusterIP from pod (hairpin masquerade)", func(t *testing.T) {
		// Pod 10.42.0.13 reaching the Service may land on itself: that only
		// works if the connection is masqueraded.
		self := 0
		for i := 0; i < 60; i++ {
			srv, peer, err := tcpAsk(tp.pods[2], "10.43.0.10:80", 2*time.Second)
			must(t, err)
			if srv == peer {
				t.Fatalf("hairpin connection to %s not masqueraded (peer %s)", srv, peer)
			}
			if srv == "10.42.0.13" {
				self++
			}
		}
		if self == 0 {
			t.Fatal("the pod never reached itself through the Service")
		}
	})
	t.Run("NodePort from client, masqueraded", func(t *testing.T) {
		srv, peer, err := tcpAsk(tp.client, "192.168.77.1:30080", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.11" || peer != "10.42.0.1" {
			t.Fatalf("got server %s peer %s, want 10.42.0.11 seeing the node 10.42.0.1", srv, peer)
		}
		// NodePort also on the node's other address.
		srv, _, err = tcpAsk(tp.client, "10.42.0.1:30080", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.11" {
			t.Fatalf("got %s", srv)
		}
	})
	t.Run("LoadBalancer on node address", func(t *testing.T) {
		srv, _, err := tcpAsk(tp.client, "192.168.77.1:8443", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.12" {
			t.Fatalf("got %s", srv)
		}
		srv, _, err = tcpAsk(tp.client, "192.168.77.1:30443", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.12" {
			t.Fatalf("nodeport of LB: got %s", srv)
		}
	})
	t.Run("externalTrafficPolicy Local keeps client IP", func(t *testing.T) {
		srv, peer, err := tcpAsk(tp.client, "192.168.77.1:30081", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.13" || peer != "192.168.77.2" {
			t.Fatalf("got server %s peer %s, want 10.42.0.13 seeing the client 192.168.77.2", srv, peer)
		}
	})
	t.Run("externalIP", func(t *testing.T) {
		srv, _, err := tcpAsk(tp.client, "192.168.77.1:80", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.11" {
			t.Fatalf("got %s", srv)
		}
	})
	t.Run("no endpoints refuses", func(t *testing.T) {
		for _, c := range []struct {
			name string
			ns   func() error
		}{
			{"ClusterIP from node", func() error { _, _, err := tcpAsk(tp.node, "10.43.0.14:80", 5*time.Second); return err }},
			{"ClusterIP from pod", func() error { _, _, err := tcpAsk(tp.pods[0], "10.43.0.14:80", 5*time.Second); return err }},
			{"NodePort from client", func() error { _, _, err := tcpAsk(tp.client, "192.168.77.1:30082", 5*time.Second); return err }},
		} {
			start := time.Now()
			err := c.ns()
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: got %v, want connection refused", c.name, err)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("%s: refusal took %v (a timeout, not a reject)", c.name, d)
			}
		}
	})
	t.Run("endpoint removed stops receiving", func(t *testing.T) {
		sl, err := client.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
		must(t, err)
		sl.Endpoints = sl.Endpoints[:2] // drop 10.42.0.13
		_, err = client.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{})
		must(t, err)
		eventually(t, 5*time.Second, func() error {
			for i := 0; i < 60; i++ {
				srv, _, err := tcpAsk(tp.node, "10.43.0.10:80", 2*time.Second)
				if err != nil {
					return err
				}
				if srv == "10.42.0.13" {
					return fmt.Errorf("removed endpoint still reached")
				}
			}
			return nil
		})
	})
}

func TestKernelUDPEndpointMove(t *testing.T) {
	tp := newTopo(t)
	tp.startEcho(t)
	ctx := context.Background()
	udp := []slicePort{{name: "dns", proto: v1.ProtocolUDP, port: 5353}}
	_, client := tp.runProxy(t,
		mkService("default", "dns", "10.43.0.20", func(s *v1.Service) {
			s.Spec.Ports = []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53}}
		}),
		mkSlice("default", "dns", "dns-1", udp, readyEP("10.42.0.11", "node1")),
	)
	u := newUDPConn(t, tp.node, "10.43.0.20:53")
	srv, err := u.ask(2 * time.Second)
	must(t, err)
	if srv != "10.42.0.11" {
		t.Fatalf("first answer from %s", srv)
	}
	sl, err := client.DiscoveryV1().EndpointSlices("default").Get(ctx, "dns-1", metav1.GetOptions{})
	must(t, err)
	sl.Endpoints[0].Addresses = []string{"10.42.0.12"}
	_, err = client.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{})
	must(t, err)
	// The same socket (same conntrack tuple) must move to the new endpoint:
	// the old entry has to be deleted, or it keeps going to 10.42.0.11.
	eventually(t, 5*time.Second, func() error {
		srv, err := u.ask(500 * time.Millisecond)
		if err != nil {
			return err
		}
		if srv != "10.42.0.12" {
			return fmt.Errorf("answer from %s", srv)
		}
		return nil
	})
}

func TestKernelUniformity(t *testing.T) {
	tp := newTopo(t)
	tp.startEcho(t)
	tp.runProxy(t,
		mkService("default", "web", "10.43.0.10"),
		mkSlice("default", "web", "web-1", tcpPorts, allPods(tp)...),
	)
	const n = 3000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		srv, _, err := tcpAsk(tp.node, "10.43.0.10:80", 2*time.Second)
		must(t, err)
		counts[srv]++
	}
	var chi2 float64
	exp := float64(n) / 3
	for _, ip := range tp.podIPs {
		d := float64(counts[ip]) - exp
		chi2 += d * d / exp
	}
	// Critical value of chi-square with 2 degrees of freedom at p = 0.001.
	const critical = 13.816
	t.Logf("counts %v chi2 %.3f (critical %.3f)", counts, chi2, critical)
	if chi2 > critical || math.IsNaN(chi2) {
		t.Fatalf("distribution not uniform: counts %v chi2 %.3f > %.3f", counts, chi2, critical)
	}
}

func TestKernelTableRecreated(t *testing.T) {
	tp := newTopo(t)
	tp.startEcho(t)
	p, _ := tp.runProxy(t,
		mkService("default", "web", "10.43.0.10"),
		mkSlice("default", "web", "web-1", tcpPorts, allPods(tp)...),
	)
	_, _, err := tcpAsk(tp.node, "10.43.0.10:80", 2*time.Second)
	must(t, err)
	for _, tamper := range []struct {
		name string
		do   func(c *nftables.Conn, tbl *nftables.Table)
	}{
		{"deleted", func(c *nftables.Conn, tbl *nftables.Table) { c.DelTable(tbl) }},
		{"flushed", func(c *nftables.Conn, tbl *nftables.Table) { c.FlushTable(tbl) }},
	} {
		before := p.Stats().FullSyncs
		must(t, inNS(tp.node, func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			tamper.do(c, &nftables.Table{Name: "orchtest-px", Family: nftables.TableFamilyIPv4})
			return c.Flush()
		}))
		eventually(t, 5*time.Second, func() error {
			if p.Stats().FullSyncs == before {
				return errors.New("no full sync yet")
			}
			_, _, err := tcpAsk(tp.node, "10.43.0.10:80", time.Second)
			return err
		})
	}
}

func TestKernelAffinityAndInternalLocal(t *testing.T) {
	tp := newTopo(t)
	tp.startEcho(t)
	three := allPods(tp)
	three[0].node, three[1].node = "node2", "node2" // only 10.42.0.13 is local
	tp.runProxy(t,
		mkService("default", "sticky", "10.43.0.30", withAffinity(300)),
		mkSlice("default", "sticky", "sticky-1", tcpPorts, allPods(tp)...),
		mkService("default", "il", "10.43.0.31", withIntLocal()),
		mkSlice("default", "il", "il-1", tcpPorts, three...),
	)
	first, _, err := tcpAsk(tp.node, "10.43.0.30:80", 2*time.Second)
	must(t, err)
	for i := 0; i < 30; i++ {
		srv, _, err := tcpAsk(tp.node, "10.43.0.30:80", 2*time.Second)
		must(t, err)
		if srv != first {
			t.Fatalf("affinity broken: connection %d went to %s, first to %s", i, srv, first)
		}
	}
	for i := 0; i < 20; i++ {
		srv, _, err := tcpAsk(tp.node, "10.43.0.31:80", 2*time.Second)
		must(t, err)
		if srv != "10.42.0.13" {
			t.Fatalf("internalTrafficPolicy Local reached %s", srv)
		}
	}
}
