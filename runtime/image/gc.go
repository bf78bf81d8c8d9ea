package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"
)

// GCPolicy is when GC removes images: when the store's filesystem is more
// than HighPercent full, unused images are removed, least recently used
// first, until it is at most LowPercent full (kubelet's defaults are 85
// and 80).
type GCPolicy struct {
	HighPercent int
	LowPercent  int
	// MinAge spares images added less than this long ago.
	MinAge time.Duration
}

// DefaultGCPolicy is kubelet's default image GC policy.
var DefaultGCPolicy = GCPolicy{HighPercent: 85, LowPercent: 80, MinAge: 2 * time.Minute}

// Validate checks the thresholds.
func (p GCPolicy) Validate() error {
	if p.HighPercent <= 0 || p.HighPercent > 100 || p.LowPercent < 0 || p.LowPercent > p.HighPercent {
		return fmt.Errorf("image GC policy: need 0 <= low (%d) <= high (%d) <= 100, high > 0", p.LowPercent, p.HighPercent)
	}
	return nil
}

// GCResult reports what GC did.
type GCResult struct {
	UsageBefore, UsageAfter int // percent of the filesystem used
	RemovedImages           []string
	RemovedLayers           int
	FreedBytes              int64 // unpacked size of removed layers
}

// GC prunes layers no image references and, when the filesystem holding
// the store is above p.HighPercent, removes images inUse does not report,
// least recently used (resolved, else added) first, until usage is at most
// p.LowPercent or no candidate is left.
func (s *Store) GC(ctx context.Context, p GCPolicy, inUse InUseFunc) (GCResult, error) {
	var res GCResult
	if err := p.Validate(); err != nil {
		return res, err
	}
	unlock, err := s.lock()
	if err != nil {
		return res, err
	}
	defer unlock()
	idx, err := s.load()
	if err != nil {
		return res, err
	}
	if res.UsageBefore, err = s.usagePercent(); err != nil {
		return res, err
	}
	if err := s.gcPrune(idx, &res); err != nil {
		return res, err
	}
	usage, err := s.usagePercent()
	if err != nil {
		return res, err
	}
	res.UsageAfter = usage
	if usage <= p.HighPercent {
		return res, nil
	}
	type cand struct {
		img  *Image
		used time.Time
	}
	var cands []cand
	now := time.Now()
	for _, img := range idx.Images {
		if inUse != nil && inUse(img.ID) {
			continue
		}
		if p.MinAge > 0 && now.Sub(img.Added) < p.MinAge {
			continue
		}
		used := img.Added
		if t, ok := s.lastUsed[img.ID]; ok && t.After(used) {
			used = t
		}
		cands = append(cands, cand{img, used})
	}
	sort.Slice(cands, func(i, j int) bool {
		if !cands[i].used.Equal(cands[j].used) {
			return cands[i].used.Before(cands[j].used)
		}
		return cands[i].img.ID < cands[j].img.ID
	})
	s.log.Info("image GC: disk usage above high threshold", "usage", usage, "high", p.HighPercent, "low", p.LowPercent, "candidates", len(cands))
	cur := cloneIndex(idx)
	for _, c := range cands {
		if usage <= p.LowPercent {
			break
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		delete(cur.Images, c.img.ID)
		if err := s.save(cur); err != nil {
			return res, err
		}
		delete(s.lastUsed, c.img.ID)
		res.RemovedImages = append(res.RemovedImages, c.img.ID)
		s.log.Info("image GC: removed image", "id", c.img.ID, "tags", c.img.RepoTags)
		if err := s.gcPrune(cur, &res); err != nil {
			return res, err
		}
		if usage, err = s.usagePercent(); err != nil {
			return res, err
		}
		res.UsageAfter = usage
	}
	if usage > p.LowPercent {
		s.log.Warn("image GC: still above low threshold, no more unused images", "usage", usage, "low", p.LowPercent)
	}
	return res, nil
}

// gcPrune prunes unreferenced layers now (GC measures the space freed).
func (s *Store) gcPrune(idx *indexFile, res *GCResult) error {
	n, freed, trash, err := s.pruneLayersLocked(idx)
	res.RemovedLayers += n
	res.FreedBytes += freed
	return errors.Join(err, emptyTrash(trash))
}

func (s *Store) usagePercent() (int, error) {
	used, total, err := s.cfg.DiskUsage(s.cfg.Root)
	if err != nil {
		return 0, err
	}
	if total == 0 {
		return 0, errors.New("disk usage: zero total")
	}
	return int((used*100 + total - 1) / total), nil
}

// GarbageCollector runs GC periodically: a component for the agent.
type GarbageCollector struct {
	store    *Store
	policy   GCPolicy
	interval time.Duration
	inUse    InUseFunc
	log      *slog.Logger
}

// GCConfig configures a GarbageCollector.
type GCConfig struct {
	Policy   GCPolicy
	Interval time.Duration // default 5 minutes (kubelet's)
}

// NewGarbageCollector makes a GarbageCollector over store.
func NewGarbageCollector(cfg GCConfig, store *Store, inUse InUseFunc, log *slog.Logger) (*GarbageCollector, error) {
	if store == nil || inUse == nil || log == nil {
		return nil, errors.New("image GC: store, in-use predicate and logger are required")
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Minute
	}
	return &GarbageCollector{store: store, policy: cfg.Policy, interval: cfg.Interval, inUse: inUse, log: log}, nil
}

// Run collects every interval until ctx ends. A failed collection is
// logged and retried at the next tick.
func (g *GarbageCollector) Run(ctx context.Context) error {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		res, err := g.store.GC(ctx, g.policy, g.inUse)
		if err != nil {
			g.log.Error("image GC failed", "err", err)
			continue
		}
		if len(res.RemovedImages) > 0 || res.RemovedLayers > 0 {
			g.log.Info("image GC", "removedImages", len(res.RemovedImages), "removedLayers", res.RemovedLayers,
				"freedBytes", res.FreedBytes, "usageBefore", res.UsageBefore, "usageAfter", res.UsageAfter)
		}
	}
}
