package image

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Importer imports an image archive; *Store is one.
type Importer interface {
	ImportFile(ctx context.Context, file string) ([]*Image, error)
}

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Dir is the drop-in directory (<data-dir>/agent/images), created if missing.
	Dir string
	// StateFile records which files were imported (name, size, mtime);
	// the agent keeps it in the store root so a wiped store re-imports.
	StateFile string
	// Rescan is how often the directory is listed even without inotify
	// events (default 5 minutes), a safety net for dropped events.
	Rescan time.Duration
	// Settle delays a scan after an event so bursts are handled at once
	// (default 200ms).
	Settle time.Duration
}

// Watcher imports every archive in a directory at start and whenever one
// is written or moved there, and skips files already imported unchanged.
//
// It uses inotify (IN_CLOSE_WRITE, IN_MOVED_TO) through x/sys/unix rather
// than polling: a new archive is picked up as soon as its writer closes
// it, and an idle node does no work; the periodic rescan covers an
// overflowed event queue. Files whose name starts with "." are ignored
// (in-progress copies); a file that fails to import is retried only when
// its size or mtime changes.
type Watcher struct {
	cfg WatcherConfig
	imp Importer
	log *slog.Logger

	scanned     chan struct{} // closed after the first scan (or when Run ends)
	scannedOnce sync.Once
}

// NewWatcher makes a Watcher importing into imp.
func NewWatcher(cfg WatcherConfig, imp Importer, log *slog.Logger) (*Watcher, error) {
	if cfg.Dir == "" || cfg.StateFile == "" {
		return nil, errors.New("image watcher: Dir and StateFile are required")
	}
	if imp == nil || log == nil {
		return nil, errors.New("image watcher: importer and logger are required")
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = 5 * time.Minute
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 200 * time.Millisecond
	}
	return &Watcher{cfg: cfg, imp: imp, log: log, scanned: make(chan struct{})}, nil
}

// Scanned is closed once Run's first scan is over: every archive present at
// start has been imported (or has failed). A node waits for it before it
// calls an image missing, as k3s preloads its air-gap images before the
// kubelet runs pods. It is also closed when Run returns early.
func (w *Watcher) Scanned() <-chan struct{} { return w.scanned }

func (w *Watcher) markScanned() { w.scannedOnce.Do(func() { close(w.scanned) }) }

// importRecord is the state kept per imported file.
type importRecord struct {
	Size    int64    `json:"size"`
	MtimeNs int64    `json:"mtimeNs"`
	Images  []string `json:"images,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Run scans the directory, then watches it until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.markScanned()
	if err := os.MkdirAll(w.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("image watcher: %w", err)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("image watcher: inotify: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: reads use the poller
	const mask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_ONLYDIR
	if _, err := unix.InotifyAddWatch(fd, w.cfg.Dir, mask); err != nil {
		_ = f.Close()
		return fmt.Errorf("image watcher: watch %s: %w", w.cfg.Dir, err)
	}
	events := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.readEvents(f, events)
	}()
	defer func() {
		_ = f.Close() // ends readEvents
		wg.Wait()
	}()

	w.scan(ctx)
	w.markScanned()
	tick := time.NewTicker(w.cfg.Rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case _, ok := <-events:
			if !ok {
				return errors.New("image watcher: inotify stream ended")
			}
			select { // let a burst of events settle
			case <-ctx.Done():
				return nil
			case <-time.After(w.cfg.Settle):
			}
		}
		w.scan(ctx)
	}
}

// readEvents signals events (coalesced) until f is closed.
func (w *Watcher) readEvents(f *os.File, events chan<- struct{}) {
	defer close(events)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.log.Error("image watcher: read inotify", "err", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			m := binary.NativeEndian.Uint32(buf[off+4:])
			l := binary.NativeEndian.Uint32(buf[off+12:])
			off += unix.SizeofInotifyEvent + int(l)
			if m&unix.IN_IGNORED != 0 {
				w.log.Warn("image watcher: drop-in directory removed; rescanning periodically only", "dir", w.cfg.Dir)
			}
		}
		select {
		case events <- struct{}{}:
		default:
		}
	}
}

// scan imports new and changed files and forgets vanished ones.
func (w *Watcher) scan(ctx context.Context) {
	state := w.loadState()
	ents, err := os.ReadDir(w.cfg.Dir)
	if err != nil {
		w.log.Error("image watcher: list drop-in directory", "dir", w.cfg.Dir, "err", err)
		return
	}
	seen := map[string]bool{}
	changed := false
	for _, e := range ents {
		if ctx.Err() != nil {
			break
		}
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		seen[name] = true
		rec := importRecord{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
		if old, ok := state[name]; ok && old.Size == rec.Size && old.MtimeNs == rec.MtimeNs {
			continue
		}
		start := time.Now()
		imgs, err := w.imp.ImportFile(ctx, filepath.Join(w.cfg.Dir, name))
		if err != nil {
			if ctx.Err() != nil {
				break // retried at the next start
			}
			rec.Error = err.Error()
			w.log.Error("image watcher: import failed", "file", name, "err", err)
		} else {
			for _, img := range imgs {
				rec.Images = append(rec.Images, img.ID)
			}
			w.log.Info("image watcher: imported", "file", name, "images", len(imgs), "took", time.Since(start).Round(time.Millisecond))
		}
		state[name] = rec
		changed = true
	}
	for name := range state {
		if !seen[name] && ctx.Err() == nil {
			delete(state, name)
			changed = true
		}
	}
	if changed {
		if err := w.saveState(state); err != nil {
			w.log.Error("image watcher: save state", "err", err)
		}
	}
}

func (w *Watcher) loadState() map[string]importRecord {
	state := map[string]importRecord{}
	b, err := os.ReadFile(w.cfg.StateFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.log.Warn("image watcher: read state, re-importing all", "err", err)
		}
		return state
	}
	if err := json.Unmarshal(b, &state); err != nil {
		w.log.Warn("image watcher: corrupt state, re-importing all", "file", w.cfg.StateFile, "err", err)
		return map[string]importRecord{}
	}
	return state
}

func (w *Watcher) saveState(state map[string]importRecord) error {
	b, err := json.MarshalIndent(state, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(w.cfg.StateFile), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(w.cfg.StateFile, b)
}
