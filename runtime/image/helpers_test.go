package image

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newTestStore(t testing.TB, mod ...func(*Config)) *Store {
	t.Helper()
	cfg := Config{Root: filepath.Join(t.TempDir(), "store")}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkConsistent(t, s) })
	return s
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// checkConsistent asserts the store invariants: no staging left, every
// layer an image names exists, no mount below the root.
func checkConsistent(t testing.TB, s *Store) {
	t.Helper()
	if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
		t.Errorf("leaked staging entries: %v", ents)
	}
	unlock, err := s.lock()
	if err != nil {
		t.Fatal(err)
	}
	idx, err := s.load()
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range idx.Images {
		for _, c := range img.ChainIDs {
			if !s.hasLayer(c) {
				t.Errorf("image %s names missing layer %s", img.ID, c)
			}
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), " "+s.Root()) {
		t.Errorf("mount left below %s", s.Root())
	}
}

// layerDirs lists layers/ entries.
func layerDirs(t testing.TB, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.path("layers"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// assertEmpty asserts no image and no layer is registered.
func assertEmpty(t testing.TB, s *Store) {
	t.Helper()
	imgs, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 0 {
		t.Errorf("images registered after failure: %v", imgs)
	}
	if l := layerDirs(t, s); len(l) != 0 {
		t.Errorf("layers left after failure: %v", l)
	}
	if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
		t.Errorf("leaked staging entries: %v", ents)
	}
}

// writeFile writes an archive produced by fn to a temp file.
func writeFile(t testing.TB, fn func(w io.Writer) error) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "archive")
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fn(bw); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func busybox(t testing.TB, c testimage.Compression) v1.Image {
	t.Helper()
	img, err := testimage.Busybox(c)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func readAll(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
