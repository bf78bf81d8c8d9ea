package image

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

func importImage(t *testing.T, s *Store, img v1.Image, tags ...string) *Image {
	t.Helper()
	f := writeFile(t, func(w io.Writer) error {
		return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: img, Tags: tags})
	})
	return must[[]*Image](t)(s.ImportFile(context.Background(), f))[0]
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	base, top, _ := twoImages(t)
	b := importImage(t, s, base, "base:1", "base:latest")
	a := importImage(t, s, top, "app:1")
	inUse := map[string]bool{}
	pred := func(id string) bool { return inUse[id] }

	// A tag of a multi-tagged image is only untagged, even when in use.
	inUse[b.ID] = true
	if id, err := s.Remove(ctx, "base:latest", pred); err != nil || id != "" {
		t.Fatalf("untag: %q %v", id, err)
	}
	if ok, _ := s.Has(ctx, "base:latest"); ok {
		t.Error("tag still there")
	}
	if ok, _ := s.Has(ctx, "base:1"); !ok {
		t.Error("other tag gone")
	}
	// In use: refused, nothing changes.
	if _, err := s.Remove(ctx, "base:1", pred); !errors.Is(err, ErrInUse) {
		t.Fatalf("remove in-use: %v", err)
	}
	if _, err := s.Remove(ctx, b.ID, pred); !errors.Is(err, ErrInUse) {
		t.Fatalf("remove in-use by ID: %v", err)
	}
	if _, err := s.Remove(ctx, "nothing:1", pred); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove missing: %v", err)
	}
	if n := len(layerDirs(t, s)); n != 2 {
		t.Fatalf("%d layers", n)
	}
	// Not in use: removed; the shared layer stays for app.
	inUse[b.ID] = false
	if id, err := s.Remove(ctx, "base:1", pred); err != nil || id != b.ID {
		t.Fatalf("remove: %q %v", id, err)
	}
	if n := len(layerDirs(t, s)); n != 2 {
		t.Errorf("%d layers after removing base, want 2 (shared)", n)
	}
	if _, err := os.Stat(a.LayerDirs[0]); err != nil {
		t.Errorf("shared layer removed: %v", err)
	}
	// Remove by short ID prefix; all layers go.
	if id, err := s.Remove(ctx, a.ID[7:19], pred); err != nil || id != a.ID {
		t.Fatalf("remove by ID prefix: %q %v", id, err)
	}
	if n := len(layerDirs(t, s)); n != 0 {
		t.Errorf("%d layers left", n)
	}
}

