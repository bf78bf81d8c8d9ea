package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

// tamper flips a byte in the middle of the body of the first tar entry of
// the (uncompressed) archive file whose name satisfies match.
func tamper(t *testing.T, file string, match func(name string) bool) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no entry to tamper with: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg || !match(hdr.Name) || hdr.Size < 2048 {
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			t.Fatal(err)
		}
		pos := off + hdr.Size/2 // inside the busybox binary
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, pos); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, pos); err != nil {
			t.Fatal(err)
		}
		return
	}
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func layerImage(t *testing.T, c testimage.Compression, entries ...testimage.Entry) v1.Image {
	t.Helper()
	l := must[v1.Layer](t)(testimage.Layer(entries, c))
	return must[v1.Image](t)(testimage.Image(testimage.Platform(), v1.Config{}, l))
}

func TestImportBadInput(t *testing.T) {
	ctx := context.Background()
	bb := func(t *testing.T) v1.Image { return busybox(t, testimage.None) }
	dockerSave := func(t *testing.T, img v1.Image) []byte {
		var buf bytes.Buffer
		if err := testimage.WriteDockerSave(&buf, testimage.None, testimage.Tagged{Image: img, Tags: []string{"bad:1"}}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	escapeDir := filepath.Join(os.TempDir(), "orchtest-image-escape")
	t.Cleanup(func() { os.RemoveAll(escapeDir) })

	cases := []struct {
		name  string
		file  func(t *testing.T) string
		want  error
		check func(t *testing.T)
	}{
		{"random bytes", func(t *testing.T) string {
			return writeFile(t, func(w io.Writer) error { _, err := w.Write(randomBytes(10000)); return err })
		}, ErrBadArchive, nil},
		{"empty file", func(t *testing.T) string {
			return writeFile(t, func(w io.Writer) error { return nil })
		}, ErrBadArchive, nil},
		{"gzip of garbage", func(t *testing.T) string {
			return writeFile(t, func(w io.Writer) error {
				b, err := testimage.Compress(randomBytes(10000), testimage.Gzip)
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			})
		}, ErrBadArchive, nil},
		{"truncated tar", func(t *testing.T) string {
			b := dockerSave(t, bb(t))
			return writeFile(t, func(w io.Writer) error { _, err := w.Write(b[:len(b)/2]); return err })
		}, ErrBadArchive, nil},
		{"truncated gzip", func(t *testing.T) string {
			b := must[[]byte](t)(testimage.Compress(dockerSave(t, bb(t)), testimage.Gzip))
			return writeFile(t, func(w io.Writer) error { _, err := w.Write(b[:len(b)-100]); return err })
		}, ErrBadArchive, nil},
		{"truncated zstd", func(t *testing.T) string {
			b := must[[]byte](t)(testimage.Compress(dockerSave(t, bb(t)), testimage.Zstd))
			return writeFile(t, func(w io.Writer) error { _, err := w.Write(b[:len(b)/2]); return err })
		}, ErrBadArchive, nil},
		{"tar without manifest", func(t *testing.T) string {
			return writeFile(t, func(w io.Writer) error {
				b, err := testimage.Tar([]testimage.Entry{testimage.File("hello", "x")})
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			})
		}, ErrBadArchive, nil},
		{"docker-save layer tampered (diffID)", func(t *testing.T) string {
			f := writeFile(t, func(w io.Writer) error { _, err := w.Write(dockerSave(t, bb(t))); return err })
			tamper(t, f, func(n string) bool { return strings.HasSuffix(n, "layer.tar") })
			return f
		}, ErrDigestMismatch, nil},
		{"OCI layer blob tampered", func(t *testing.T) string {
			f := writeFile(t, func(w io.Writer) error {
				return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Name: "bad:1", Image: bb(t)})
			})
			tamper(t, f, func(n string) bool { return strings.HasPrefix(n, "blobs/") && strings.Count(n, "/") == 2 })
			return f
		}, ErrDigestMismatch, nil},
		{"OCI index only for another architecture", func(t *testing.T) string {
			other := must[v1.Image](t)(testimage.BusyboxFor(testimage.OtherPlatform(), testimage.Gzip))
			idx := must[v1.ImageIndex](t)(testimage.MultiArch(other))
			return writeFile(t, func(w io.Writer) error {
				return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Name: "bad:1", Index: idx})
			})
		}, ErrPlatform, nil},
		{"image config for another architecture", func(t *testing.T) string {
			other := must[v1.Image](t)(testimage.BusyboxFor(testimage.OtherPlatform(), testimage.Gzip))
			return writeFile(t, func(w io.Writer) error {
				return testimage.WriteDockerSave(w, testimage.Zstd, testimage.Tagged{Image: other, Tags: []string{"bad:1"}})
			})
		}, ErrPlatform, nil},
		{"dot-dot path", func(t *testing.T) string {
			img := layerImage(t, testimage.Gzip, testimage.Dir("a"), testimage.File("a/../../orchtest-evil", "x"))
			return writeFile(t, func(w io.Writer) error {
				return testimage.WriteDockerSave(w, testimage.None, testimage.Tagged{Image: img})
			})
		}, ErrUnsafePath, nil},
		{"write through symlink", func(t *testing.T) string {
			img := layerImage(t, testimage.None, testimage.Symlink("link", escapeDir), testimage.File("link/pwned", "x"))
			if err := os.MkdirAll(escapeDir, 0o755); err != nil {
				t.Fatal(err)
			}
			return writeFile(t, func(w io.Writer) error {
				return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Image: img})
			})
		}, ErrUnsafePath, func(t *testing.T) {
			if _, err := os.Lstat(filepath.Join(escapeDir, "pwned")); !os.IsNotExist(err) {
				t.Errorf("file written through symlink: %v", err)
			}
		}},
		{"hard link out of the layer", func(t *testing.T) string {
			img := layerImage(t, testimage.None, testimage.Hardlink("passwd", "../../../../etc/passwd"))
			return writeFile(t, func(w io.Writer) error {
				return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Image: img})
			})
		}, ErrUnsafePath, nil},
		{"second image bad, first not kept", func(t *testing.T) string {
			bad := layerImage(t, testimage.None, testimage.File("../x", "x"))
			return writeFile(t, func(w io.Writer) error {
				return testimage.WriteDockerSave(w, testimage.Gzip,
					testimage.Tagged{Image: bb(t), Tags: []string{"good:1"}}, testimage.Tagged{Image: bad, Tags: []string{"bad:1"}})
			})
		}, ErrUnsafePath, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t)
			_, err := s.ImportFile(ctx, tc.file(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("error: %v", err)
			assertEmpty(t, s)
			if tc.check != nil {
				tc.check(t)
			}
			// The store still works afterwards.
			good := writeFile(t, func(w io.Writer) error { _, err := w.Write(dockerSave(t, bb(t))); return err })
			if _, err := s.ImportFile(ctx, good); err != nil {
				t.Fatalf("import after failure: %v", err)
			}
		})
	}
}

func TestCorruptIndexIsAnError(t *testing.T) {
	s := newTestStore(t)
	if err := os.WriteFile(s.path("index.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(context.Background()); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("got %v", err)
	}
	os.Remove(s.path("index.json"))
}

func TestStaleStagingRemovedAtOpen(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s := must[*Store](t)(Open(Config{Root: root}, testLogger(t)))
	// A staging dir of a process that no longer exists (pid 0 never is one
	// we can signal as ours; use an impossible pid) and one of a live process.
	dead := s.path("tmp", "999999999.abcd")
	live := s.path("tmp", "1.abcd") // pid 1 is alive
	for _, d := range []string{dead, live} {
		if err := os.MkdirAll(filepath.Join(d, "diff"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(Config{Root: root}, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("dead process's staging kept: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live process's staging removed: %v", err)
	}
	os.RemoveAll(live)
}
