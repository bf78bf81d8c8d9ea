package store

import (
	"context"
	"errors"
	"fmt"
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
)

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
// other write already waiting (up to MaxBatch), and commits them in one
// transaction. While a transaction is being synced, new writers queue up
// and form the next group, so the fsync cost is shared.
func (db *DB) commitLoop() {
	defer close(db.commitDone)
	batch := make([]*op, 0, db.cfg.MaxBatch)
	var took time.Duration
	for {
		batch = batch[:0]
		select {
		case o := <-db.ops:
			batch = append(batch, o)
		case <-db.closing:
			return
		}
		batch = db.gather(batch, min(max(took/4, minStragglerWait), maxStragglerWait))
		t0 := time.Now()
		db.commit(batch)
		took = time.Since(t0)
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

// commit applies batch in one bbolt transaction. Each op is checked on its
// own against the state left by the ops before it, so one op's conflict
// fails only that op. Events reach watchers after the transaction is
// durable, and only then do the writers get their answers.
func (db *DB) commit(batch []*op) {
	results := make([]opResult, len(batch))
	events := make([]Event, 0, len(batch))
	rev := db.hub.revision()
	compact := db.compactRev.Load()
	t0 := time.Now()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		kvb := tx.Bucket(bucketKV)
		hist := tx.Bucket(bucketHistory)
		vals := tx.Bucket(bucketValues)
		// Revision-keyed buckets are appended to: pack their pages full.
		hist.FillPercent = 1
		vals.FillPercent = 1
		// Pack key pages to 90% rather than bbolt's 50% (as etcd does):
		// fewer pages to write per commit.
		kvb.FillPercent = 0.9
		for i, o := range batch {
			r := &results[i]
			if o.kind == opCompact {
				switch {
				case o.expected > rev:
					r.err = fmt.Errorf("store: compact to %d, current revision is %d: %w", o.expected, rev, ErrFutureRevision)
				case o.expected > compact:
					compact = o.expected
				}
				continue
			}
			e, err := apply(tx, o, rev+1)
			if err != nil {
				r.err = err
				continue
			}
			rev++
			if e.Type == EventDelete {
				err = kvb.Delete([]byte(o.key))
			} else {
				err = kvb.Put([]byte(o.key), encodeKV(e.KV.CreateRevision, e.KV.ModRevision))
				if err == nil {
					err = vals.Put(revKey(rev), e.KV.Value)
				}
			}
			if err != nil {
				return fmt.Errorf("write %q: %w", o.key, err)
			}
			if err := hist.Put(revKey(rev), encodeEvent(&e)); err != nil {
				return fmt.Errorf("history %d: %w", rev, err)
			}
			r.rev = rev
			if e.Type == EventDelete {
				r.kv = e.KV
			}
			events = append(events, e)
		}
		if rev-compact > db.cfg.HistorySize {
			compact = rev - db.cfg.HistorySize
		}
		if err := trimHistory(hist, vals, compact); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(metaRev, revKey(rev)); err != nil {
			return err
		}
		return meta.Put(metaCompact, revKey(compact))
	})
	if err != nil {
		err = fmt.Errorf("store: commit to %s: %w", db.cfg.Path, err)
		db.log.Error("store commit failed", "path", db.cfg.Path, "writes", len(batch), "err", err)
		for i := range batch {
			batch[i].done <- opResult{err: err}
		}
		return
	}
	if db.durableHook != nil && len(events) > 0 {
		db.durableHook(events[0].KV.ModRevision, rev)
	}
	db.compactRev.Store(compact)
	db.commits.Add(1)
	db.writes.Add(int64(len(batch)))
	db.hub.publish(events, rev)
	for i, o := range batch {
		o.done <- results[i]
	}
	if d := time.Since(t0); d > time.Second {
		db.log.Warn("store commit slow", "writes", len(batch), "duration", d)
	}
}

// apply checks o against the current state of its key and returns the
// event it makes at revision rev (not yet written).
func apply(tx *bolt.Tx, o *op, rev int64) (Event, error) {
	var prev *KeyValue
	if v := tx.Bucket(bucketKV).Get([]byte(o.key)); v != nil {
		p, err := decodeKV(o.key, v)
		if err != nil {
			return Event{}, fmt.Errorf("store: %w", err)
		}
		prev = &p
	}
	switch o.kind {
	case opCreate:
		if prev != nil {
			return Event{}, fmt.Errorf("store: create %q: %w (revision %d)", o.key, ErrExists, prev.ModRevision)
		}
		return Event{Type: EventCreate, KV: KeyValue{Key: o.key, Value: o.value, CreateRevision: rev, ModRevision: rev}}, nil
	case opUpdate, opDelete:
		verb := "update"
		if o.kind == opDelete {
			verb = "delete"
		}
		if prev == nil {
			return Event{}, fmt.Errorf("store: %s %q: %w", verb, o.key, ErrNotFound)
		}
		if o.expected != 0 && o.expected != prev.ModRevision {
			return Event{}, fmt.Errorf("store: %s %q: expected revision %d, current is %d: %w", verb, o.key, o.expected, prev.ModRevision, ErrConflict)
		}
		var err error
		if prev.Value, err = loadValue(tx, prev.ModRevision); err != nil {
			return Event{}, fmt.Errorf("store: %s %q: %w", verb, o.key, err)
		}
		if o.kind == opDelete {
			return Event{Type: EventDelete, KV: KeyValue{Key: o.key, Value: prev.Value, CreateRevision: prev.CreateRevision, ModRevision: rev}, Prev: prev}, nil
		}
		return Event{Type: EventUpdate, KV: KeyValue{Key: o.key, Value: o.value, CreateRevision: prev.CreateRevision, ModRevision: rev}, Prev: prev}, nil
	}
	return Event{}, errors.New("store: unknown operation")
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
