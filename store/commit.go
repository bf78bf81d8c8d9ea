package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"time"

	bolt "go.etcd.io/bbolt"
)

type opKind uint8

const (
	opCreate opKind = iota + 1
	opUpdate
	opDelete
	opCompact
	opFlush // checkpoint what is pending (readers that need the bbolt file current)
)

func (k opKind) String() string {
	switch k {
	case opCreate:
		return "create"
	case opUpdate:
		return "update"
	case opDelete:
		return "delete"
	case opCompact:
		return "compact"
	case opFlush:
		return "flush"
	}
	return "unknown operation"
}

// op is one write waiting for the committer.
type op struct {
	kind     opKind
	key      string
	value    []byte
	expected int64 // Update/Delete: expected ModRevision; Compact: revision
	done     chan opResult
}

type opResult struct {
	rev int64
	kv  KeyValue // Delete: what was removed
	err error
}

// Create writes a new key.
func (db *DB) Create(ctx context.Context, key string, value []byte) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	r := db.submit(ctx, &op{kind: opCreate, key: key, value: cloneBytes(value)})
	return r.rev, r.err
}

// Update replaces the value of key if its ModRevision is expectedRev (or
// expectedRev is 0).
func (db *DB) Update(ctx context.Context, key string, value []byte, expectedRev int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if expectedRev < 0 {
		return 0, fmt.Errorf("store: update %q: negative expected revision %d", key, expectedRev)
	}
	r := db.submit(ctx, &op{kind: opUpdate, key: key, value: cloneBytes(value), expected: expectedRev})
	return r.rev, r.err
}

// Delete removes key if its ModRevision is expectedRev (or expectedRev is
// 0) and returns what it held, with ModRevision the delete's revision.
func (db *DB) Delete(ctx context.Context, key string, expectedRev int64) (KeyValue, error) {
	if err := checkKey(key); err != nil {
		return KeyValue{}, err
	}
	if expectedRev < 0 {
		return KeyValue{}, fmt.Errorf("store: delete %q: negative expected revision %d", key, expectedRev)
	}
	r := db.submit(ctx, &op{kind: opDelete, key: key, expected: expectedRev})
	return r.kv, r.err
}

// Compact drops the history at and before rev: watches and lists from
// before rev then fail with ErrCompacted. Compacting to a revision already
// compacted is a no-op; a revision not reached yet is ErrFutureRevision.
// The history is also trimmed automatically to Config.HistorySize.
func (db *DB) Compact(ctx context.Context, rev int64) error {
	if rev < 0 {
		return fmt.Errorf("store: compact: negative revision %d", rev)
	}
	return db.submit(ctx, &op{kind: opCompact, expected: rev}).err
}

// submit hands o to the committer and waits for its result. If ctx ends
// after the committer took the write, the write may still be committed (as
// with etcd): the caller gets ctx's error and must re-read to know.
func (db *DB) submit(ctx context.Context, o *op) opResult {
	db.inflight.Add(1)
	defer db.inflight.Add(-1)
	o.done = make(chan opResult, 1)
	select {
	case db.ops <- o:
	case <-db.closing:
		return opResult{err: ErrClosed}
	case <-ctx.Done():
		return opResult{err: ctx.Err()}
	}
	select {
	case r := <-o.done:
		return r
	case <-ctx.Done():
		return opResult{err: ctx.Err()}
	}
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append(make([]byte, 0, len(b)), b...)
}

// commitLoop is the committer: it takes the first waiting write, then every
// other write already waiting (up to MaxBatch), and commits them as one
// record of the write-ahead log. While a record is being synced, new
// writers queue up and form the next group, so the fsync cost is shared.
// Pending records are checkpointed into bbolt when enough has gathered,
// when a reader asks, CheckpointInterval after the first of them, and on
// Close; the timer runs only while something is pending.
func (db *DB) commitLoop() {
	defer close(db.commitDone)
	batch := make([]*op, 0, db.cfg.MaxBatch)
	var took time.Duration
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		batch = batch[:0]
		select {
		case o := <-db.ops:
			batch = append(batch, o)
		case <-timer.C:
			armed = false
			if err := db.checkpoint(); err != nil {
				timer.Reset(db.cfg.CheckpointInterval) // try again later
				armed = true
			}
			continue
		case <-db.closing:
			timer.Stop()
			if db.skipFinalCheckpoint {
				return
			}
			if err := db.checkpoint(); err != nil {
				db.log.Error("store: checkpoint at close failed; the write-ahead log keeps the writes", "path", db.cfg.Path, "err", err)
			}
			return
		}
		batch = db.gather(batch, min(max(took/4, minStragglerWait), maxStragglerWait))
		t0 := time.Now()
		db.commit(batch)
		took = time.Since(t0)
		switch pending := db.pendingN.Load() > 0; {
		case pending && !armed:
			timer.Reset(db.cfg.CheckpointInterval)
			armed = true
		case !pending && armed:
			timer.Stop()
			armed = false
		}
	}
}