func TestTagMovesToNewImage(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	base, top, _ := twoImages(t)
	importImage(t, s, base, "thing:1")
	a := importImage(t, s, top, "thing:1")
	r := must[*Image](t)(s.Resolve(ctx, "thing:1"))
	if r.ID != a.ID {
		t.Errorf("tag points at %s, want %s", r.ID, a.ID)
	}
	imgs := must[[]*Image](t)(s.List(ctx))
	if len(imgs) != 2 {
		t.Fatalf("%d images", len(imgs))
	}
	for _, img := range imgs {
		if img.ID != a.ID && len(img.RepoTags) != 0 {
			t.Errorf("old image kept tags %v", img.RepoTags)
		}
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	idx := &indexFile{Images: map[string]*Image{
		"sha256:aaaa1111": {ID: "sha256:aaaa1111"},
		"sha256:aaaa2222": {ID: "sha256:aaaa2222"},
	}}
	if _, err := find(idx, "aaaa"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("got %v", err)
	}
	if img, err := find(idx, "aaaa2"); err != nil || img.ID != "sha256:aaaa2222" {
		t.Errorf("got %v %v", img, err)
	}
}

// fakeDisk reports the store's layers as the used space of a disk of
// total bytes, plus a fixed base.
type fakeDisk struct {
	s           *Store
	base, total uint64
}

func (f *fakeDisk) usage(string) (uint64, uint64, error) {
	var used uint64
	ents, _ := os.ReadDir(f.s.path("layers"))
	for _, e := range ents {
		if m, err := f.s.readLayerMeta("sha256:" + e.Name()); err == nil {
			used += uint64(m.Size)
		}
	}
	return f.base + used, f.total, nil
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	disk := &fakeDisk{}
	s := newTestStore(t, func(c *Config) { c.DiskUsage = func(p string) (uint64, uint64, error) { return disk.usage(p) } })
	disk.s = s
	// Three independent images of ~1 MiB each.
	var imgs []*Image
	for i := range 3 {
		l := must[v1.Layer](t)(testimage.Layer(testimage.RandomEntries("data", 1<<20, uint64(i)), testimage.Gzip))
		im := must[v1.Image](t)(testimage.Image(testimage.Platform(), v1.Config{}, l))
		imgs = append(imgs, importImage(t, s, im, "img:"+string(rune('a'+i))))
		time.Sleep(10 * time.Millisecond) // distinct Added times
	}
	// An orphan layer (e.g. left by a killed process) is pruned by any GC.
	if err := os.MkdirAll(s.path("layers", "0000000000000000000000000000000000000000000000000000000000000000", "diff"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Recently used images are kept longer: resolve the oldest.
	must[*Image](t)(s.Resolve(ctx, "img:a"))
	var calls atomic.Int32
	inUse := func(id string) bool { calls.Add(1); return id == imgs[1].ID }

	disk.base, disk.total = 0, 100<<20 // 3% used: below the threshold
	res, err := s.GC(ctx, GCPolicy{HighPercent: 85, LowPercent: 80}, inUse)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RemovedImages) != 0 || res.RemovedLayers != 1 {
		t.Errorf("below threshold: %+v", res)
	}
	if n := len(layerDirs(t, s)); n != 3 {
		t.Fatalf("%d layers", n)
	}

	// 4 MiB disk, 3 MiB used (75% + base): above 85%; low 60% needs two
	// images gone, but img:b is in use → img:c (least recently used), then img:a.
	disk.base, disk.total = 1<<19, 4<<20
	res, err = s.GC(ctx, GCPolicy{HighPercent: 85, LowPercent: 60}, inUse)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.RemovedImages, []string{imgs[2].ID, imgs[0].ID}) {
		t.Errorf("removed %v, want img:c then img:a", res.RemovedImages)
	}
	if res.UsageBefore <= 85 || res.UsageAfter > 60 || res.FreedBytes < 2<<20 {
		t.Errorf("result %+v", res)
	}
	left := must[[]*Image](t)(s.List(ctx))
	if len(left) != 1 || left[0].ID != imgs[1].ID {
		t.Errorf("left %v", left)
	}
	if n := len(layerDirs(t, s)); n != 1 {
		t.Errorf("%d layers left", n)
	}

	// Still above high, but the only image is in use: nothing removed.
	disk.base = 4 << 20
	res, err = s.GC(ctx, GCPolicy{HighPercent: 85, LowPercent: 80}, inUse)
	if err != nil || len(res.RemovedImages) != 0 {
		t.Errorf("in-use only: %+v %v", res, err)
	}
	if _, err := s.GC(ctx, GCPolicy{HighPercent: 50, LowPercent: 80}, inUse); err == nil {
		t.Error("low > high accepted")
	}
	// MinAge spares fresh images.
	res, err = s.GC(ctx, GCPolicy{HighPercent: 85, LowPercent: 80, MinAge: time.Hour}, func(string) bool { return false })
	if err != nil || len(res.RemovedImages) != 0 {
		t.Errorf("min age: %+v %v", res, err)
	}
}

func TestGarbageCollectorRun(t *testing.T) {
	s := newTestStore(t, func(c *Config) { c.DiskUsage = func(string) (uint64, uint64, error) { return 99, 100, nil } })
	importImage(t, s, busybox(t, testimage.None), "bb:1")
	gc, err := NewGarbageCollector(GCConfig{Policy: GCPolicy{HighPercent: 90, LowPercent: 80}, Interval: 10 * time.Millisecond}, s, func(string) bool { return false }, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- gc.Run(ctx) }()
	deadline := time.After(10 * time.Second)
	for {
		imgs := must[[]*Image](t)(s.List(context.Background()))
		if len(imgs) == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("GC did not remove the image")
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
