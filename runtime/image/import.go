package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxJSON bounds the manifests, configs and indexes read from archives.
const maxJSON = 16 << 20

// ImportFile imports a `docker save` or OCI-layout archive (tar, plain,
// gzip or zstd — detected from its first bytes, not its name). Every image
// in it is added, or none: on error nothing is registered.
func (s *Store) ImportFile(ctx context.Context, file string) ([]*Image, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	imgs, err := s.Import(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	return imgs, nil
}

// Import imports an archive read from r; see ImportFile. A compressed
// archive or a non-seekable r is first spooled, decompressed, to a staging
// file.
func (s *Store) Import(ctx context.Context, r io.Reader) ([]*Image, error) {
	stage, err := s.newStaging()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)

	ra, size, closeTar, err := s.seekableTar(r, stage)
	if err != nil {
		return nil, err
	}
	defer closeTar()
	ti, err := indexTar(ctx, ra, size)
	if err != nil {
		return nil, err
	}
	var ps []*pending
	switch {
	case ti.has("oci-layout") && ti.has("index.json"):
		ps, err = s.ociPending(ti)
	case ti.has("manifest.json"):
		ps, err = s.dockerPending(ti)
	default:
		return nil, fmt.Errorf("%w: neither manifest.json (docker save) nor oci-layout and index.json (OCI layout) found", ErrBadArchive)
	}
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("%w: archive holds no images", ErrBadArchive)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.finish(ctx, ps, "", nil)
}

// seekableTar returns r as a ReaderAt of the uncompressed tar, spooling it
// to stage/archive.tar when it is compressed or not a regular file.
func (s *Store) seekableTar(r io.Reader, stage string) (io.ReaderAt, int64, func(), error) {
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			var head [4]byte
			n, err := f.ReadAt(head[:], 0)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, 0, nil, fmt.Errorf("read archive: %w", err)
			}
			if compressionOf(head[:n]) == "" {
				return f, fi.Size(), func() {}, nil
			}
		}
	}
	plain, closeDec, err := decompress(r)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
	}
	defer closeDec()
	sp, err := os.OpenFile(filepath.Join(stage, "archive.tar"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, 0, nil, err
	}
	n, err := io.Copy(sp, plain)
	if err != nil {
		_ = sp.Close()
		return nil, 0, nil, fmt.Errorf("%w: decompress archive: %w", ErrBadArchive, err)
	}
	return sp, n, func() { _ = sp.Close() }, nil
}

// tarIndex locates the regular files of a tar by name.
type tarIndex struct {
	ra    io.ReaderAt
	files map[string]tarFile
	links map[string]string // symlink name → target (resolved relative to the archive root)
}

type tarFile struct{ off, size int64 }

func cleanArchiveName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// indexTar reads only the headers of the tar in ra, seeking over bodies.
func indexTar(ctx context.Context, ra io.ReaderAt, size int64) (*tarIndex, error) {
	sr := io.NewSectionReader(ra, 0, size)
	tr := tar.NewReader(sr)
	ti := &tarIndex{ra: ra, files: map[string]tarFile{}, links: map[string]string{}}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
		}
		name := cleanArchiveName(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives use TypeRegA
			off, err := sr.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, err
			}
			if off+hdr.Size > size {
				return nil, fmt.Errorf("%w: truncated: %q needs %d bytes past the end", ErrBadArchive, hdr.Name, off+hdr.Size-size)
			}
			ti.files[name] = tarFile{off: off, size: hdr.Size}
		case tar.TypeSymlink, tar.TypeLink:
			target := hdr.Linkname
			if hdr.Typeflag == tar.TypeSymlink && !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			ti.links[name] = cleanArchiveName(target)
		}
	}
	if len(ti.files) == 0 {
		return nil, fmt.Errorf("%w: empty archive", ErrBadArchive)
	}
	return ti, nil
}

func (ti *tarIndex) lookup(name string) (tarFile, bool) {
	name = cleanArchiveName(name)
	for range 8 {
		if f, ok := ti.files[name]; ok {
			return f, true
		}
		t, ok := ti.links[name]
		if !ok {
			return tarFile{}, false
		}
		name = t
	}
	return tarFile{}, false
}

func (ti *tarIndex) has(name string) bool { _, ok := ti.lookup(name); return ok }

func (ti *tarIndex) open(name string) (io.ReadCloser, int64, error) {
	f, ok := ti.lookup(name)
	if !ok {
		return nil, 0, fmt.Errorf("%w: %q missing from archive", ErrBadArchive, name)
	}
	return io.NopCloser(io.NewSectionReader(ti.ra, f.off, f.size)), f.size, nil
}

func (ti *tarIndex) read(name string) ([]byte, error) {
	f, ok := ti.lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q missing from archive", ErrBadArchive, name)
	}
	if f.size > maxJSON {
		return nil, fmt.Errorf("%w: %q is %d bytes, more than a manifest or config can be", ErrBadArchive, name, f.size)
	}
	b := make([]byte, f.size)
	if _, err := ti.ra.ReadAt(b, f.off); err != nil && !(errors.Is(err, io.EOF) && int64(len(b)) == f.size) {
		return nil, fmt.Errorf("%w: read %q: %w", ErrBadArchive, name, err)
	}
	return b, nil
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// readBlob reads and verifies an OCI-layout blob.
func (ti *tarIndex) readBlob(h v1.Hash, what string) ([]byte, error) {
	b, err := ti.read(blobPath(h))
	if err != nil {
		return nil, err
	}
	if err := verifyBlob(b, h, what); err != nil {
		return nil, err
	}
	return b, nil
}

