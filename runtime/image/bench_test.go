package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

// bigImage is busybox plus ~100 MB of incompressible files in a second
// layer, its blobs compressed with c.
func bigImage(b *testing.B, c testimage.Compression) v1.Image {
	b.Helper()
	es, err := testimage.BusyboxEntries()
	if err != nil {
		b.Fatal(err)
	}
	l0 := must[v1.Layer](b)(testimage.Layer(es, c))
	l1 := must[v1.Layer](b)(testimage.Layer(testimage.RandomEntries("data", 100<<20, 42), c))
	return must[v1.Image](b)(testimage.Image(testimage.Platform(), testimage.BusyboxConfig(), l0, l1))
}

// freshStore opens an empty store; its removal is not timed.
func freshStore(b *testing.B, dir string, i int) *Store {
	b.Helper()
	s, err := Open(Config{Root: filepath.Join(dir, fmt.Sprint(i))}, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkImport100MB(b *testing.B) {
	for _, tc := range []struct {
		name   string
		format string
		c      testimage.Compression
	}{
		{"docker-save-tar", "docker", testimage.None},
		{"oci-gzip-layers", "oci", testimage.Gzip},
		{"oci-tar.zst", "oci-zst", testimage.None},
	} {
		b.Run(tc.name, func(b *testing.B) {
			img := bigImage(b, tc.c)
			file := writeFile(b, func(w io.Writer) error {
				switch tc.format {
				case "docker":
					return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: img, Tags: []string{"big:1"}})
				case "oci-zst":
					return testimage.WriteOCILayout(w, testimage.Zstd, testimage.OCIEntry{Name: "big:1", Image: img})
				}
				return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Name: "big:1", Image: img})
			})
			fi, err := os.Stat(file)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(fi.Size())
			dir := b.TempDir()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s := freshStore(b, dir, i)
				if _, err := s.ImportFile(context.Background(), file); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(s.Root()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkPull100MB(b *testing.B) {
	img := bigImage(b, testimage.Gzip)
	host := newRegistry(b, nil)
	push(b, host+"/bench/big:1", img)
	var size int64
	for _, l := range must[[]v1.Layer](b)(img.Layers()) {
		size += must[int64](b)(l.Size())
	}
	b.SetBytes(size)
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := freshStore(b, dir, i)
		if _, err := s.Pull(context.Background(), host+"/bench/big:1", PullOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(s.Root()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkResolve is the per-container-start cost of looking an image up.
func BenchmarkResolve(b *testing.B) {
	s := freshStore(b, b.TempDir(), 0)
	f := writeFile(b, func(w io.Writer) error {
		return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: busybox(b, testimage.None), Tags: []string{"bb:1"}})
	})
	if _, err := s.ImportFile(context.Background(), f); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Resolve(context.Background(), "bb:1"); err != nil {
			b.Fatal(err)
		}
	}
}
