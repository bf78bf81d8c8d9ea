package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DB is the bbolt implementation of Store. Writes from all goroutines go to
// one committer goroutine that groups whatever is queued into a single
// record of the write-ahead log (one fsync for the group, each write
// checked on its own); a write returns once its record is on disk. The
// committer folds the log into the bbolt file in checkpoints (see wal.go);
// until then a pending write's key is served from memory. Committed changes
// are kept on disk as a bounded history (for watches that resume and lists
// at a past revision) and in memory as a ring of recent events (for live
// watchers). Nothing is written while no write is requested: the only timer
// is the checkpoint's, armed while writes are pending.
type DB struct {
	cfg  Config
	log  *slog.Logger
	bolt *bolt.DB

	// compactRev is the newest revision no longer in the history; it is
	// published by the committer after each commit.
	compactRev atomic.Int64
	commits    atomic.Int64
	inflight   atomic.Int64 // callers inside submit
	// durableHook, when set (by benchmarks, before any write), is called
	// with the revisions of each commit once it is durable, just before
	// they are published to watchers.
	durableHook func(first, last int64)
	// checkpointHook, when set (by tests, before any write), is called by
	// the committer as each checkpoint with pending writes begins.
	checkpointHook func()
	writes         atomic.Int64
	checkpoints    atomic.Int64
	// skipFinalCheckpoint, when set by tests before Close, leaves pending
	// writes in the log only, as a crash would.
	skipFinalCheckpoint bool

	// The committer's own (only its goroutine touches them): the log, the
	// events in it not yet in bbolt, the compacted revision and the one
	// bbolt holds.
	wal         *wal
	pending     []Event
	compact     int64
	boltCompact int64
	// pendingN is pendingCount() as of the last commit, for readers
	// deciding whether the bbolt file is current.
	pendingN atomic.Int64
	// boltRev is the revision the bbolt file holds.
	boltRev atomic.Int64
	// overlay holds the state of every key changed by a pending write (nil:
	// deleted). The committer writes it under ovMu.Lock; Get reads it.
	ovMu    sync.RWMutex
	overlay map[string]*KeyValue

	ops        chan *op      // to the committer; unbuffered
	closing    chan struct{} // closed by Close
	commitDone chan struct{}
	hub        *hub

	mu       sync.Mutex // guards closed and watchers.Add
	closed   bool
	watchers sync.WaitGroup
	closeErr error
	closeOne sync.Once
}

var _ Store = (*DB)(nil)

// Open opens (creating if needed) the database file cfg.Path. An existing
// file is checked first; damage gives an error wrapping ErrCorrupt and
// naming the file, and a file held by another process gives ErrInUse after
// cfg.OpenTimeout.
func Open(cfg Config, log *slog.Logger) (*DB, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		return nil, fmt.Errorf("store: Open: nil logger")
	}
	bdb, st, err := openBolt(cfg)
	if err != nil {
		return nil, err
	}
	w, replayed, err := recoverWAL(cfg, bdb, &st)
	if err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if replayed > 0 {
		log.Info("store replayed its write-ahead log", "path", w.path, "writes", replayed, "revision", st.rev)
	}
	db := &DB{
		cfg:         cfg,
		log:         log,
		bolt:        bdb,
		ops:         make(chan *op),
		closing:     make(chan struct{}),
		commitDone:  make(chan struct{}),
		hub:         newHub(cfg.WatchCacheSize, st.rev),
		wal:         w,
		compact:     st.compact,
		boltCompact: st.compact,
		overlay:     make(map[string]*KeyValue),
	}
	db.compactRev.Store(st.compact)
	db.boltRev.Store(st.rev)
	go db.commitLoop()
	log.Info("store opened", "path", cfg.Path, "revision", st.rev, "compacted", st.compact,
		"history", cfg.HistorySize, "new", st.fresh)
	return db, nil
}

