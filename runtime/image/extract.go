package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattrPrefix = "SCHILY.xattr."
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// compressionOf names the compression of a stream starting with head.
func compressionOf(head []byte) string {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return "gzip"
	case bytes.HasPrefix(head, zstdMagic):
		return "zstd"
	}
	return ""
}

// decompress sniffs r's magic bytes and returns a reader of the
// decompressed stream (r itself, buffered, when it is not gzip or zstd).
func decompress(r io.Reader) (io.Reader, func(), error) {
	plain, _, closeFn, err := decompressKind(r)
	return plain, closeFn, err
}

// decompressKind is decompress that also names the compression ("" for none).
func decompressKind(r io.Reader) (io.Reader, string, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", nil, err
	}
	kind := compressionOf(head)
	switch kind {
	case "gzip":
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, kind, nil, fmt.Errorf("gzip: %w", err)
		}
		zr.Multistream(true)
		return zr, kind, func() { _ = zr.Close() }, nil
	case "zstd":
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, kind, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, kind, zr.Close, nil
	}
	return br, kind, func() {}, nil
}

// extractor unpacks one layer tar into dir, converting OCI whiteouts to
// overlayfs ones and refusing entries that would land outside dir.
type extractor struct {
	root   string          // absolute path of the layer root
	dirs   map[string]bool // relative paths known to be real directories
	times  []dirTime       // directory mtimes, applied last
	isRoot bool            // running as root: chown, device nodes
	size   int64           // bytes of regular file content
	log    *slog.Logger
	buf    []byte
}

type dirTime struct {
	path  string
	mtime time.Time
}

func newExtractor(root string, log *slog.Logger) *extractor {
	return &extractor{root: root, dirs: map[string]bool{".": true}, isRoot: os.Geteuid() == 0, log: log, buf: make([]byte, 256<<10)}
}

// cleanEntryPath turns a tar entry name into a clean path relative to the
// layer root, refusing names that climb out of it.
func cleanEntryPath(name string) (string, error) {
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: %q escapes the layer root", ErrUnsafePath, name)
	}
	p = strings.TrimLeft(p, "/")
	if p == "" {
		p = "."
	}
	return p, nil
}

func (e *extractor) abs(rel string) string { return filepath.Join(e.root, filepath.FromSlash(rel)) }

// ensureDir makes rel and its parents exist as real directories, refusing
// to go through symlinks or non-directories.
func (e *extractor) ensureDir(rel string) error {
	if e.dirs[rel] {
		return nil
	}
	if parent := path.Dir(rel); parent != rel {
		if err := e.ensureDir(parent); err != nil {
			return err
		}
	}
	p := e.abs(rel)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", rel, err)
		}
	case err != nil:
		return err
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%w: %q is a symlink on the path of another entry", ErrUnsafePath, rel)
	case !fi.IsDir():
		return fmt.Errorf("%w: %q is not a directory but has entries below it", ErrUnsafePath, rel)
	}
	e.dirs[rel] = true
	return nil
}

// extract reads the whole tar stream r into the layer root.
func (e *extractor) extract(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: read layer tar: %w", ErrBadArchive, err)
		}
		if err := e.entry(tr, hdr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	for i := len(e.times) - 1; i >= 0; i-- {
		t := e.times[i]
		if err := lutimes(t.path, t.mtime); err != nil {
			return err
		}
	}
	return nil
}

func (e *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	rel, err := cleanEntryPath(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil // the layer root itself: keep the store's mode
	}
	dir, base := path.Dir(rel), path.Base(rel)
	if err := e.ensureDir(dir); err != nil {
		return err
	}
	if base == opaqueMarker {
		if err := unix.Lsetxattr(e.abs(dir), opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("mark %s opaque: %w", dir, err)
		}
		return nil
	}
	p := e.abs(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		target := strings.TrimPrefix(base, whiteoutPrefix)
		if target == "" || target == "." || target == ".." || strings.HasPrefix(target, whiteoutPrefix) {
			return fmt.Errorf("%w: bad whiteout %q", ErrUnsafePath, hdr.Name)
		}
		tp := e.abs(path.Join(dir, target))
		if err := e.removeExisting(path.Join(dir, target), false); err != nil {
			return err
		}
		if err := unix.Mknod(tp, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("create whiteout for %s: %w", path.Join(dir, target), err)
		}
		return nil
	}

	if err := e.removeExisting(rel, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		e.dirs[rel] = true
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives use TypeRegA
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		n, err := io.CopyBuffer(f, tr, e.buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		e.size += n
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := cleanEntryPath(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := e.ensureDir(path.Dir(target)); err != nil {
			return err
		}
		fi, err := os.Lstat(e.abs(target))
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		if fi.IsDir() {
			return fmt.Errorf("%w: hard link to directory %q", ErrUnsafePath, hdr.Linkname)
		}
		if err := os.Link(e.abs(target), p); err != nil {
			return err
		}
		return nil // a hard link shares its target's metadata
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		if mode != unix.S_IFIFO && !e.isRoot {
			e.log.Debug("skipping device node, not root", "path", rel)
			return nil
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknod(p, mode|uint32(hdr.Mode&0o7777), int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
	default:
		e.log.Debug("skipping unsupported tar entry", "path", rel, "type", string(hdr.Typeflag))
		return nil
	}
	return e.setMeta(p, rel, hdr)
}

// removeExisting clears whatever is at rel before an entry replaces it
// (later entries win), keeping a directory that is replaced by a directory.
func (e *extractor) removeExisting(rel string, keepDir bool) error {
	p := e.abs(rel)
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if keepDir {
			return nil
		}
		clear(e.dirs)
		e.dirs["."] = true
		return os.RemoveAll(p)
	}
	return os.Remove(p)
}

func (e *extractor) setMeta(p, rel string, hdr *tar.Header) error {
	if e.isRoot {
		if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	for k, v := range hdr.PAXRecords {
		if !strings.HasPrefix(k, paxXattrPrefix) {
			continue
		}
		name := strings.TrimPrefix(k, paxXattrPrefix)
		if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
				e.log.Debug("cannot set xattr", "path", rel, "xattr", name, "err", err)
				continue
			}
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return lutimes(p, hdr.ModTime)
	}
	// After chown, which clears set-id bits.
	if err := unix.Fchmodat(unix.AT_FDCWD, p, uint32(hdr.Mode&0o7777), 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if hdr.Typeflag == tar.TypeDir {
		e.times = append(e.times, dirTime{p, hdr.ModTime})
		return nil
	}
	return lutimes(p, hdr.ModTime)
}

func lutimes(p string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", p, err)
	}
	return nil
}
