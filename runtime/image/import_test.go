package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

func TestImportFormats(t *testing.T) {
	ctx := context.Background()
	for _, format := range []string{"docker", "oci"} {
		for _, c := range []testimage.Compression{testimage.None, testimage.Gzip, testimage.Zstd} {
			t.Run(fmt.Sprintf("%s-%s", format, c), func(t *testing.T) {
				s := newTestStore(t)
				img := busybox(t, testimage.Gzip)
				file := writeFile(t, func(w io.Writer) error {
					if format == "docker" {
						return testimage.WriteDockerSave(w, c, testimage.Tagged{Image: img, Tags: []string{"busybox:stable"}})
					}
					return testimage.WriteOCILayout(w, c, testimage.OCIEntry{Name: "docker.io/library/busybox:stable", Image: img})
				})
				got, err := s.ImportFile(ctx, file)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 {
					t.Fatalf("imported %d images", len(got))
				}
				wantID := must[v1.Hash](t)(img.ConfigName()).String()
				if got[0].ID != wantID {
					t.Errorf("ID %s, want %s", got[0].ID, wantID)
				}
				for _, ref := range []string{"busybox:stable", "docker.io/library/busybox:stable", wantID, strings.TrimPrefix(wantID, "sha256:")[:12]} {
					r, err := s.Resolve(ctx, ref)
					if err != nil {
						t.Fatalf("resolve %q: %v", ref, err)
					}
					if r.ID != wantID {
						t.Errorf("resolve %q: %s", ref, r.ID)
					}
				}
				if format == "oci" {
					md := must[v1.Hash](t)(img.Digest()).String()
					r, err := s.Resolve(ctx, "busybox@"+md)
					if err != nil {
						t.Fatalf("resolve by digest: %v", err)
					}
					if r.ManifestDigest != md {
						t.Errorf("manifest digest %s, want %s", r.ManifestDigest, md)
					}
				}
				r := must[*Image](t)(s.Resolve(ctx, "busybox:stable"))
				if !slices.Equal(r.Config.Cmd, []string{"sh"}) || r.Config.WorkingDir != "/" || len(r.Config.Env) != 1 {
					t.Errorf("config %+v", r.Config)
				}
				if len(r.LayerDirs) != 1 {
					t.Fatalf("layer dirs %v", r.LayerDirs)
				}
				bb := readAll(t, filepath.Join(r.LayerDirs[0], "bin/busybox"))
				if !slices.Equal(bb, readAll(t, testimage.BusyboxPath)) {
					t.Error("bin/busybox differs from the original")
				}
				if l, err := os.Readlink(filepath.Join(r.LayerDirs[0], "bin/sh")); err != nil || l != "busybox" {
					t.Errorf("bin/sh link %q %v", l, err)
				}
				if r.Size < int64(len(bb)) {
					t.Errorf("size %d < busybox %d", r.Size, len(bb))
				}
				if ok, err := s.Has(ctx, "busybox:stable"); !ok || err != nil {
					t.Errorf("Has = %v %v", ok, err)
				}
				if ok, err := s.Has(ctx, "busybox:other"); ok || err != nil {
					t.Errorf("Has(other tag) = %v %v", ok, err)
				}
			})
		}
	}
}

// twoImages are a base image and one built on it, sharing the first layer.
func twoImages(t *testing.T) (base, top v1.Image, baseLayer v1.Layer) {
	t.Helper()
	es, err := testimage.BusyboxEntries()
	if err != nil {
		t.Fatal(err)
	}
	baseLayer = must[v1.Layer](t)(testimage.Layer(es, testimage.Gzip))
	extra := must[v1.Layer](t)(testimage.Layer([]testimage.Entry{testimage.Dir("app"), testimage.File("app/hello", "hi\n")}, testimage.Zstd))
	base = must[v1.Image](t)(testimage.Image(testimage.Platform(), testimage.BusyboxConfig(), baseLayer))
	top = must[v1.Image](t)(testimage.Image(testimage.Platform(), v1.Config{Entrypoint: []string{"/bin/cat"}, Cmd: []string{"/app/hello"}, User: "65534", ExposedPorts: map[string]struct{}{"80/tcp": {}}}, baseLayer, extra))
	return base, top, baseLayer
}