// The committer waits for the writers of the previous group to come back
// for at most a quarter of the last commit's duration (so waiting costs
// little next to the fsync it saves), within these bounds.
const (
	minStragglerWait = 50 * time.Microsecond
	maxStragglerWait = 2 * time.Millisecond
)

// gather adds the writes already waiting to batch. The writers answered by
// the last commit often come straight back with their next write, but not
// all at once; committing as soon as the first arrives would split them
// into two groups that alternate, each paying a full fsync. So while fewer
// writes are gathered than there are callers inside a write call (those
// just answered are still counted until they return), gather yields the
// processor to let them arrive, for at most wait (no timer: nothing runs
// while no one writes).
func (db *DB) gather(batch []*op, wait time.Duration) []*op {
	var deadline time.Time
	for len(batch) < db.cfg.MaxBatch {
		select {
		case o := <-db.ops:
			batch = append(batch, o)
			continue
		default:
		}
		if int64(len(batch)) >= db.inflight.Load() {
			return batch
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(wait)
		} else if now.After(deadline) {
			return batch
		}
		runtime.Gosched()
	}
	return batch
}

// commit appends batch to the write-ahead log as one record. Each op is
// checked on its own against the state left by the ops before it, so one
// op's conflict fails only that op. Events reach watchers after the record
// is durable, and only then do the writers get their answers. A flush op
// in the batch (or a full log) checkpoints afterwards.
func (db *DB) commit(batch []*op) {
	results := make([]opResult, len(batch))
	events := make([]Event, 0, len(batch))
	rev := db.hub.revision()
	compact := db.compact
	staged := make(map[string]*KeyValue, len(batch))
	var rtx *bolt.Tx
	flush := false
	for i, o := range batch {
		r := &results[i]
		switch o.kind {
		case opFlush:
			flush = true
			continue
		case opCompact:
			switch {
			case o.expected > rev:
				r.err = fmt.Errorf("store: compact to %d, current revision is %d: %w", o.expected, rev, ErrFutureRevision)
			case o.expected > compact:
				compact = o.expected
			}
			continue
		}
		prev, err := db.current(o.key, staged, &rtx)
		if err != nil {
			r.err = fmt.Errorf("store: %s %q: %w", o.kind, o.key, err)
			continue
		}
		e, err := decide(o, prev, rev+1)
		if err != nil {
			r.err = err
			continue
		}
		rev++
		if e.Type == EventDelete {
			staged[o.key] = nil
			r.kv = e.KV
		} else {
			kv := e.KV
			staged[o.key] = &kv
		}
		r.rev = rev
		events = append(events, e)
	}
	if rtx != nil {
		_ = rtx.Rollback()
	}
	if rev-compact > db.cfg.HistorySize {
		compact = rev - db.cfg.HistorySize
	}
	if len(events) > 0 || compact != db.compact {
		if err := db.wal.append(compact, events); err != nil {
			err = fmt.Errorf("store: commit to %s: %w", db.cfg.Path, err)
			db.log.Error("store commit failed", "path", db.cfg.Path, "writes", len(batch), "err", err)
			for i := range batch {
				batch[i].done <- opResult{err: err}
			}
			return
		}
		db.ovMu.Lock()
		maps.Copy(db.overlay, staged)
		db.ovMu.Unlock()
		db.pending = append(db.pending, events...)
		db.compact = compact
		db.pendingN.Store(db.pendingCount())
		if db.durableHook != nil && len(events) > 0 {
			db.durableHook(events[0].KV.ModRevision, rev)
		}
		db.compactRev.Store(compact)
		db.commits.Add(1)
	}
	writes := int64(len(batch))
	if flush {
		for _, o := range batch {
			if o.kind == opFlush {
				writes--
			}
		}
	}
	db.writes.Add(writes)
	db.hub.publish(events, rev)
	// The writes are durable in the log: their writers go on while a
	// checkpoint runs; a flush waits for it.
	for i, o := range batch {
		if o.kind != opFlush {
			o.done <- results[i]
		}
	}
	var cerr error
	if flush || len(db.pending) >= db.cfg.CheckpointWrites || db.wal.off >= db.cfg.CheckpointBytes {
		cerr = db.checkpoint()
	}
	if flush {
		for i, o := range batch {
			if o.kind == opFlush {
				results[i].err = cerr
				o.done <- results[i]
			}
		}
	}
}