var blobNameRE = regexp.MustCompile(`(?:^|/)(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?$`)

// dockerPending reads a `docker save` archive.
func (s *Store) dockerPending(ti *tarIndex) ([]*pending, error) {
	mb, err := ti.read("manifest.json")
	if err != nil {
		return nil, err
	}
	var entries []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(mb, &entries); err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %w", ErrBadArchive, err)
	}
	var ps []*pending
	for _, e := range entries {
		cfg, err := ti.read(e.Config)
		if err != nil {
			return nil, err
		}
		if m := blobNameRE.FindStringSubmatch(e.Config); m != nil {
			if err := verifyBlob(cfg, v1.Hash{Algorithm: "sha256", Hex: m[1]}, "config "+e.Config); err != nil {
				return nil, err
			}
		}
		digests := make([]*v1.Hash, len(e.Layers))
		sizes := make([]int64, len(e.Layers))
		for i, l := range e.Layers {
			f, ok := ti.lookup(l)
			if !ok {
				return nil, fmt.Errorf("%w: layer %q missing from archive", ErrBadArchive, l)
			}
			sizes[i] = f.size
			if strings.HasPrefix(cleanArchiveName(l), "blobs/sha256/") {
				if m := blobNameRE.FindStringSubmatch(l); m != nil {
					digests[i] = &v1.Hash{Algorithm: "sha256", Hex: m[1]}
				}
			}
		}
		p, err := s.newPending(cfg, digests, sizes, func(i int) (io.ReadCloser, error) {
			rc, _, err := ti.open(e.Layers[i])
			return rc, err
		})
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", e.Config, err)
		}
		for _, t := range e.RepoTags {
			n, err := NormalizeReference(t)
			if err != nil {
				return nil, fmt.Errorf("%w: repo tag %q: %w", ErrBadArchive, t, err)
			}
			p.img.RepoTags = append(p.img.RepoTags, n)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// ociPending reads an OCI image layout archive.
func (s *Store) ociPending(ti *tarIndex) ([]*pending, error) {
	ib, err := ti.read("index.json")
	if err != nil {
		return nil, err
	}
	im, err := v1.ParseIndexManifest(strings.NewReader(string(ib)))
	if err != nil {
		return nil, fmt.Errorf("%w: index.json: %w", ErrBadArchive, err)
	}
	var ps []*pending
	for _, desc := range im.Manifests {
		p, err := s.ociDescriptor(ti, desc, 0)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
		if ref := ociName(desc.Annotations); ref != "" {
			n, err := parseReference(ref)
			if err != nil {
				return nil, fmt.Errorf("%w: image name %q: %w", ErrBadArchive, ref, err)
			}
			n.Digest = ""
			if n.Tag != "" {
				p.img.RepoTags = append(p.img.RepoTags, n.String())
			}
			p.img.RepoDigests = append(p.img.RepoDigests, n.Name()+"@"+desc.Digest.String())
			if p.img.ManifestDigest != desc.Digest.String() {
				p.img.RepoDigests = append(p.img.RepoDigests, n.Name()+"@"+p.img.ManifestDigest)
			}
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// ociName is the image name recorded in an index.json entry, if it is a
// full reference (a bare "latest" ref.name is a tag without a name).
func ociName(ann map[string]string) string {
	if n := ann["io.containerd.image.name"]; n != "" {
		return n
	}
	n := ann["org.opencontainers.image.ref.name"]
	if strings.ContainsAny(n, "/:") {
		return n
	}
	return ""
}

func (s *Store) ociDescriptor(ti *tarIndex, desc v1.Descriptor, depth int) (*pending, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%w: indexes nested too deep", ErrBadArchive)
	}
	raw, err := ti.readBlob(desc.Digest, "manifest")
	if err != nil {
		return nil, err
	}
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(strings.NewReader(string(raw)))
		if err != nil {
			return nil, fmt.Errorf("%w: image index: %w", ErrBadArchive, err)
		}
		child, err := s.pickPlatform(idx)
		if err != nil {
			return nil, err
		}
		p, err := s.ociDescriptor(ti, child, depth+1)
		if err != nil {
			return nil, err
		}
		p.blobs[desc.Digest.String()] = raw
		return p, nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrBadArchive, err)
	}
	cfg, err := ti.readBlob(m.Config.Digest, "config")
	if err != nil {
		return nil, err
	}
	digests := make([]*v1.Hash, len(m.Layers))
	sizes := make([]int64, len(m.Layers))
	for i, l := range m.Layers {
		d := l.Digest
		digests[i], sizes[i] = &d, l.Size
	}
	p, err := s.newPending(cfg, digests, sizes, func(i int) (io.ReadCloser, error) {
		rc, _, err := ti.open(blobPath(m.Layers[i].Digest))
		return rc, err
	})
	if err != nil {
		return nil, err
	}
	p.img.ManifestDigest = desc.Digest.String()
	p.blobs[desc.Digest.String()] = raw
	return p, nil
}
