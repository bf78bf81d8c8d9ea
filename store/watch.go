package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// hub holds the newest committed revision and a ring of the most recent
// events, and wakes watchers when new ones arrive. Revisions are dense (each
// write takes the next one), so the event of revision r is ring[r%len].
type hub struct {
	mu     sync.RWMutex
	ring   []Event
	first  int64 // oldest revision in the ring; first > last: empty
	last   int64 // newest committed revision
	notify chan struct{}
}

func newHub(size int, rev int64) *hub {
	return &hub{ring: make([]Event, size), first: rev + 1, last: rev, notify: make(chan struct{})}
}

func (h *hub) revision() int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.last
}

// publish records the events of a commit (revisions last+1 .. rev) and
// wakes the watchers.
func (h *hub) publish(events []Event, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := int64(len(h.ring))
	for _, e := range events {
		h.ring[e.KV.ModRevision%n] = e
	}
	h.last = rev
	if h.last-h.first+1 > n {
		h.first = h.last - n + 1
	}
	close(h.notify)
	h.notify = make(chan struct{})
}

// copyFrom appends to buf the events under prefix from revision from on
// (at most max revisions are looked at) if the ring still holds from. It
// returns the next revision to look at, and the newest revision and wake-up
// channel to wait on when there is nothing new.
func (h *hub) copyFrom(from int64, prefix string, max int64, buf []Event) (next int64, inRing bool, last int64, notify <-chan struct{}, out []Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if from < h.first || from > h.last {
		return from, from > h.last, h.last, h.notify, buf
	}
	end := min(h.last, from+max-1)
	n := int64(len(h.ring))
	for r := from; r <= end; r++ {
		if e := h.ring[r%n]; strings.HasPrefix(e.KV.Key, prefix) {
			buf = append(buf, e)
		}
	}
	return end + 1, true, h.last, h.notify, buf
}

// watcher is one Watch. Its goroutine moves events from the ring (or, when
// it has fallen behind the ring, from the on-disk history) to its channel;
// writers never wait for it.
type watcher struct {
	db     *DB
	ctx    context.Context
	prefix string
	next   int64 // next revision to deliver
	out    chan Event
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error
}

// Watch delivers every change under prefix with a revision greater than
// fromRevision (0: changes after the current revision), in revision order,
// with no gaps and no duplicates. fromRevision older than the retained
// history fails with ErrCompacted, newer than the current revision with
// ErrFutureRevision.
//
// The bound on a slow consumer: events come from memory while the watcher
// is within Config.WatchCacheSize revisions of the newest one, and from the
// on-disk history beyond that; a watcher whose next revision has been
// trimmed from the history (more than Config.HistorySize revisions behind,
// or behind a Compact) ends with an error wrapping ErrCompacted, and its
// consumer re-lists. Writers are never blocked by watchers and no event is
// skipped. Events share their Value slices between watchers: do not modify
// them.
func (db *DB) Watch(ctx context.Context, prefix string, fromRevision int64) (Watcher, error) {
	if fromRevision < 0 {
		return nil, fmt.Errorf("store: watch %q: negative revision %d", prefix, fromRevision)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, ErrClosed
	}
	cur := db.hub.revision()
	compact := db.compactRev.Load()
	switch {
	case fromRevision > cur:
		return nil, fmt.Errorf("store: watch %q from revision %d, current is %d: %w", prefix, fromRevision, cur, ErrFutureRevision)
	case fromRevision != 0 && fromRevision < compact:
		return nil, fmt.Errorf("store: watch %q from revision %d, compacted up to %d: %w", prefix, fromRevision, compact, ErrCompacted)
	case fromRevision == 0:
		fromRevision = cur
	}
	w := &watcher{
		db:     db,
		ctx:    ctx,
		prefix: prefix,
		next:   fromRevision + 1,
		out:    make(chan Event, WatchChannelSize),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	db.watchers.Add(1)
	go w.run()
	return w, nil
}

func (w *watcher) Events() <-chan Event { return w.out }

func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (w *watcher) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// chunk is how many revisions a watcher takes at a time.
const chunk = 256

func (w *watcher) run() {
	defer w.db.watchers.Done()
	defer close(w.done)
	defer close(w.out)
	buf := make([]Event, 0, chunk)
	for {
		var (
			inRing bool
			last   int64
			notify <-chan struct{}
		)
		buf = buf[:0]
		w.next, inRing, last, notify, buf = w.db.hub.copyFrom(w.next, w.prefix, chunk, buf)
		if !inRing {
			// Fell behind the ring: read the history on disk.
			var err error
			if buf, err = w.db.readHistory(w.ctx, w.next, min(last, w.next+chunk-1), w.prefix, buf); err != nil {
				switch {
				case w.ctx.Err() != nil:
					// Canceled while the log was being checkpointed.
				case errors.Is(err, ErrClosed):
					w.fail(err)
				default:
					w.fail(fmt.Errorf("store: watch %q at revision %d: %w", w.prefix, w.next, err))
					w.db.log.Info("store watcher ended", "prefix", w.prefix, "revision", w.next, "err", err)
				}
				return
			}
			w.next = min(last, w.next+chunk-1) + 1
		}
		for _, e := range buf {
			select { // fast path: room in the channel
			case w.out <- e:
				continue
			default:
			}
			select {
			case w.out <- e:
			case <-w.stop:
				return
			case <-w.ctx.Done():
				return
			case <-w.db.closing:
				w.fail(ErrClosed)
				return
			}
		}
		if w.next <= last {
			continue
		}
		select {
		case <-notify:
		case <-w.stop:
			return
		case <-w.ctx.Done():
			return
		case <-w.db.closing:
			w.fail(ErrClosed)
			return
		}
	}
}

// readHistory appends the events under prefix of revisions from..to from
// the on-disk history; ErrCompacted if from is no longer there.
func (db *DB) readHistory(ctx context.Context, from, to int64, prefix string, buf []Event) ([]Event, error) {
	if to > db.boltRev.Load() {
		// Not yet checkpointed (rare: the ring holds more than the log's
		// writes unless configured otherwise).
		if err := db.flush(ctx); err != nil {
			return buf, err
		}
	}
	err := db.view(func(tx *bolt.Tx) error {
		compact, err := decodeRevKey(tx.Bucket(bucketMeta).Get(metaCompact))
		if err != nil {
			return err
		}
		compact = max(compact, db.compactRev.Load())
		if from <= compact {
			return fmt.Errorf("fell behind the retained history (compacted up to %d): %w", compact, ErrCompacted)
		}
		c := tx.Bucket(bucketHistory).Cursor()
		want := from
		for k, v := c.Seek(revKey(from)); k != nil; k, v = c.Next() {
			rev, err := decodeRevKey(k)
			if err != nil {
				return err
			}
			if rev > to {
				break
			}
			if rev != want {
				return fmt.Errorf("history entry %d missing: %w", want, ErrCorrupt)
			}
			want++
			key, err := eventKey(rev, v)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			e, err := readEvent(tx, rev, v)
			if err != nil {
				return err
			}
			buf = append(buf, e)
		}
		if want <= to {
			return fmt.Errorf("history entry %d missing: %w", want, ErrCorrupt)
		}
		return nil
	})
	return buf, err
}
