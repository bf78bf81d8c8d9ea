package image

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

type countingImporter struct {
	imp   Importer
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingImporter) ImportFile(ctx context.Context, file string) ([]*Image, error) {
	c.mu.Lock()
	c.calls[filepath.Base(file)]++
	c.mu.Unlock()
	return c.imp.ImportFile(ctx, file)
}

func (c *countingImporter) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[name]
}

func startWatcher(t *testing.T, cfg WatcherConfig, imp Importer) func() {
	t.Helper()
	w, err := NewWatcher(cfg, imp, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watcher: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatcher(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	dir := filepath.Join(t.TempDir(), "images")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	has := func(ref string) func() bool {
		return func() bool { ok, _ := s.Has(ctx, ref); return ok }
	}
	write := func(name string, c testimage.Compression, img v1.Image, tag string) {
		t.Helper()
		src := writeFile(t, func(w io.Writer) error {
			return testimage.WriteDockerSave(w, c, testimage.Tagged{Image: img, Tags: []string{tag}})
		})
		b := readAll(t, src)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base, top, _ := twoImages(t)
	write("present.tar", testimage.None, busybox(t, testimage.None), "present:1")

	imp := &countingImporter{imp: s, calls: map[string]int{}}
	cfg := WatcherConfig{Dir: dir, StateFile: filepath.Join(s.Root(), "imported.json"), Rescan: time.Hour, Settle: 20 * time.Millisecond}
	stop := startWatcher(t, cfg, imp)
	waitFor(t, "archive present at start", has("present:1"))

	// Written in place (IN_CLOSE_WRITE), zstd, no telling extension.
	write("written", testimage.Zstd, base, "written:1")
	waitFor(t, "written archive", has("written:1"))

	// Copied under a hidden name, then renamed (IN_MOVED_TO).
	write(".incoming", testimage.Gzip, top, "moved:1")
	time.Sleep(100 * time.Millisecond) // its events pass: hidden files are ignored
	if imp.count(".incoming") != 0 {
		t.Error("hidden file imported")
	}
	if err := os.Rename(filepath.Join(dir, ".incoming"), filepath.Join(dir, "moved.tar.gz")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "moved archive", has("moved:1"))

	// A corrupt file fails once and is not retried while unchanged.
	if err := os.WriteFile(filepath.Join(dir, "corrupt.tar"), randomBytes(4096), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "corrupt file attempted", func() bool { return imp.count("corrupt.tar") == 1 })
	// Another event rescans the directory (inotify: the periodic rescan is an hour).
	write("another", testimage.None, busybox(t, testimage.None), "another:1")
	waitFor(t, "another archive", has("another:1"))
	if n := imp.count("corrupt.tar"); n != 1 {
		t.Errorf("corrupt file imported %d times", n)
	}
	for _, n := range []string{"present.tar", "written", "moved.tar.gz"} {
		if c := imp.count(n); c != 1 {
			t.Errorf("%s imported %d times", n, c)
		}
	}
	stop()

	// Restart: unchanged files are not imported again; a changed one is.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "written"), later, later); err != nil {
		t.Fatal(err)
	}
	imp2 := &countingImporter{imp: s, calls: map[string]int{}}
	stop2 := startWatcher(t, cfg, imp2)
	waitFor(t, "changed file re-imported", func() bool { return imp2.count("written") == 1 })
	time.Sleep(300 * time.Millisecond)
	stop2()
	for _, n := range []string{"present.tar", "moved.tar.gz", "corrupt.tar"} {
		if c := imp2.count(n); c != 0 {
			t.Errorf("after restart %s imported %d times", n, c)
		}
	}
}

// Scanned closes only once the archives present at start are imported, and
// when Run ends early.
func TestWatcherScanned(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	dir := filepath.Join(t.TempDir(), "images")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := writeFile(t, func(w io.Writer) error {
		return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: busybox(t, testimage.None), Tags: []string{"early:1"}})
	})
	if err := os.WriteFile(filepath.Join(dir, "early.tar"), readAll(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(WatcherConfig{Dir: dir, StateFile: filepath.Join(s.Root(), "imported.json"), Rescan: time.Hour}, s, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Scanned():
		t.Fatal("scanned before Run")
	default:
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	select {
	case <-w.Scanned():
	case <-time.After(20 * time.Second):
		t.Fatal("first scan not over within 20 s")
	}
	if ok, _ := s.Has(ctx, "early:1"); !ok {
		t.Error("Scanned closed before the archive present at start was imported")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A watcher whose Run fails at once still closes Scanned.
	bad, err := NewWatcher(WatcherConfig{Dir: filepath.Join(src, "not-a-dir"), StateFile: filepath.Join(t.TempDir(), "s.json")}, s, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Run(ctx); err == nil {
		t.Error("Run on a path below a file succeeded")
	}
	select {
	case <-bad.Scanned():
	default:
		t.Error("Scanned still open after Run failed")
	}
}