// Close stops the committer (queued writes fail with ErrClosed), ends every
// watcher with ErrClosed and closes the file. Safe to call twice.
func (db *DB) Close() error {
	db.closeOne.Do(func() {
		db.mu.Lock()
		db.closed = true
		db.mu.Unlock()
		close(db.closing)
		<-db.commitDone
		db.watchers.Wait()
		werr := db.wal.close()
		if err := db.bolt.Close(); err != nil {
			werr = errors.Join(werr, fmt.Errorf("store: close %s: %w", db.cfg.Path, err))
		}
		db.closeErr = werr
		db.log.Info("store closed", "path", db.cfg.Path, "revision", db.Revision())
	})
	return db.closeErr
}

// Stats are counters since Open.
type Stats struct {
	// Commits is the number of write-ahead log records written (groups of
	// writes, and compactions).
	Commits int64
	// Checkpoints is the number of bbolt transactions that folded the log
	// into the database file.
	Checkpoints int64
	// Writes is the number of writes (successful or not) they carried.
	Writes int64
	// PageWrites is the number of write calls bbolt made to the file
	// (about one per page or run of adjacent pages).
	PageWrites int64
}

// Stats returns counters since Open.
func (db *DB) Stats() Stats {
	st := db.bolt.Stats()
	return Stats{Commits: db.commits.Load(), Checkpoints: db.checkpoints.Load(), Writes: db.writes.Load(), PageWrites: st.TxStats.GetWrite()}
}

// Path is the database file.
func (db *DB) Path() string { return db.cfg.Path }

// Revision is the revision of the last durable write.
func (db *DB) Revision() int64 { return db.hub.revision() }

func (db *DB) isClosed() bool {
	select {
	case <-db.closing:
		return true
	default:
		return false
	}
}

// view runs a read transaction, mapping a closed bbolt to ErrClosed.
func (db *DB) view(fn func(tx *bolt.Tx) error) error {
	if db.isClosed() {
		return ErrClosed
	}
	err := db.bolt.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("store: empty key")
	}
	if len(key) > bolt.MaxKeySize {
		return fmt.Errorf("store: key of %d bytes, the limit is %d", len(key), bolt.MaxKeySize)
	}
	return nil
}

// Get returns the current value of key.
func (db *DB) Get(ctx context.Context, key string) (KeyValue, error) {
	if err := ctx.Err(); err != nil {
		return KeyValue{}, err
	}
	if err := checkKey(key); err != nil {
		return KeyValue{}, err
	}
	db.ovMu.RLock()
	p, ok := db.overlay[key]
	db.ovMu.RUnlock()
	if ok {
		if p == nil {
			return KeyValue{}, fmt.Errorf("store: get %q: %w", key, ErrNotFound)
		}
		kv := *p
		kv.Value = cloneBytes(p.Value)
		return kv, nil
	}
	// Not pending: the bbolt file has the key's current state (a checkpoint
	// clears the overlay only once its transaction is committed).
	var kv KeyValue
	err := db.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("get %q: %w", key, ErrNotFound)
		}
		var err error
		kv, err = readKV(tx, key, v)
		return err
	})
	return kv, err
}

// flush makes the bbolt file hold every write acknowledged so far (a
// checkpoint, if any is pending).
func (db *DB) flush(ctx context.Context) error {
	if db.pendingN.Load() == 0 {
		return nil
	}
	return db.submit(ctx, &op{kind: opFlush}).err
}

// keyState is a key as it stood at a past revision: absent (kv nil) or kv.
type keyState struct {
	key string
	kv  *KeyValue
}

