package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// state is what Open reads back from an existing database.
type state struct {
	rev, compact int64
	walEpoch     int64
	fresh        bool // no orch data yet: buckets must be created
}

// boltOptions: fsync on every commit (NoSync false) and the hashmap
// freelist. The freelist is written with every commit (NoFreelistSync
// false, unlike etcd): rebuilding it at open walks the whole tree in a
// goroutine of bbolt's whose panic on a damaged page cannot be recovered, so
// a damaged file would crash the process instead of failing Open.
func boltOptions() *bolt.Options {
	return &bolt.Options{FreelistType: bolt.FreelistMapType}
}

// initialMmapSize is how much address space the writable database maps
// from the start. bbolt maps the file with room to spare and, when a commit
// needs more, remaps it: it copies every key and value the open nodes point
// into the old mapping onto the heap first (20 MB of garbage in a burst of
// 5,000 pod creates) and holds off every reader meanwhile. A mapping larger
// than the file costs address space only: pages count as memory once they
// are read, as before. etcd maps 10 GB up front; 1 GiB covers databases
// well past what orch keeps for a small cluster (5,000 pods: ~20 MB), and
// bbolt still grows the mapping past it when needed. 32-bit platforms map
// less of their small address space.
//
// bbolt grows a file mapped larger than bbolt's AllocSize in steps of
// AllocSize past what a commit needs (a truncate and an fsync a step). Its
// default, 16 MiB, would give a fresh cluster a 16 MiB file (sparse, but
// that is what ls shows); fileGrowStep keeps the file within 4 MiB of its
// data.
func initialMmapSize() int {
	if strconv.IntSize == 32 {
		return 128 << 20
	}
	return 1 << 30
}

// fileGrowStep is how far past its data the database file is grown at a
// time; see initialMmapSize.
const fileGrowStep = 4 << 20

// catchCorrupt turns a panic of bbolt's on a damaged file (they assert
// page types and ids) into an error wrapping ErrCorrupt. Used only around
// opening and checking a file, where damage is expected input.
func catchCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("store: %s: %w: bbolt: %v", path, ErrCorrupt, r)
	}
}

// openBolt opens (and checks) the file of cfg. An existing file is first
// opened read-only and verified: the meta pages (bbolt), that the file holds
// every page the meta page refers to (a truncated file), bbolt's consistency
// check unless skipped, and orch's own schema. Only then is it opened for
// writing, so a damaged file is reported, never reset or written to.
func openBolt(cfg Config) (_ *bolt.DB, _ state, err error) {
	defer catchCorrupt(cfg.Path, &err)
	var st state
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, st, fmt.Errorf("store: create directory of %s: %w", cfg.Path, err)
	}
	info, err := os.Stat(cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st.fresh = true
	case err != nil:
		return nil, st, fmt.Errorf("store: %s: %w", cfg.Path, err)
	case !info.Mode().IsRegular():
		return nil, st, fmt.Errorf("store: %s is not a regular file", cfg.Path)
	case info.Size() == 0:
		return nil, st, fmt.Errorf("store: %s is empty (truncated?); move it away to start a new database: %w", cfg.Path, ErrCorrupt)
	default:
		if st, err = verify(cfg); err != nil {
			return nil, st, err
		}
	}

	opts := boltOptions()
	opts.Timeout = cfg.OpenTimeout
	opts.InitialMmapSize = initialMmapSize()
	db, err := bolt.Open(cfg.Path, 0o600, opts)
	if err != nil {
		return nil, st, openError(cfg.Path, err)
	}
	db.AllocSize = fileGrowStep
	if st.fresh {
		if st.walEpoch, err = initialize(db); err != nil {
			_ = db.Close()
			return nil, st, fmt.Errorf("store: initialize %s: %w", cfg.Path, err)
		}
		if err := syncDir(filepath.Dir(cfg.Path)); err != nil {
			_ = db.Close()
			return nil, st, fmt.Errorf("store: %w", err)
		}
	}
	return db, st, nil
}

// openError maps bbolt's open errors to the store's sentinels.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("store: %s: file lock still held after the open timeout: %w", path, ErrInUse)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("store: open %s: %w", path, err)
	default:
		// ErrInvalid, ErrChecksum, ErrVersionMismatch, "file size too small",
		// mapping failures of a damaged file...
		return fmt.Errorf("store: open %s: %w (%w)", path, ErrCorrupt, err)
	}
}

