package testimage

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarWriter adds whole files to a tar stream, each name at most once.
type tarWriter struct {
	tw   *tar.Writer
	seen map[string]bool
}

func newTarWriter(w io.Writer) *tarWriter {
	return &tarWriter{tw: tar.NewWriter(w), seen: map[string]bool{}}
}

func (t *tarWriter) file(name string, b []byte) error {
	return t.stream(name, int64(len(b)), func(w io.Writer) error { _, err := w.Write(b); return err })
}

func (t *tarWriter) stream(name string, size int64, body func(io.Writer) error) error {
	if t.seen[name] {
		return nil
	}
	t.seen[name] = true
	for _, d := range parents(name) {
		if t.seen[d+"/"] {
			continue
		}
		t.seen[d+"/"] = true
		if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: fixedTime}); err != nil {
			return err
		}
	}
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: fixedTime}); err != nil {
		return err
	}
	return body(t.tw)
}

func parents(name string) []string {
	var ds []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		ds = append([]string{d}, ds...)
	}
	return ds
}

func (t *tarWriter) layer(name string, l v1.Layer, uncompressed bool) error {
	open, size := l.Compressed, l.Size
	if uncompressed {
		open = l.Uncompressed
		size = func() (int64, error) {
			rc, err := l.Uncompressed()
			if err != nil {
				return 0, err
			}
			defer rc.Close()
			return io.Copy(io.Discard, rc)
		}
	}
	n, err := size()
	if err != nil {
		return err
	}
	return t.stream(name, n, func(w io.Writer) error {
		rc, err := open()
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(w, rc)
		return err
	})
}

// Tagged is an image with the repo tags it is saved under ("busybox:stable",
// "example.com/a/b:v1"); no tags means an untagged image.
type Tagged struct {
	Image v1.Image
	Tags  []string
}

// WriteDockerSave writes a `docker save` archive (manifest.json, <id>.json
// configs, <diffID>/layer.tar uncompressed layers, as classic docker save)
// of the images to w, compressed with c.
func WriteDockerSave(w io.Writer, c Compression, imgs ...Tagged) error {
	cw, err := CompressWriter(w, c)
	if err != nil {
		return err
	}
	t := newTarWriter(cw)
	type entry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []entry
	for _, ti := range imgs {
		raw, err := ti.Image.RawConfigFile()
		if err != nil {
			return err
		}
		id, err := ti.Image.ConfigName()
		if err != nil {
			return err
		}
		e := entry{Config: id.Hex + ".json", RepoTags: ti.Tags}
		if err := t.file(e.Config, raw); err != nil {
			return err
		}
		layers, err := ti.Image.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			d, err := l.DiffID()
			if err != nil {
				return err
			}
			name := d.Hex + "/layer.tar"
			if err := t.layer(name, l, true); err != nil {
				return fmt.Errorf("write layer %s: %w", name, err)
			}
			e.Layers = append(e.Layers, name)
		}
		manifest = append(manifest, e)
	}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	if err := t.file("manifest.json", mb); err != nil {
		return err
	}
	if err := t.tw.Close(); err != nil {
		return err
	}
	return cw.Close()
}

// OCIEntry is one top-level manifest of an OCI layout: an image or an index
// (exactly one set), with an optional name recorded in the
// io.containerd.image.name and org.opencontainers.image.ref.name annotations.
type OCIEntry struct {
	Name  string
	Image v1.Image
	Index v1.ImageIndex
}

// WriteOCILayout writes an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) as a tar archive to w, compressed with c. Layer blobs
// are stored as the layers' compressed blobs.
func WriteOCILayout(w io.Writer, c Compression, entries ...OCIEntry) error {
	cw, err := CompressWriter(w, c)
	if err != nil {
		return err
	}
	t := newTarWriter(cw)
	if err := t.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, e := range entries {
		var desc v1.Descriptor
		switch {
		case e.Image != nil:
			desc, err = writeOCIImage(t, e.Image)
		case e.Index != nil:
			desc, err = writeOCIIndex(t, e.Index)
		default:
			err = fmt.Errorf("OCI entry %q has neither image nor index", e.Name)
		}
		if err != nil {
			return err
		}
		if e.Name != "" {
			desc.Annotations = map[string]string{
				"io.containerd.image.name":          e.Name,
				"org.opencontainers.image.ref.name": e.Name,
			}
		}
		idx.Manifests = append(idx.Manifests, desc)
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := t.file("index.json", ib); err != nil {
		return err
	}
	if err := t.tw.Close(); err != nil {
		return err
	}
	return cw.Close()
}

func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

func writeOCIImage(t *tarWriter, img v1.Image) (v1.Descriptor, error) {
	layers, err := img.Layers()
	if err != nil {
		return v1.Descriptor{}, err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return v1.Descriptor{}, err
		}
		if err := t.layer(blobName(d), l, false); err != nil {
			return v1.Descriptor{}, err
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, err
	}
	cn, err := img.ConfigName()
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := t.file(blobName(cn), cfg); err != nil {
		return v1.Descriptor{}, err
	}
	return writeManifestBlob(t, img)
}

type manifestBlob interface {
	RawManifest() ([]byte, error)
	MediaType() (types.MediaType, error)
	Digest() (v1.Hash, error)
}

func writeManifestBlob(t *tarWriter, m manifestBlob) (v1.Descriptor, error) {
	raw, err := m.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := m.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	d, err := m.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := t.file(blobName(d), raw); err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}, nil
}

func writeOCIIndex(t *tarWriter, idx v1.ImageIndex) (v1.Descriptor, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return v1.Descriptor{}, err
			}
			if _, err := writeOCIImage(t, img); err != nil {
				return v1.Descriptor{}, err
			}
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return v1.Descriptor{}, err
			}
			if _, err := writeOCIIndex(t, child); err != nil {
				return v1.Descriptor{}, err
			}
		}
	}
	return writeManifestBlob(t, idx)
}
