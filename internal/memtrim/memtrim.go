// Package memtrim hands the heap a burst of work left behind back to the
// operating system as soon as the burst is over.
//
// The Go runtime keeps freed heap pages mapped and returns them slowly (its
// background scavenger releases a few MB a second at most, and never below
// about the next GC's goal): after a server took in thousands of objects its
// RSS stays tens of MB above what it lives on for minutes. A Trimmer samples
// the process's CPU time and heap every Interval; when an interval was quiet
// (less than QuietCPU of one core) and the heap holds more than MinExcess
// bytes beyond what the last collection found live, it collects and releases
// the free pages at once (runtime/debug.FreeOSMemory) — one collection, tens
// of milliseconds of CPU, at a moment the process has nothing else to do.
package memtrim

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"syscall"
	"time"
)

// Config tunes a Trimmer; zero fields take the defaults.
type Config struct {
	// Interval between samples (5 s).
	Interval time.Duration
	// QuietCPU is the CPU time, as a fraction of one core over an interval,
	// below which the process counts as quiet (0.1).
	QuietCPU float64
	// MinExcess is how many bytes the heap must hold beyond its live bytes
	// before a trim is worth a collection (16 MiB).
	MinExcess uint64
	// MinSpacing is the least time between two trims (30 s).
	MinSpacing time.Duration
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.QuietCPU <= 0 {
		c.QuietCPU = 0.1
	}
	if c.MinExcess == 0 {
		c.MinExcess = 16 << 20
	}
	if c.MinSpacing <= 0 {
		c.MinSpacing = 30 * time.Second
	}
	return c
}

// Sample is what a Trimmer decides on.
type Sample struct {
	At  time.Time
	CPU time.Duration // the process's user+system CPU time so far
	// Held is heap memory backed by RAM: objects, unused parts of spans
	// and free spans not yet released.
	Held uint64
	// Live is the heap the last collection found reachable.
	Live uint64
}

// Sampler reads a Sample.
type Sampler interface {
	Sample() (Sample, error)
}

// Trimmer trims the heap after bursts; see the package comment.
type Trimmer struct {
	cfg     Config
	log     *slog.Logger
	sampler Sampler
	free    func()

	prev     Sample
	havePrev bool
	last     time.Time // last trim
}

// New returns a Trimmer of this process.
func New(cfg Config, log *slog.Logger) *Trimmer {
	return newTrimmer(cfg, log, procSampler{}, debug.FreeOSMemory)
}

func newTrimmer(cfg Config, log *slog.Logger, s Sampler, free func()) *Trimmer {
	return &Trimmer{cfg: cfg.withDefaults(), log: log, sampler: s, free: free}
}

// Run samples until ctx ends.
func (t *Trimmer) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := t.step(); err != nil {
				// Reading the process's own figures does not fail on
				// Linux; if it does, trimming is off, nothing else.
				t.log.Warn("memory trimming stopped", "err", err)
				return nil
			}
		}
	}
}

// step takes one sample and trims when the interval before it was quiet
// and the heap holds enough to give back.
func (t *Trimmer) step() error {
	s, err := t.sampler.Sample()
	if err != nil {
		return err
	}
	prev, had := t.prev, t.havePrev
	t.prev, t.havePrev = s, true
	if !had || !t.shouldTrim(prev, s) {
		return nil
	}
	t.free()
	t.last = s.At
	after, err := t.sampler.Sample()
	if err != nil {
		return err
	}
	// The trim's own collection is not the process's work: the next
	// interval is measured from here.
	t.prev = after
	t.log.Debug("heap trimmed", "heldBefore", s.Held, "heldAfter", after.Held, "live", after.Live)
	return nil
}

func (t *Trimmer) shouldTrim(prev, s Sample) bool {
	elapsed := s.At.Sub(prev.At)
	if elapsed <= 0 {
		return false
	}
	if float64(s.CPU-prev.CPU) > t.cfg.QuietCPU*float64(elapsed) {
		return false // busy: the burst may go on
	}
	if s.Held < s.Live || s.Held-s.Live < t.cfg.MinExcess {
		return false
	}
	return t.last.IsZero() || s.At.Sub(t.last) >= t.cfg.MinSpacing
}

// procSampler reads this process's figures.
type procSampler struct{}

var sampleNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/gc/heap/live:bytes",
}

func (procSampler) Sample() (Sample, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return Sample{}, fmt.Errorf("getrusage: %w", err)
	}
	ms := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		ms[i].Name = n
	}
	metrics.Read(ms)
	var v [4]uint64
	for i, m := range ms {
		if m.Value.Kind() != metrics.KindUint64 {
			return Sample{}, fmt.Errorf("runtime metric %s unsupported", m.Name)
		}
		v[i] = m.Value.Uint64()
	}
	return Sample{
		At:   time.Now(),
		CPU:  time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		Held: v[0] + v[1] + v[2],
		Live: v[3],
	}, nil
}