// verify opens an existing file read-only (a shared lock, so a writer in
// another process still makes it fail with ErrInUse) and checks it.
func verify(cfg Config) (_ state, err error) {
	defer catchCorrupt(cfg.Path, &err)
	var st state
	opts := boltOptions()
	opts.ReadOnly = true
	opts.Timeout = cfg.OpenTimeout
	db, err := bolt.Open(cfg.Path, 0o600, opts)
	if err != nil {
		return st, openError(cfg.Path, err)
	}
	defer db.Close()
	info, err := os.Stat(cfg.Path)
	if err != nil {
		return st, fmt.Errorf("store: %s: %w", cfg.Path, err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); need > info.Size() {
			return fmt.Errorf("file has %d bytes but its meta page refers to %d: truncated", info.Size(), need)
		}
		if !cfg.SkipIntegrityCheck {
			for cerr := range tx.Check() {
				if err == nil {
					err = fmt.Errorf("bbolt consistency check: %w", cerr)
				}
			}
			if err != nil {
				return err
			}
		}
		st, err = readState(tx)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("store: %s: %w: %w", cfg.Path, ErrCorrupt, err)
	}
	return st, nil
}

// readState checks orch's schema and returns the revisions it holds. A
// bbolt file without any bucket is a database whose initialization did not
// complete: it is fresh.
func readState(tx *bolt.Tx) (state, error) {
	var st state
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		if k, _ := tx.Cursor().First(); k == nil {
			st.fresh = true
			return st, nil
		}
		return st, fmt.Errorf("not an orch store (no %q bucket)", bucketMeta)
	}
	if f := meta.Get(metaFormat); !bytes.Equal(f, formatMarker) {
		return st, fmt.Errorf("unknown format %q, want %q", f, formatMarker)
	}
	for _, b := range [][]byte{bucketKV, bucketHistory, bucketValues} {
		if tx.Bucket(b) == nil {
			return st, fmt.Errorf("missing %q bucket", b)
		}
	}
	var err error
	if st.rev, st.compact, err = metaRevisions(meta); err != nil {
		return st, err
	}
	if e := meta.Get(metaWALEpoch); e != nil { // absent in files of older orch
		if st.walEpoch, err = decodeRevKey(e); err != nil {
			return st, fmt.Errorf("write-ahead log epoch: %w", err)
		}
	}
	if st.rev < 0 || st.compact < 0 || st.compact > st.rev {
		return st, fmt.Errorf("revision %d, compacted revision %d", st.rev, st.compact)
	}
	// History holds exactly the revisions (compact, rev].
	c := tx.Bucket(bucketHistory).Cursor()
	first, _ := c.First()
	last, _ := c.Last()
	if st.rev == st.compact {
		if first != nil {
			return st, fmt.Errorf("history not empty at compacted revision %d", st.rev)
		}
		return st, nil
	}
	f, ferr := decodeRevKey(first)
	l, lerr := decodeRevKey(last)
	if ferr != nil || lerr != nil || f != st.compact+1 || l != st.rev {
		return st, fmt.Errorf("history does not cover revisions %d to %d", st.compact+1, st.rev)
	}
	return st, nil
}

// initialize creates the buckets and meta keys of a new file. Its log
// epoch starts at a random value, so that a log left behind by another
// database file at the same path can never be replayed into this one.
func initialize(db *bolt.DB) (epoch int64, err error) {
	epoch = rand.Int64N(1 << 62)
	return epoch, db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for _, b := range [][]byte{bucketKV, bucketHistory, bucketValues} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if meta.Get(metaFormat) != nil {
			epoch = 0
			if e := meta.Get(metaWALEpoch); e != nil {
				epoch, err = decodeRevKey(e)
			}
			return err
		}
		if err := meta.Put(metaFormat, formatMarker); err != nil {
			return err
		}
		if err := meta.Put(metaRev, revKey(0)); err != nil {
			return err
		}
		if err := meta.Put(metaWALEpoch, revKey(epoch)); err != nil {
			return err
		}
		return meta.Put(metaCompact, revKey(0))
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
