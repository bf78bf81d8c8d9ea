// Package testimage builds container images for tests from Debian's
// busybox-static (/bin/busybox) and generated content: single- and
// multi-layer images with OCI whiteouts and opaque directories, multi-arch
// indexes, and the archive formats an image store must import — `docker
// save` tarballs and OCI-layout tarballs, plain, gzip or zstd.
//
// Images are go-containerregistry v1.Image values, so tests can also push them
// to an in-process registry (pkg/registry) with remote.Write.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// BusyboxPath is where Debian's busybox-static package installs busybox.
const BusyboxPath = "/bin/busybox"

// Compression selects how layer blobs or whole archives are compressed.
type Compression int

// Compression kinds.
const (
	None Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// Entry is one tar entry of a layer. Type defaults to a regular file
// (tar.TypeReg), Mode to 0644 for files and 0755 for directories.
type Entry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Body     []byte
	Linkname string
	Xattrs   map[string]string
	Devmajor int64
	Devminor int64
}

// Dir, File, Symlink, Whiteout and Opaque are shorthands for common entries.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755} }

// File is a regular file with the given content and mode 0644.
func File(name, body string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Body: []byte(body)}
}

// Symlink is a symbolic link name → target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Hardlink is a hard link name → target (a path inside the layer).
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Linkname: target}
}

// Whiteout is the OCI whiteout entry deleting dir/name from lower layers.
func Whiteout(dir, name string) Entry {
	p := ".wh." + name
	if dir != "" {
		p = dir + "/" + p
	}
	return Entry{Name: p, Type: tar.TypeReg, Mode: 0o644}
}

// Opaque is the OCI opaque-directory marker for dir.
func Opaque(dir string) Entry {
	return Entry{Name: dir + "/.wh..wh..opq", Type: tar.TypeReg, Mode: 0o644}
}

// fixedTime keeps generated archives reproducible.
var fixedTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Tar writes entries to an uncompressed tar archive.
func Tar(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{
			Typeflag: typ, Name: e.Name, Mode: mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Linkname, ModTime: fixedTime, Devmajor: e.Devmajor, Devminor: e.Devminor,
			Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		if len(e.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %q: %w", e.Name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				return nil, fmt.Errorf("tar body %q: %w", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// BusyboxApplets are the applet symlinks created next to bin/busybox.
var BusyboxApplets = []string{"sh", "ls", "cat", "echo", "sleep", "true", "false", "env", "id",
	"mkdir", "rm", "touch", "test", "wget", "nc", "ps", "hostname", "mount", "stat", "readlink"}

// BusyboxEntries is a root filesystem with bin/busybox (from BusyboxPath),
// applet symlinks in bin/, and etc/, tmp/, proc/, sys/, dev/, root/.
func BusyboxEntries() ([]Entry, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox (apt-get install busybox-static): %w", err)
	}
	es := []Entry{
		Dir("bin"),
		{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Body: bin},
	}
	for _, a := range BusyboxApplets {
		es = append(es, Symlink("bin/"+a, "busybox"))
	}
	es = append(es,
		Dir("etc"),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
		File("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
		Entry{Name: "tmp", Type: tar.TypeDir, Mode: 0o1777},
		Dir("proc"), Dir("sys"), Dir("dev"), Entry{Name: "root", Type: tar.TypeDir, Mode: 0o700},
	)
	return es, nil
}

// RandomEntries is one directory holding files of pseudo-random
// (incompressible) content totalling size bytes, in files of at most 16 MiB,
// deterministic for a seed.
func RandomEntries(dir string, size int64, seed uint64) []Entry {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	es := []Entry{Dir(dir)}
	const chunk = 16 << 20
	for i := 0; size > 0; i++ {
		n := min(size, chunk)
		b := make([]byte, n)
		for j := 0; j+8 <= len(b); j += 8 {
			v := r.Uint64()
			for k := range 8 {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		es = append(es, Entry{Name: fmt.Sprintf("%s/blob%03d", dir, i), Mode: 0o644, Body: b})
		size -= n
	}
	return es
}

// blobLayer is a v1.Layer over an in-memory (possibly compressed) blob.
type blobLayer struct {
	blob, raw []byte
	digest    v1.Hash
	diffID    v1.Hash
	mt        types.MediaType
}

func (l *blobLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.raw)), nil
}
func (l *blobLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// LayerFromTar wraps an uncompressed tar as a layer whose blob is
// compressed with c (media types: OCI tar, tar+gzip, tar+zstd).
func LayerFromTar(raw []byte, c Compression) (v1.Layer, error) {
	blob, err := Compress(raw, c)
	if err != nil {
		return nil, err
	}
	mt := map[Compression]types.MediaType{
		None: types.OCIUncompressedLayer, Gzip: types.OCILayer, Zstd: types.OCILayerZStd,
	}[c]
	return &blobLayer{blob: blob, raw: raw, digest: sha(blob), diffID: sha(raw), mt: mt}, nil
}

// Layer builds a layer from entries, compressed with c.
func Layer(entries []Entry, c Compression) (v1.Layer, error) {
	raw, err := Tar(entries)
	if err != nil {
		return nil, err
	}
	return LayerFromTar(raw, c)
}

// Platform is this machine's platform (linux/GOARCH).
func Platform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

// OtherPlatform is a Linux platform that is not this machine's.
func OtherPlatform() v1.Platform {
	if runtime.GOARCH == "s390x" {
		return v1.Platform{OS: "linux", Architecture: "ppc64le"}
	}
	return v1.Platform{OS: "linux", Architecture: "s390x"}
}

// Image assembles an image for platform p with cfg and the layers, lowest
// first. Created is fixed so images are reproducible.
func Image(p v1.Platform, cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config = cfg
	cf.Created = v1.Time{Time: fixedTime}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1), nil
}

// BusyboxConfig is the config of Busybox images.
func BusyboxConfig() v1.Config {
	return v1.Config{
		Cmd:        []string{"sh"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/",
	}
}

// Busybox is a one-layer busybox image for this platform.
func Busybox(c Compression) (v1.Image, error) {
	return BusyboxFor(Platform(), c)
}

// BusyboxFor is a one-layer busybox image labelled with platform p (the
// binary is still this machine's).
func BusyboxFor(p v1.Platform, c Compression) (v1.Image, error) {
	es, err := BusyboxEntries()
	if err != nil {
		return nil, err
	}
	l, err := Layer(es, c)
	if err != nil {
		return nil, err
	}
	return Image(p, BusyboxConfig(), l)
}

// MultiArch is an OCI index of images, each tagged with its config's platform.
func MultiArch(imgs ...v1.Image) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex), nil
}

// Compress compresses data with c.
func Compress(data []byte, c Compression) ([]byte, error) {
	var buf bytes.Buffer
	w, err := CompressWriter(&buf, c)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// CompressWriter returns a writer compressing into w with c; Close flushes
// it (and does not close w).
func CompressWriter(w io.Writer, c Compression) (io.WriteCloser, error) {
	switch c {
	case None:
		return nopWriteCloser{w}, nil
	case Gzip:
		return gzip.NewWriterLevel(w, gzip.BestSpeed)
	case Zstd:
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	}
	return nil, errors.New("testimage: unknown compression")
}
