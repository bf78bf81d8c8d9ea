package store

import (
	"fmt"
	"time"
)

// Defaults for Config's zero fields.
const (
	// DefaultHistorySize is how many recent revisions the store keeps on
	// disk for resumed watches and as-of-revision lists. 10,000 revisions
	// are minutes to hours of a normal cluster's churn (a few writes a
	// second) and still about a second of a write storm at full speed, while
	// costing some 20-30 MB of disk with 1 KB objects (each entry holds the
	// new and the previous value).
	DefaultHistorySize = 10000
	// DefaultWatchCacheSize is how many recent events are kept in memory so
	// that live watchers are served without reading the disk (about 4 MB
	// with 1 KB objects). Watchers further behind read the on-disk history.
	DefaultWatchCacheSize = 2048
	// DefaultOpenTimeout bounds how long Open waits for another process to
	// release the database file before failing with ErrInUse.
	DefaultOpenTimeout = 2 * time.Second
	// DefaultMaxBatch caps how many writes go into one transaction.
	DefaultMaxBatch = 1024
	// DefaultCheckpointInterval is how long writes may wait in the
	// write-ahead log before they are folded into the bbolt file. An idle
	// node's lease renewals (one every 10 s a node) then cost one page each
	// in the log and one bbolt transaction (some 100-140 KB of pages with
	// the freelist and the history trim) every 10 minutes.
	DefaultCheckpointInterval = 10 * time.Minute
	// DefaultCheckpointBytes and DefaultCheckpointWrites bound the log (and
	// the memory that holds its writes until they are in the bbolt file).
	DefaultCheckpointBytes  = 4 << 20
	DefaultCheckpointWrites = 1024
	// WatchChannelSize is the buffer of a Watcher's Events channel.
	WatchChannelSize = 128
)

// Config configures a DB. Only Path is required.
type Config struct {
	// Path is the bbolt database file, created if absent (its directory
	// too); the server uses <data-dir>/server/db/state.db.
	Path string
	// HistorySize is how many recent revisions stay available to Watch and
	// to List with a Revision; older ones are trimmed as writes come in and
	// a request for them fails with ErrCompacted. It is also the bound on
	// how far a watcher may fall behind the newest revision before it is
	// ended with ErrCompacted. Default DefaultHistorySize.
	HistorySize int64
	// WatchCacheSize is the number of recent events kept in memory for
	// watchers. Default DefaultWatchCacheSize.
	WatchCacheSize int
	// OpenTimeout is how long Open waits for the file lock. Default
	// DefaultOpenTimeout.
	OpenTimeout time.Duration
	// MaxBatch caps the writes grouped into one transaction. Default
	// DefaultMaxBatch.
	MaxBatch int
	// CheckpointInterval, CheckpointBytes and CheckpointWrites: the
	// write-ahead log is folded into the bbolt file this long after its
	// first pending write, or once it holds this many bytes or writes
	// (and whenever a list or an old watch needs the file current, and at
	// Close). Defaults DefaultCheckpointInterval, DefaultCheckpointBytes,
	// DefaultCheckpointWrites.
	CheckpointInterval time.Duration
	CheckpointBytes    int64
	CheckpointWrites   int
	// SkipIntegrityCheck skips bbolt's full consistency check at Open
	// (which reads every page: milliseconds for a typical cluster, seconds
	// for a database of gigabytes). The cheaper checks (meta pages, file
	// size, schema) always run.
	SkipIntegrityCheck bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Path == "" {
		return c, fmt.Errorf("store: config: Path is required")
	}
	if c.HistorySize < 0 || c.WatchCacheSize < 0 || c.OpenTimeout < 0 || c.MaxBatch < 0 ||
		c.CheckpointInterval < 0 || c.CheckpointBytes < 0 || c.CheckpointWrites < 0 {
		return c, fmt.Errorf("store: config: negative HistorySize, WatchCacheSize, OpenTimeout, MaxBatch or Checkpoint setting")
	}
	setDefault(&c.CheckpointInterval, DefaultCheckpointInterval)
	setDefault(&c.CheckpointBytes, DefaultCheckpointBytes)
	setDefault(&c.CheckpointWrites, DefaultCheckpointWrites)
	setDefault(&c.HistorySize, DefaultHistorySize)
	setDefault(&c.WatchCacheSize, DefaultWatchCacheSize)
	setDefault(&c.OpenTimeout, DefaultOpenTimeout)
	setDefault(&c.MaxBatch, DefaultMaxBatch)
	if c.CheckpointWrites > c.WatchCacheSize-c.MaxBatch && c.WatchCacheSize > c.MaxBatch {
		// Keep every write not yet checkpointed in the watch ring, so that
		// a watcher behind the ring finds its events in the bbolt file.
		c.CheckpointWrites = c.WatchCacheSize - c.MaxBatch
	}
	return c, nil
}

// setDefault sets a zero *v to def.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
