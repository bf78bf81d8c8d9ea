package scheduler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestReporterKeepsTheLatestAndBoundsTheRate: reports of one pod collapse to
// the latest; beyond the burst they are written at the rate.
func TestReporterKeepsTheLatestAndBoundsTheRate(t *testing.T) {
	r := newReporter(20, 5, 1, nil)
	r.add("ns/a", report{uid: "a", msg: "first"})
	r.add("ns/a", report{uid: "a", msg: "second"})
	for i := range 14 {
		r.add("ns/p"+string(rune('a'+i)), report{uid: "x", msg: "m"})
	}
	var mu sync.Mutex
	var got []report
	var times []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.run(ctx, func(_ context.Context, key string, rep report) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, rep)
			times = append(times, time.Now())
			if len(got) == 15 {
				cancel()
			}
		})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reports not written")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 15 || got[0].msg != "second" {
		t.Fatalf("%d reports, first %q", len(got), got[0].msg)
	}
	// 5 at once, the other 10 at 20 a second: at least ~0.45 s in all.
	if d := times[14].Sub(times[0]); d < 400*time.Millisecond {
		t.Fatalf("15 reports in %v: the rate did not hold", d)
	}
}

// TestReporterYieldsToABusyServer: while the API server is busy the
// reports wait for the busy rate (here one at once, the next after 10 s);
// once it is no longer busy the rest go at once.
func TestReporterYieldsToABusyServer(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	r := newReporter(1000, 100, 0.1, busy.Load)
	for i := range 10 {
		r.add("ns/p"+string(rune('a'+i)), report{uid: "x", msg: "m"})
	}
	var written atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		r.run(ctx, func(context.Context, string, report) {
			if written.Add(1) == 10 {
				cancel()
			}
		})
		close(done)
	}()
	time.Sleep(500 * time.Millisecond)
	if n := written.Load(); n != 1 {
		t.Fatalf("%d reports written while the server was busy, want the 1 of the busy burst", n)
	}
	busy.Store(false)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%d of 10 reports written 5 s after the server was no longer busy", written.Load())
	}
}

// TestReportSkipsPodsNoLongerWaiting: a pod bound, assumed, deleted or
// replaced (another UID) before its report's turn gets none.
func TestReportSkipsPodsNoLongerWaiting(t *testing.T) {
	p := testPod("default", "p", 8000, 0)
	f := newFixture(t, []*corev1.Node{testNode("n1", 4, 8, 110, nil)}, []*corev1.Pod{p})
	ctx := context.Background()
	for name, change := range map[string]func(*corev1.Pod){
		"bound":    func(p *corev1.Pod) { p.Spec.NodeName = "n1" },
		"replaced": func(p *corev1.Pod) { p.UID = "other" },
	} {
		q := p.DeepCopy()
		change(q)
		if err := f.s.pods.Update(q); err != nil {
			t.Fatal(err)
		}
		f.client.ClearActions()
		f.s.writeReport(ctx, "default/p", report{uid: p.UID, reason: "Unschedulable", msg: "m"})
		if acts := f.client.Actions(); len(acts) != 0 {
			t.Fatalf("%s: wrote %v", name, acts)
		}
	}
	if err := f.s.pods.Update(p); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	f.s.writeReport(ctx, "default/p", report{uid: p.UID, reason: "Unschedulable", msg: "m"})
	if acts := f.client.Actions(); len(acts) != 1 {
		t.Fatalf("waiting pod: %v", acts)
	}
	if err := f.s.pods.Delete(p); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	f.s.writeReport(ctx, "default/p", report{uid: p.UID, reason: "Unschedulable", msg: "other"})
	if acts := f.client.Actions(); len(acts) != 0 {
		t.Fatalf("deleted pod: wrote %v", acts)
	}
}
