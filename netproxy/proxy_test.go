package netproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/orch-dev/orch/internal/kube/clientgo"
)

func TestNewValidates(t *testing.T) {
	client := clientgo.Wrap(fake.NewClientset())
	if _, err := New(Config{}, client, testLogger(t)); err == nil {
		t.Error("empty config accepted")
	}
	if _, err := New(Config{NodeName: "n"}, nil, testLogger(t)); err == nil {
		t.Error("nil client accepted")
	}
	if _, err := New(Config{NodeName: "n"}, client, nil); err == nil {
		t.Error("nil logger accepted")
	}
}

// TestInformerWiring runs the proxy against client-go's fake clientset and a
// fake kernel, and checks that API changes turn into the right batches.
func TestInformerWiring(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := clientgo.Wrap(fake.NewClientset(
		mkService("default", "web", "10.43.0.10"),
		mkSlice("default", "web", "web-1", tcpPorts, readyEP("10.42.0.5", "node1")),
	))
	p, err := New(Config{NodeName: "node1", ClusterCIDR: netip.MustParsePrefix("10.42.0.0/16"),
		MinSyncInterval: time.Millisecond, CheckInterval: time.Hour}, client, testLogger(t))
	must(t, err)
	rec := &recorder{}
	p.dialBatch = rec.dial
	p.dial = rec.query
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	waitFor := func(op, name string) {
		t.Helper()
		eventually(t, 5*time.Second, func() error {
			if hasMsg(rec.all(t), op, name) {
				return nil
			}
			return fmt.Errorf("no %s %s yet", op, name)
		})
	}
	waitFor("NEWCHAIN", "svc-default/web/tcp/80")
	if s := p.Stats(); s.FullSyncs != 1 {
		t.Errorf("full syncs %d", s.FullSyncs)
	}

	// A new Service and its endpoints.
	_, err = client.CoreV1().Services("default").Create(ctx, mkService("default", "api", "10.43.0.11"), metav1.CreateOptions{})
	must(t, err)
	waitFor("NEWSETELEM", mapNoEndpointIPs) // no endpoints yet: rejected
	_, err = client.DiscoveryV1().EndpointSlices("default").Create(ctx,
		mkSlice("default", "api", "api-1", tcpPorts, readyEP("10.42.0.6", "node1")), metav1.CreateOptions{})
	must(t, err)
	waitFor("NEWCHAIN", "svc-default/api/tcp/80")

	// Deleting a Service removes its chains.
	must(t, client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}))
	waitFor("DELCHAIN", "svc-default/web/tcp/80")

	for _, m := range rec.all(t) {
		if m.Op == "DELTABLE" && m.Name != "orch" {
			t.Errorf("touched table %q", m.Name)
		}
	}
	if s := p.Stats(); s.FullSyncs != 1 || s.Services != 1 {
		t.Errorf("stats %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestSyncFailureRetriesFull checks that a failed batch is retried, as a
// full sync.
func TestSyncFailureRetriesFull(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := clientgo.Wrap(fake.NewClientset(mkService("default", "web", "10.43.0.10")))
	p, err := New(Config{NodeName: "node1", MinSyncInterval: time.Millisecond, CheckInterval: time.Hour}, client, testLogger(t))
	must(t, err)
	rec := &recorder{fail: errors.New("EPERM-ish")}
	p.dialBatch = rec.dial
	p.dial = rec.query
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	time.Sleep(50 * time.Millisecond) // let it fail at least once
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	eventually(t, 10*time.Second, func() error {
		if p.Stats().FullSyncs == 0 {
			return errors.New("not recovered")
		}
		return nil
	})
	cancel()
	must(t, <-done)
}

func TestFlowFilter(t *testing.T) {
	flow := func(proto uint8, src, dst, rsrc string, dport, rsport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), SrcPort: 40000, DstPort: dport},
			Reverse: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(rsrc), DstIP: net.ParseIP(src), SrcPort: rsport, DstPort: 40000},
		}
	}
	natted := flow(unix.IPPROTO_UDP, "10.42.0.9", "10.43.0.10", "10.42.0.5", 53, 5353)
	raw := flow(unix.IPPROTO_UDP, "10.42.0.9", "10.43.0.10", "10.43.0.10", 53, 53)
	tcp := flow(unix.IPPROTO_TCP, "10.42.0.9", "10.43.0.10", "10.42.0.5", 53, 5353)
	for _, c := range []struct {
		name string
		f    flowFilter
		fl   *netlink.ConntrackFlow
		want bool
	}{
		{"endpoint match", flowFilter{Endpoint: netip.MustParseAddrPort("10.42.0.5:5353")}, natted, true},
		{"endpoint other port", flowFilter{Endpoint: netip.MustParseAddrPort("10.42.0.5:53")}, natted, false},
		{"endpoint never tcp", flowFilter{Endpoint: netip.MustParseAddrPort("10.42.0.5:5353")}, tcp, false},
		{"un-NATed to service", flowFilter{Dst: netip.MustParseAddr("10.43.0.10"), DstPort: 53}, raw, true},
		{"NATed is not stale", flowFilter{Dst: netip.MustParseAddr("10.43.0.10"), DstPort: 53}, natted, false},
		{"node port", flowFilter{AnyLocalPort: 53}, raw, true},
	} {
		if got := c.f.MatchConntrackFlow(c.fl); got != c.want {
			t.Errorf("%s: got %v", c.name, got)
		}
	}
}