// pendingCount is what readers see of the pending state: the events not
// yet in bbolt, plus one for a compaction not yet in bbolt.
func (db *DB) pendingCount() int64 {
	n := int64(len(db.pending))
	if db.compact != db.boltCompact {
		n++
	}
	return n
}

// current returns key's state as the writes so far leave it: staged by
// this batch, pending in the log, or in bbolt (read through *rtx, begun on
// first use); nil when absent. The value is shared: do not modify it.
func (db *DB) current(key string, staged map[string]*KeyValue, rtx **bolt.Tx) (*KeyValue, error) {
	if kv, ok := staged[key]; ok {
		return kv, nil
	}
	if kv, ok := db.overlay[key]; ok { // only the committer writes it
		return kv, nil
	}
	if *rtx == nil {
		tx, err := db.bolt.Begin(false)
		if err != nil {
			return nil, err
		}
		*rtx = tx
	}
	v := (*rtx).Bucket(bucketKV).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	kv, err := readKV(*rtx, key, v)
	if err != nil {
		return nil, err
	}
	return &kv, nil
}

// checkpoint commits the pending events (and compaction) to bbolt in one
// transaction, with the next log epoch, then starts the log afresh. On
// error everything stays pending (and durable in the log).
func (db *DB) checkpoint() error {
	if db.pendingCount() == 0 {
		return nil
	}
	if db.checkpointHook != nil {
		db.checkpointHook()
	}
	t0 := time.Now()
	epoch := db.wal.epoch + 1
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		return writeEvents(tx, db.pending, db.compact, epoch)
	})
	if err != nil {
		err = fmt.Errorf("store: checkpoint to %s: %w", db.cfg.Path, err)
		db.log.Error("store checkpoint failed", "path", db.cfg.Path, "writes", len(db.pending), "err", err)
		return err
	}
	db.wal.reset(epoch)
	if n := len(db.pending); n > 0 {
		db.boltRev.Store(db.pending[n-1].KV.ModRevision)
	}
	db.ovMu.Lock()
	clear(db.overlay)
	db.ovMu.Unlock()
	if cap(db.pending) > 4*db.cfg.MaxBatch {
		db.pending = nil
	} else {
		clear(db.pending) // drop the values
		db.pending = db.pending[:0]
	}
	db.boltCompact = db.compact
	db.pendingN.Store(0)
	db.checkpoints.Add(1)
	if d := time.Since(t0); d > time.Second {
		db.log.Warn("store checkpoint slow", "duration", d)
	} else {
		db.log.Debug("store checkpoint", "revision", db.boltRev.Load(), "duration", d)
	}
	return nil
}

