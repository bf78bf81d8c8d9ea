// Package gcpace keeps the garbage collector from doubling memory that a
// cache holds on purpose.
//
// With GOGC=100 the Go runtime lets the heap grow to twice what the last
// collection found live before it collects again: every live byte buys a
// byte of room for garbage. That is the right price for the objects a
// program works on (the more of them, the more work a collection does and
// the more room it should get), but not for a cache of encoded bytes: a
// []byte is marked in one step whatever its length, so a cache of 12 MB
// makes collections no dearer, yet raises the heap goal, and so the RSS
// the process peaks at, by 12 MB. Caches kept off the Go heap (mmap'd
// chunks) avoid that at the price of managing their memory by hand.
//
// A Pacer gets the same effect with the cache left on the heap: after every
// collection it sets GOGC so that the room for garbage is Percent of the
// live heap without the cache's bytes, as if the cache lived elsewhere:
// GOGC = Percent × (live − held) / live, never below Floor. A process with
// an empty cache runs at Percent, exactly as before. GOGC set in the
// environment is the operator's choice: callers do not run a Pacer then.
package gcpace

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// Config tunes a Pacer; zero fields take the defaults.
type Config struct {
	// Percent is the GOGC of a process whose cache is empty (100, the
	// runtime's default).
	Percent int
	// Floor is the least GOGC the Pacer sets (25): a heap that is nearly
	// all cache still gets some room, and collections stay spaced.
	Floor int
	// Step is the least change worth making (5 points): small swings of the
	// live heap do not reset the collector's pacing at every collection.
	Step int
}

func (c Config) withDefaults() Config {
	if c.Percent <= 0 {
		c.Percent = 100
	}
	if c.Floor <= 0 {
		c.Floor = 25
	}
	if c.Floor > c.Percent {
		c.Floor = c.Percent
	}
	if c.Step <= 0 {
		c.Step = 5
	}
	return c
}

// Pacer sets GOGC from the live heap and a cache's size; see the package
// comment.
type Pacer struct {
	cfg    Config
	log    *slog.Logger
	held   func() uint64 // bytes the cache holds now
	live   func() uint64 // live heap after the last collection
	set    func(int) int // debug.SetGCPercent
	cycles notifier
	cur    int
}

// notifier signals c after every collection until stop is called.
type notifier func(c chan<- struct{}) (stop func())

// New returns a Pacer of this process; held reports the bytes the cache
// holds (it is called from the Pacer's goroutine and must be safe for that).
func New(cfg Config, log *slog.Logger, held func() uint64) *Pacer {
	return newPacer(cfg, log, held, liveHeap, debug.SetGCPercent, afterCollections)
}

func newPacer(cfg Config, log *slog.Logger, held, live func() uint64, set func(int) int, cycles notifier) *Pacer {
	cfg = cfg.withDefaults()
	return &Pacer{cfg: cfg, log: log, held: held, live: live, set: set, cycles: cycles, cur: cfg.Percent}
}

// Run adjusts GOGC after each collection until ctx ends, then sets it back
// to Percent. A collection is when the live heap is measured and when the
// next one's goal is set, so adjusting then is exact and costs nothing while
// the process is idle (no collections, no wake-ups).
func (p *Pacer) Run(ctx context.Context) error {
	p.set(p.cfg.Percent)
	defer p.set(p.cfg.Percent)
	c := make(chan struct{}, 1)
	stop := p.cycles(c)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c:
			p.step()
		}
	}
}

// afterCollections signals c after each garbage collection: a sentinel
// object's finalizer runs once the collection that found it unreachable
// ends, and re-arms itself with a new sentinel until stop is called.
func afterCollections(c chan<- struct{}) (stop func()) {
	var stopped atomic.Bool
	var arm func()
	arm = func() {
		s := new(sentinel)
		runtime.SetFinalizer(s, func(*sentinel) {
			if stopped.Load() {
				return
			}
			select {
			case c <- struct{}{}:
			default: // a signal is pending already
			}
			arm()
		})
	}
	arm()
	return func() { stopped.Store(true) }
}

// sentinel is large enough not to be batched with other small objects by
// the allocator (a finalizer on such a tiny object may never run).
type sentinel struct{ _ [16]byte }

// step sets GOGC for the current figures when it moved by Step or more, or
// back to exactly Percent or Floor.
func (p *Pacer) step() {
	live, held := p.live(), p.held()
	want := percent(p.cfg, live, held)
	if want == p.cur {
		return
	}
	d := want - p.cur
	if d < 0 {
		d = -d
	}
	if d < p.cfg.Step && want != p.cfg.Percent && want != p.cfg.Floor {
		return
	}
	p.set(want)
	p.log.Debug("GOGC set", "percent", want, "was", p.cur, "liveHeap", live, "cacheBytes", held)
	p.cur = want
}

// percent is Percent × (live − held) / live, clamped to [Floor, Percent].
// The live heap is measured at the last collection and the cache now, so
// held can exceed live for a moment (a cache filling between collections).
func percent(cfg Config, live, held uint64) int {
	if held == 0 || live == 0 {
		return cfg.Percent
	}
	if held >= live {
		return cfg.Floor
	}
	return max(cfg.Floor, int(uint64(cfg.Percent)*(live-held)/live))
}

// liveHeap is the heap the last collection marked live.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0 // unsupported: percent then keeps Percent
	}
	return s[0].Value.Uint64()
}
