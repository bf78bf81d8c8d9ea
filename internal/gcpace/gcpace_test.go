package gcpace

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"
)

const mb = 1 << 20

func TestPercent(t *testing.T) {
	cfg := Config{}.withDefaults()
	for _, c := range []struct {
		name       string
		live, held uint64
		want       int
	}{
		{"empty cache", 40 * mb, 0, 100},
		{"no collection yet", 0, 5 * mb, 100},
		{"cache a third of the heap", 30 * mb, 10 * mb, 66},
		{"cache 12 of 40 MB", 40 * mb, 12 * mb, 70},
		{"cache nearly all of it", 20 * mb, 19 * mb, 25},
		{"cache larger than the last live heap", 10 * mb, 16 * mb, 25},
	} {
		if got := percent(cfg, c.live, c.held); got != c.want {
			t.Errorf("%s: percent(live %d MB, held %d MB) = %d, want %d", c.name, c.live/mb, c.held/mb, got, c.want)
		}
	}
	if got := percent(Config{Percent: 200, Floor: 50}.withDefaults(), 40*mb, 10*mb); got != 150 {
		t.Errorf("Percent 200: got %d, want 150", got)
	}
	if c := (Config{Percent: 20}).withDefaults(); c.Floor != 20 {
		t.Errorf("Floor above Percent: got floor %d, want 20", c.Floor)
	}
}

// fakeRuntime stands in for the live heap, the cache and SetGCPercent.
type fakeRuntime struct {
	mu         sync.Mutex
	live, held uint64
	gogc       int
	sets       []int
}

func (f *fakeRuntime) liveBytes() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.live }
func (f *fakeRuntime) heldBytes() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.held }
func (f *fakeRuntime) set(p int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.gogc
	f.gogc = p
	f.sets = append(f.sets, p)
	return prev
}
func (f *fakeRuntime) figures(live, held uint64) {
	f.mu.Lock()
	f.live, f.held = live, held
	f.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestStep: GOGC follows the cache, small moves are skipped, and it goes
// back to exactly Percent once the cache empties.
func TestStep(t *testing.T) {
	f := &fakeRuntime{gogc: 100}
	p := newPacer(Config{}, quiet(), f.heldBytes, f.liveBytes, f.set, nil)
	steps := []struct {
		live, held uint64
		want       int // GOGC after the step
	}{
		{40 * mb, 0, 100},
		{40 * mb, 1 * mb, 100},      // 97: less than Step away
		{40 * mb, 12 * mb, 70},      // the cache filled (a LIST)
		{42 * mb, 12 * mb, 70},      // 71: less than Step away
		{40 * mb, 16 * mb, 60},      //
		{30 * mb, 29 * mb, 25},      // nearly all cache: Floor
		{30 * mb, 28 * mb, 25},      // 6: clamped, no change
		{40 * mb, 39 * mb / 10, 90}, // the cache shrank
		{40 * mb, 0, 100},           // emptied: exactly Percent, not "less than Step"
	}
	for i, s := range steps {
		f.figures(s.live, s.held)
		p.step()
		if f.gogc != s.want {
			t.Fatalf("step %d (live %d, held %d): GOGC %d, want %d", i, s.live, s.held, f.gogc, s.want)
		}
	}
	if want := []int{70, 60, 25, 90, 100}; !equal(f.sets, want) {
		t.Errorf("SetGCPercent calls %v, want %v", f.sets, want)
	}
	// Back to Percent from 97 is made even though it is less than Step.
	f.sets = nil
	p.cur = 97
	f.figures(40*mb, 0)
	p.step()
	if !equal(f.sets, []int{100}) {
		t.Errorf("from 97 with an empty cache: calls %v, want [100]", f.sets)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fakeCycles is a notifier whose collections the test makes.
type fakeCycles struct {
	c       chan chan<- struct{}
	stopped chan struct{}
}

func (f *fakeCycles) notify(c chan<- struct{}) func() {
	f.c <- c
	return func() { close(f.stopped) }
}

// TestRunRestoresPercent: Run adjusts after collections, and leaves GOGC at
// Percent and stops the notifications when it ends.
func TestRunRestoresPercent(t *testing.T) {
	f := &fakeRuntime{gogc: 100}
	f.figures(40*mb, 20*mb)
	cycles := &fakeCycles{c: make(chan chan<- struct{}, 1), stopped: make(chan struct{})}
	p := newPacer(Config{}, quiet(), f.heldBytes, f.liveBytes, f.set, cycles.notify)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	gc := <-cycles.c
	gc <- struct{}{} // a collection
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		g := f.gogc
		f.mu.Unlock()
		if g == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d 10 s after a collection, want 50", g)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if f.gogc != 100 {
		t.Errorf("GOGC %d after Run, want 100", f.gogc)
	}
	select {
	case <-cycles.stopped:
	default:
		t.Error("notifications not stopped after Run")
	}
}

// TestAfterCollections: the real notifier signals after runtime.GC, and not
// after it is stopped.
func TestAfterCollections(t *testing.T) {
	c := make(chan struct{}, 1)
	stop := afterCollections(c)
	for range 3 {
		runtime.GC()
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal("no signal 10 s after a collection")
		}
	}
	stop()
	runtime.GC() // runs the armed finalizer, which sees stop and ends
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-c:
		t.Error("signal after stop")
	default:
	}
}

// TestLiveHeap reads the runtime's figure: after a collection with a
// 4 MB object reachable, the live heap holds at least that.
func TestLiveHeap(t *testing.T) {
	keep := make([]byte, 4*mb)
	runtime.GC()
	if got := liveHeap(); got < 4*mb {
		t.Errorf("live heap %d bytes with 4 MB reachable", got)
	}
	runtime.KeepAlive(keep)
}