func TestLayerSharedAndUnpackedOnce(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	base, top, _ := twoImages(t)
	f1 := writeFile(t, func(w io.Writer) error {
		return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: base, Tags: []string{"base:1"}})
	})
	f2 := writeFile(t, func(w io.Writer) error {
		return testimage.WriteOCILayout(w, testimage.Gzip, testimage.OCIEntry{Name: "example.com/app:2", Image: top})
	})
	b := must[[]*Image](t)(s.ImportFile(ctx, f1))[0]
	st1, err := os.Stat(b.LayerDirs[0])
	if err != nil {
		t.Fatal(err)
	}
	a := must[[]*Image](t)(s.ImportFile(ctx, f2))[0]
	if len(a.LayerDirs) != 2 || a.LayerDirs[0] != b.LayerDirs[0] {
		t.Fatalf("layer dirs %v vs %v", a.LayerDirs, b.LayerDirs)
	}
	st2, err := os.Stat(a.LayerDirs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("shared layer was unpacked again")
	}
	if n := len(layerDirs(t, s)); n != 2 {
		t.Errorf("%d layer dirs, want 2", n)
	}
	if got := readAll(t, filepath.Join(a.LayerDirs[1], "app/hello")); string(got) != "hi\n" {
		t.Errorf("app/hello = %q", got)
	}
	if a.Config.User != "65534" || !slices.Equal(a.Config.Entrypoint, []string{"/bin/cat"}) {
		t.Errorf("config %+v", a.Config)
	}
	if _, ok := a.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("exposed ports %v", a.Config.ExposedPorts)
	}
	// Re-importing the same archive is idempotent.
	again := must[[]*Image](t)(s.ImportFile(ctx, f2))[0]
	if again.ID != a.ID || len(layerDirs(t, s)) != 2 {
		t.Error("re-import changed the store")
	}
	imgs := must[[]*Image](t)(s.List(ctx))
	if len(imgs) != 2 || imgs[0].RepoTags[0] != "docker.io/library/base:1" || imgs[1].RepoTags[0] != "example.com/app:2" {
		t.Errorf("list %+v", imgs)
	}
}

func TestImportMultipleAndMultiArch(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	s := newTestStore(t)
	here := busybox(t, testimage.Gzip)
	other := must[v1.Image](t)(testimage.BusyboxFor(testimage.OtherPlatform(), testimage.Zstd))
	idx := must[v1.ImageIndex](t)(testimage.MultiArch(other, here))
	_, top, _ := twoImages(t)
	file := writeFile(t, func(w io.Writer) error {
		return testimage.WriteOCILayout(w, testimage.Zstd,
			testimage.OCIEntry{Name: "docker.io/library/busybox:multi", Index: idx},
			testimage.OCIEntry{Name: "example.com/app:v1", Image: top})
	})
	got := must[[]*Image](t)(s.ImportFile(ctx, file))
	if len(got) != 2 {
		t.Fatalf("imported %d", len(got))
	}
	r := must[*Image](t)(s.Resolve(ctx, "busybox:multi"))
	if r.ID != must[v1.Hash](t)(here.ConfigName()).String() {
		t.Errorf("multi-arch import picked %s (%s)", r.ID, r.Platform)
	}
	idxDigest := must[v1.Hash](t)(idx.Digest()).String()
	if _, err := s.Resolve(ctx, "busybox@"+idxDigest); err != nil {
		t.Errorf("resolve by index digest: %v", err)
	}
}

func TestImportFromPipe(t *testing.T) {
	ctx := context.Background()
	for _, c := range []testimage.Compression{testimage.None, testimage.Zstd} {
		t.Run(c.String(), func(t *testing.T) {
			s := newTestStore(t)
			pr, pw, err := os.Pipe() // an *os.File that cannot seek
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			img := busybox(t, testimage.None)
			werr := make(chan error, 1)
			go func() {
				werr <- testimage.WriteOCILayout(pw, c, testimage.OCIEntry{Name: "piped:1", Image: img})
				pw.Close()
			}()
			if _, err := s.Import(ctx, pr); err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if ok, _ := s.Has(ctx, "piped:1"); !ok {
				t.Error("piped image missing")
			}
		})
	}
}
