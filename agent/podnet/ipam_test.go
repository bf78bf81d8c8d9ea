package podnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestIPAMAllocateSkipsReservedAndIsStable(t *testing.T) {
	a, err := newIPAM(t.TempDir(), netip.MustParsePrefix("10.42.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	ip1, err := a.Allocate("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("10.42.3.2"); ip1 != want {
		t.Errorf("first address %s, want %s (network .0 and gateway .1 reserved)", ip1, want)
	}
	again, err := a.Allocate("pod-a")
	if err != nil || again != ip1 {
		t.Errorf("second Allocate for the same pod = %s %v, want %s", again, err, ip1)
	}
	ip2, _ := a.Allocate("pod-b")
	if ip2 == ip1 {
		t.Fatalf("two pods got %s", ip1)
	}
	if _, err := a.Allocate(""); err == nil {
		t.Error("empty UID accepted")
	}
}

func TestIPAMExhaustionAndReuse(t *testing.T) {
	// A /28 has 16 addresses: .0 network, .1 gateway, .15 broadcast: 13 for pods.
	a, err := newIPAM(t.TempDir(), netip.MustParsePrefix("10.42.0.16/28"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for i := range 13 {
		ip, err := a.Allocate(fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if seen[ip] || ip == netip.MustParseAddr("10.42.0.16") || ip == netip.MustParseAddr("10.42.0.17") || ip == netip.MustParseAddr("10.42.0.31") {
			t.Fatalf("bad or duplicate address %s", ip)
		}
		seen[ip] = true
	}
	_, err = a.Allocate("one-too-many")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("14th allocation: %v, want ErrExhausted", err)
	}
	// The failed allocation lost nothing.
	if got, _ := a.List(); len(got) != 13 {
		t.Fatalf("%d allocations after exhaustion, want 13", len(got))
	}
	if err := a.Release("p4"); err != nil {
		t.Fatal(err)
	}
	ip, err := a.Allocate("newcomer")
	if err != nil {
		t.Fatalf("allocation after release: %v", err)
	}
	if want := netip.MustParseAddr("10.42.0.22"); ip != want {
		t.Errorf("reused %s, want the freed %s", ip, want)
	}
}

func TestIPAMRoundRobinDoesNotReuseAtOnce(t *testing.T) {
	a, _ := newIPAM(t.TempDir(), netip.MustParsePrefix("10.42.0.0/24"))
	ip1, _ := a.Allocate("a")
	_ = a.Release("a")
	ip2, _ := a.Allocate("b")
	if ip1 == ip2 {
		t.Errorf("freed address %s handed out again at once", ip1)
	}
}

func TestIPAMPersistsAcrossInstances(t *testing.T) {
	dir := t.TempDir()
	p := netip.MustParsePrefix("10.42.7.0/24")
	a, _ := newIPAM(dir, p)
	ip, _ := a.Allocate("pod")
	b, err := newIPAM(dir, p) // the agent restarted
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Allocate("pod"); got != ip {
		t.Errorf("after restart the pod got %s, want its %s", got, ip)
	}
	if other, _ := b.Allocate("other"); other == ip {
		t.Errorf("after restart %s handed out twice", ip)
	}
}

func TestIPAMConcurrentInstancesNeverDuplicate(t *testing.T) {
	dir := t.TempDir()
	p := netip.MustParsePrefix("10.42.9.0/24")
	insts := make([]*ipam, 4) // separate instances: separate flocks, like two processes
	for i := range insts {
		var err error
		if insts[i], err = newIPAM(dir, p); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := fmt.Sprintf("pod-%d", i)
			ip, err := insts[i%len(insts)].Allocate(uid)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := got[ip]; dup {
				t.Errorf("%s given to %s and %s", ip, prev, uid)
			}
			got[ip] = uid
		}()
	}
	wg.Wait()
	list, _ := insts[0].List()
	if len(list) != 200 {
		t.Errorf("%d allocations on disk, want 200", len(list))
	}
}

func TestIPAMRetain(t *testing.T) {
	dir := t.TempDir()
	a, _ := newIPAM(dir, netip.MustParsePrefix("10.42.1.0/24"))
	for _, u := range []string{"a", "b", "c"} {
		if _, err := a.Allocate(u); err != nil {
			t.Fatal(err)
		}
	}
	freed, err := a.Retain(map[string]bool{"b": true})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(freed) != "[a c]" {
		t.Errorf("freed %v, want [a c]", freed)
	}
	// The node's pod CIDR changed: the old allocation is outside it.
	b, _ := newIPAM(dir, netip.MustParsePrefix("10.42.2.0/24"))
	freed, _ = b.Retain(map[string]bool{"b": true})
	if fmt.Sprint(freed) != "[b]" {
		t.Errorf("freed %v after CIDR change, want [b]", freed)
	}
}

func TestIPAMDamagedFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ipamFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newIPAM(dir, netip.MustParsePrefix("10.42.1.0/24"))
	if err == nil {
		t.Fatal("damaged allocation file accepted")
	}
	data, _ := os.ReadFile(filepath.Join(dir, ipamFile))
	if string(data) != "{not json" {
		t.Error("damaged file was overwritten")
	}
}

func BenchmarkIPAMAllocateRelease(b *testing.B) {
	a, _ := newIPAM(b.TempDir(), netip.MustParsePrefix("10.42.1.0/24"))
	for i := range 200 {
		_, _ = a.Allocate(fmt.Sprintf("bg-%d", i))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		uid := fmt.Sprintf("p-%d", i)
		if _, err := a.Allocate(uid); err != nil {
			b.Fatal(err)
		}
		if err := a.Release(uid); err != nil {
			b.Fatal(err)
		}
	}
}