// decide checks o against prev, the current state of its key (nil:
// absent), and returns the event it makes at revision rev.
func decide(o *op, prev *KeyValue, rev int64) (Event, error) {
	switch o.kind {
	case opCreate:
		if prev != nil {
			return Event{}, fmt.Errorf("store: create %q: %w (revision %d)", o.key, ErrExists, prev.ModRevision)
		}
		return Event{Type: EventCreate, KV: KeyValue{Key: o.key, Value: o.value, CreateRevision: rev, ModRevision: rev}}, nil
	case opUpdate, opDelete:
		if prev == nil {
			return Event{}, fmt.Errorf("store: %s %q: %w", o.kind, o.key, ErrNotFound)
		}
		if o.expected != 0 && o.expected != prev.ModRevision {
			return Event{}, fmt.Errorf("store: %s %q: expected revision %d, current is %d: %w", o.kind, o.key, o.expected, prev.ModRevision, ErrConflict)
		}
		if o.kind == opDelete {
			return Event{Type: EventDelete, KV: KeyValue{Key: o.key, Value: prev.Value, CreateRevision: prev.CreateRevision, ModRevision: rev}, Prev: prev}, nil
		}
		return Event{Type: EventUpdate, KV: KeyValue{Key: o.key, Value: o.value, CreateRevision: prev.CreateRevision, ModRevision: rev}, Prev: prev}, nil
	}
	return Event{}, errors.New("store: unknown operation")
}

// writeEvents applies events (consecutive revisions after the file's; their
// Prev is not used: it is read from the file) to the bbolt file in tx,
// trims the history to compact, and records the new revision, compaction
// and log epoch.
func writeEvents(tx *bolt.Tx, events []Event, compact, epoch int64) error {
	kvb := tx.Bucket(bucketKV)
	hist := tx.Bucket(bucketHistory)
	vals := tx.Bucket(bucketValues)
	meta := tx.Bucket(bucketMeta)
	// Revision-keyed buckets are appended to: pack their pages full.
	hist.FillPercent = 1
	vals.FillPercent = 1
	// Pack key pages to 90% rather than bbolt's 50% (as etcd does):
	// fewer pages to write per commit.
	kvb.FillPercent = 0.9
	rev, oldCompact, err := metaRevisions(meta)
	if err != nil {
		return err
	}
	for i := range events {
		e := &events[i]
		if e.KV.ModRevision != rev+1 {
			return fmt.Errorf("write of revision %d after %d: %w", e.KV.ModRevision, rev, ErrCorrupt)
		}
		rev++
		key := []byte(e.KV.Key)
		var prev *KeyValue
		if v := kvb.Get(key); v != nil {
			p, err := decodeKV(e.KV.Key, v)
			if err != nil {
				return err
			}
			prev = &p
		}
		if (e.Type == EventCreate) != (prev == nil) {
			return fmt.Errorf("%s of %q at revision %d, key present: %t: %w", e.Type, e.KV.Key, rev, prev != nil, ErrCorrupt)
		}
		h := Event{Type: e.Type, KV: KeyValue{Key: e.KV.Key, CreateRevision: rev, ModRevision: rev}, Prev: prev}
		if prev != nil {
			h.KV.CreateRevision = prev.CreateRevision
		}
		if e.Type == EventDelete {
			err = kvb.Delete(key)
		} else {
			err = kvb.Put(key, encodeKV(h.KV.CreateRevision, rev))
			if err == nil {
				err = vals.Put(revKey(rev), e.KV.Value)
			}
		}
		if err != nil {
			return fmt.Errorf("write %q: %w", e.KV.Key, err)
		}
		if err := hist.Put(revKey(rev), encodeEvent(&h)); err != nil {
			return fmt.Errorf("history %d: %w", rev, err)
		}
	}
	compact = min(max(compact, oldCompact), rev)
	if err := trimHistory(hist, vals, compact); err != nil {
		return err
	}
	if err := meta.Put(metaRev, revKey(rev)); err != nil {
		return err
	}
	if err := meta.Put(metaCompact, revKey(compact)); err != nil {
		return err
	}
	return meta.Put(metaWALEpoch, revKey(epoch))
}

// trimHistory deletes the history entries at and before compact, and the
// values they replaced (no longer anyone's current or Prev value).
func trimHistory(hist, vals *bolt.Bucket, compact int64) error {
	c := hist.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		rev, err := decodeRevKey(k)
		if err != nil {
			return err
		}
		if rev > compact {
			return nil
		}
		e, err := decodeEvent(rev, v)
		if err != nil {
			return err
		}
		if e.Prev != nil {
			if err := vals.Delete(revKey(e.Prev.ModRevision)); err != nil {
				return fmt.Errorf("trim value of %d: %w", e.Prev.ModRevision, err)
			}
		}
		if err := c.Delete(); err != nil {
			return fmt.Errorf("trim history at %d: %w", rev, err)
		}
	}
	return nil
}