// List returns the keys under prefix in key order, at opts.Revision (or
// now), from after opts.Continue, at most opts.Limit of them. Remaining is
// exact. A list at a past revision reads the current keys and undoes the
// history after that revision, so it costs one pass over that history.
func (db *DB) List(ctx context.Context, prefix string, opts ListOptions) (ListResult, error) {
	if err := ctx.Err(); err != nil {
		return ListResult{}, err
	}
	switch {
	case opts.Limit < 0:
		return ListResult{}, fmt.Errorf("store: list %q: negative limit %d", prefix, opts.Limit)
	case opts.Revision < 0:
		return ListResult{}, fmt.Errorf("store: list %q: negative revision %d", prefix, opts.Revision)
	case opts.Continue != "" && !strings.HasPrefix(opts.Continue, prefix):
		return ListResult{}, fmt.Errorf("store: list %q: continue key %q is outside the prefix", prefix, opts.Continue)
	}
	if err := db.flush(ctx); err != nil {
		return ListResult{}, err
	}
	start := []byte(prefix)
	if opts.Continue != "" {
		start = append([]byte(opts.Continue), 0)
	}
	var res ListResult
	err := db.view(func(tx *bolt.Tx) error {
		cur, compact, err := metaRevisions(tx.Bucket(bucketMeta))
		if err != nil {
			return err
		}
		at := opts.Revision
		if at == 0 {
			at = cur
		}
		switch {
		case at > cur:
			return fmt.Errorf("list %q at revision %d, current is %d: %w", prefix, at, cur, ErrFutureRevision)
		case at < compact:
			return fmt.Errorf("list %q at revision %d, compacted up to %d: %w", prefix, at, compact, ErrCompacted)
		}
		res.Revision = at
		var past []keyState
		if at < cur {
			if past, err = pastStates(tx, at, cur, start, prefix); err != nil {
				return err
			}
		}
		return listMerge(ctx, tx.Bucket(bucketKV).Cursor(), start, []byte(prefix), past, opts, &res)
	})
	if err != nil {
		if errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return ListResult{}, err
		}
		return ListResult{}, fmt.Errorf("store: %w", err)
	}
	return res, nil
}

// pastStates returns, sorted by key, the state at revision at of every key
// under prefix (from start on) changed after at: the Prev of its first
// change after at (absent if that change created it).
func pastStates(tx *bolt.Tx, at, cur int64, start []byte, prefix string) ([]keyState, error) {
	seen := make(map[string]bool)
	var out []keyState
	c := tx.Bucket(bucketHistory).Cursor()
	for k, v := c.Seek(revKey(at + 1)); k != nil; k, v = c.Next() {
		rev, err := decodeRevKey(k)
		if err != nil {
			return nil, err
		}
		if rev > cur {
			break
		}
		// Peek at the key before decoding the whole entry.
		key, err := eventKey(rev, v)
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(key, prefix) || key < string(start) || seen[key] {
			continue
		}
		seen[key] = true
		e, err := readEvent(tx, rev, v)
		if err != nil {
			return nil, err
		}
		out = append(out, keyState{key: key, kv: e.Prev})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out, nil
}

// listMerge walks the current keys from start and the past states (which
// override the current ones) together in key order, filling res.
func listMerge(ctx context.Context, c *bolt.Cursor, start, prefix []byte, past []keyState, opts ListOptions, res *ListResult) error {
	limit := opts.Limit
	k, v := c.Seek(start)
	var last string
	full := false
	for n := 0; ; n++ {
		if n%4096 == 4095 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if k != nil && !bytes.HasPrefix(k, prefix) {
			k = nil
		}
		if k == nil && len(past) == 0 {
			break
		}
		var (
			kv  *KeyValue
			key string
		)
		switch {
		case len(past) > 0 && (k == nil || past[0].key <= string(k)):
			if k != nil && past[0].key == string(k) {
				k, v = c.Next()
			}
			key, kv = past[0].key, past[0].kv
			past = past[1:]
		default:
			key = string(k)
			if !full {
				d, err := decodeKV(key, v)
				if err != nil {
					return err
				}
				if opts.Known == nil || !opts.Known(key, d.ModRevision) {
					if d.Value, err = loadValue(c.Bucket().Tx(), d.ModRevision); err != nil {
						return fmt.Errorf("key %q: %w", key, err)
					}
				}
				kv = &d
			} else {
				kv = &KeyValue{} // present; only counted
			}
			k, v = c.Next()
		}
		if kv == nil {
			continue
		}
		if full {
			res.Remaining++
			continue
		}
		res.KVs = append(res.KVs, *kv)
		last = key
		if limit > 0 && int64(len(res.KVs)) == limit {
			full = true
		}
	}
	if res.Remaining > 0 {
		res.Continue = last
	}
	return nil
}
