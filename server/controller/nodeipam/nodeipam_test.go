package nodeipam

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t *testing.T, client kube.Interface, cidr string) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := kube.NewSharedInformerFactory(client, 0)
	c, err := New(Config{ClusterCIDR: netip.MustParsePrefix(cidr)}, client, f, discard())
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx, 2) }()
	stop := func() { cancel(); <-done; f.Shutdown() }
	t.Cleanup(stop)
	return stop
}

func createNode(t *testing.T, client kube.Interface, name string) {
	t.Helper()
	if _, err := client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitCIDRs(t *testing.T, client kube.Interface, want int) map[string]string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		nl, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, n := range nl.Items {
			if n.Spec.PodCIDR != "" {
				if len(n.Spec.PodCIDRs) != 1 || n.Spec.PodCIDRs[0] != n.Spec.PodCIDR {
					t.Fatalf("node %s podCIDRs %v != podCIDR %s", n.Name, n.Spec.PodCIDRs, n.Spec.PodCIDR)
				}
				got[n.Name] = n.Spec.PodCIDR
			}
		}
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d nodes have a pod CIDR: %v", len(got), want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAssignsDistinctSubnetsAndRebuilds(t *testing.T) {
	api := apitest.Start(t)
	stop := start(t, api.Kube, "10.42.0.0/16")
	for i := range 5 {
		createNode(t, api.Kube, fmt.Sprintf("n%d", i))
	}
	got := waitCIDRs(t, api.Kube, 5)
	seen := map[string]bool{}
	for n, c := range got {
		p := netip.MustParsePrefix(c)
		if p.Bits() != 24 || !netip.MustParsePrefix("10.42.0.0/16").Contains(p.Addr()) {
			t.Errorf("node %s got %s", n, c)
		}
		if seen[c] {
			t.Errorf("%s assigned twice", c)
		}
		seen[c] = true
	}
	// A restarted controller must not hand out a range that is on a Node.
	stop()
	start(t, api.Kube, "10.42.0.0/16")
	createNode(t, api.Kube, "late")
	got = waitCIDRs(t, api.Kube, 6)
	if seen[got["late"]] {
		t.Fatalf("restarted allocator reused %s", got["late"])
	}
}

func TestExhaustedThenReleased(t *testing.T) {
	api := apitest.Start(t)
	start(t, api.Kube, "10.99.0.0/23") // two /24s
	createNode(t, api.Kube, "a")
	createNode(t, api.Kube, "b")
	waitCIDRs(t, api.Kube, 2)
	createNode(t, api.Kube, "c")
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, err := api.Kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range ev.Items {
			if e.Reason == "CIDRNotAvailable" && e.InvolvedObject.Name == "c" {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no CIDRNotAvailable event for node c")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, _ := api.Kube.CoreV1().Nodes().Get(ctx, "c", metav1.GetOptions{}); n.Spec.PodCIDR != "" {
		t.Fatalf("node c got %s from an exhausted range", n.Spec.PodCIDR)
	}
	if err := api.Kube.CoreV1().Nodes().Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitCIDRs(t, api.Kube, 2)
	if got["c"] == "" || got["c"] == got["b"] {
		t.Fatalf("after release: %v", got)
	}
}

func TestBadConfig(t *testing.T) {
	api := apitest.Start(t)
	f := kube.NewSharedInformerFactory(api.Kube, 0)
	for _, c := range []Config{
		{},
		{ClusterCIDR: netip.MustParsePrefix("10.42.0.1/16")},
		{ClusterCIDR: netip.MustParsePrefix("10.42.0.0/25")},
		{ClusterCIDR: netip.MustParsePrefix("fd00::/64")},
	} {
		if _, err := New(c, api.Kube, f, discard()); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