func TestStaleFlows(t *testing.T) {
	udpSvc := mkService("ns", "dns", "10.43.0.10", withType(v1.ServiceTypeNodePort), func(s *v1.Service) {
		s.Spec.Ports = []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053}}
	})
	udp := []slicePort{{"dns", v1.ProtocolUDP, 5353}}
	none, _ := servicePorts(udpSvc, nil, "n")
	one, _ := servicePorts(udpSvc, sl1(mkSlice("ns", "dns", "d", udp, readyEP("10.42.0.5", "n"))), "n")
	moved, _ := servicePorts(udpSvc, sl1(mkSlice("ns", "dns", "d", udp, readyEP("10.42.0.6", "n"))), "n")

	got := staleFlows(none, one, false)
	want := []flowFilter{{Dst: netip.MustParseAddr("10.43.0.10"), DstPort: 53}, {AnyLocalPort: 30053}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gaining endpoints: %v, want %v", got, want)
	}
	got = staleFlows(one, moved, false)
	want = []flowFilter{{Endpoint: netip.MustParseAddrPort("10.42.0.5:5353")}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("moving: %v, want %v", got, want)
	}
	if got := staleFlows(one, one, false); len(got) != 0 {
		t.Errorf("unchanged: %v", got)
	}
	tcpSvc := mkService("ns", "web", "10.43.0.11")
	a, _ := servicePorts(tcpSvc, sl1(mkSlice("ns", "web", "w", tcpPorts, readyEP("10.42.0.5", "n"))), "n")
	if got := staleFlows(a, nil, false); len(got) != 0 {
		t.Errorf("TCP flows are never deleted: %v", got)
	}
}

// TestCoalescing checks that a burst of changes is applied in a few
// batches, not one per change.
func TestCoalescing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := clientgo.Wrap(fake.NewClientset())
	p, err := New(Config{NodeName: "node1", MinSyncInterval: 300 * time.Millisecond, CheckInterval: time.Hour}, client, testLogger(t))
	must(t, err)
	rec := &recorder{}
	p.dialBatch = rec.dial
	p.dial = rec.query
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	eventually(t, 5*time.Second, func() error {
		if p.Stats().FullSyncs == 0 {
			return errors.New("no full sync")
		}
		return nil
	})
	const n = 100
	for i := 0; i < n; i++ {
		_, err := client.CoreV1().Services("default").Create(ctx, mkService("default", fmt.Sprintf("s%d", i), fmt.Sprintf("10.43.1.%d", i)), metav1.CreateOptions{})
		must(t, err)
	}
	eventually(t, 10*time.Second, func() error {
		if s := p.Stats(); s.Services != n {
			return fmt.Errorf("%d services programmed", s.Services)
		}
		return nil
	})
	rec.mu.Lock()
	batches := len(rec.batches)
	rec.mu.Unlock()
	if batches > 10 {
		t.Errorf("%d services took %d batches; changes were not coalesced", n, batches)
	}
	t.Logf("%d services in %d batches", n, batches)
	cancel()
	must(t, <-done)
}

func TestRunBadNetNS(t *testing.T) {
	p, err := New(Config{NodeName: "n", NetNS: "/nonexistent/orchtest-px"}, clientgo.Wrap(fake.NewClientset()), testLogger(t))
	must(t, err)
	err = p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/orchtest-px") {
		t.Fatalf("Run with a missing netns: %v", err)
	}
}
