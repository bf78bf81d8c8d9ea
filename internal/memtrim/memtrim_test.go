package memtrim

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// scriptSampler returns its samples in order.
type scriptSampler struct {
	s []Sample
	i int
}

func (f *scriptSampler) Sample() (Sample, error) {
	s := f.s[f.i]
	if f.i < len(f.s)-1 {
		f.i++
	}
	return s, nil
}

const mib = 1 << 20

func TestTrimsOnceABurstIsOver(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	cases := []struct {
		name    string
		samples []Sample
		steps   int
		want    int
	}{
		{"busy then quiet with a big excess: trim", []Sample{
			{At: at(0), CPU: 0, Held: 100 * mib, Live: 30 * mib},
			{At: at(5), CPU: 5 * time.Second, Held: 150 * mib, Live: 30 * mib}, // busy
			{At: at(10), CPU: 5*time.Second + 50*time.Millisecond, Held: 150 * mib, Live: 30 * mib},
			{At: at(10), CPU: 5*time.Second + 80*time.Millisecond, Held: 32 * mib, Live: 31 * mib}, // after the trim
		}, 3, 1},
		{"still busy: no trim", []Sample{
			{At: at(0), CPU: 0, Held: 150 * mib, Live: 30 * mib},
			{At: at(5), CPU: 2 * time.Second, Held: 150 * mib, Live: 30 * mib},
			{At: at(10), CPU: 4 * time.Second, Held: 150 * mib, Live: 30 * mib},
		}, 3, 0},
		{"quiet but little to give back: no trim", []Sample{
			{At: at(0), CPU: 0, Held: 40 * mib, Live: 30 * mib},
			{At: at(5), CPU: 10 * time.Millisecond, Held: 45 * mib, Live: 30 * mib},
		}, 2, 0},
		{"heap smaller than live (between collections): no trim", []Sample{
			{At: at(0), CPU: 0, Held: 20 * mib, Live: 30 * mib},
			{At: at(5), CPU: 0, Held: 20 * mib, Live: 30 * mib},
		}, 2, 0},
		{"second trim waits for the spacing", []Sample{
			{At: at(0), CPU: 0, Held: 100 * mib, Live: 10 * mib},
			{At: at(5), CPU: 0, Held: 100 * mib, Live: 10 * mib},
			{At: at(5), CPU: 0, Held: 11 * mib, Live: 10 * mib}, // after the first trim
			{At: at(10), CPU: 0, Held: 100 * mib, Live: 10 * mib},
			{At: at(40), CPU: 0, Held: 100 * mib, Live: 10 * mib},
			{At: at(40), CPU: 0, Held: 11 * mib, Live: 10 * mib}, // after the second
		}, 4, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			trims := 0
			tr := newTrimmer(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), &scriptSampler{s: c.samples}, func() { trims++ })
			for range c.steps {
				if err := tr.step(); err != nil {
					t.Fatal(err)
				}
			}
			if trims != c.want {
				t.Fatalf("%d trims, want %d", trims, c.want)
			}
		})
	}
}

var sink [][]byte

// TestTrimReleasesGarbage runs the real sampler and trim on this process:
// after 64 MiB of garbage and a quiet interval the heap holds little more
// than it lives on.
func TestTrimReleasesGarbage(t *testing.T) {
	for range 64 {
		sink = append(sink, make([]byte, mib))
	}
	sink = nil
	runtime.GC() // the garbage is found, its spans stay mapped
	tr := New(Config{QuietCPU: 1e9, MinExcess: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	before, err := tr.sampler.Sample()
	if err != nil {
		t.Fatal(err)
	}
	tr.prev, tr.havePrev = before, true
	tr.prev.At = before.At.Add(-time.Second)
	if err := tr.step(); err != nil {
		t.Fatal(err)
	}
	if tr.last.IsZero() {
		t.Fatal("no trim")
	}
	after := tr.prev
	t.Logf("held %d MiB -> %d MiB, live %d MiB", before.Held/mib, after.Held/mib, after.Live/mib)
	if after.Held > after.Live+16*mib {
		t.Fatalf("after the trim the heap holds %d MiB for %d MiB live", after.Held/mib, after.Live/mib)
	}
}
