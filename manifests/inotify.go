package manifests

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// watchMask is what makes the directory worth rescanning: files written and
// closed, created, removed or renamed, and the directory itself going away.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM |
	unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ATTRIB

// watcher watches a directory tree with inotify. It does not report which
// file changed: any event means "rescan", which is cheap because unchanged
// files are recognised by checksum.
type watcher struct {
	root   string
	fd     int      // the inotify descriptor (non-blocking)
	file   *os.File // fd in Go's poller, so that Close ends a pending Read
	events chan struct{}
	errs   chan error

	mu sync.Mutex // serialises addTree
}

func newWatcher(root string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	w := &watcher{
		root:   root,
		fd:     fd,
		file:   os.NewFile(uintptr(fd), "inotify"),
		events: make(chan struct{}, 1),
		errs:   make(chan error, 1),
	}
	if err := w.addTree(); err != nil {
		_ = w.file.Close()
		return nil, err
	}
	return w, nil
}

// addTree watches root and every directory below it (again: inotify_add_watch
// on a watched directory only updates its mask).
func (w *watcher) addTree() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return filepath.WalkDir(w.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != w.root && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != w.root && isHidden(d.Name()) {
			return filepath.SkipDir
		}
		if _, err := unix.InotifyAddWatch(w.fd, path, watchMask); err != nil {
			if errors.Is(err, unix.ENOENT) && path != w.root {
				return nil
			}
			return fmt.Errorf("inotify_add_watch %s: %w", path, err)
		}
		return nil
	})
}

// run reads events until the watcher is closed, signalling events (coalesced)
// and the first read error.
func (w *watcher) run() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				select {
				case w.errs <- err:
				default:
				}
			}
			return
		}
		if n > 0 {
			select {
			case w.events <- struct{}{}:
			default:
			}
		}
	}
}

// Close stops run and releases the inotify descriptor.
func (w *watcher) Close() error { return w.file.Close() }
