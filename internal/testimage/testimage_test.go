package testimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// tarNames lists a tar's entries and returns the named file's content.
func tarNames(t *testing.T, b []byte, want string) ([]string, []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	var body []byte
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, body
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Name == want {
			body, _ = io.ReadAll(tr)
		}
	}
}

func TestBusyboxLayer(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static not installed")
	}
	img, err := Busybox(Gzip)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != Platform().Architecture || len(cf.RootFS.DiffIDs) != 1 || cf.Config.Cmd[0] != "sh" {
		t.Errorf("config %+v", cf)
	}
	ls, _ := img.Layers()
	rc, _ := ls[0].Uncompressed()
	raw, _ := io.ReadAll(rc)
	names, bin := tarNames(t, raw, "bin/busybox")
	orig, _ := os.ReadFile(BusyboxPath)
	if !bytes.Equal(bin, orig) || len(names) < len(BusyboxApplets)+2 {
		t.Errorf("layer entries %v", names)
	}
}

func TestArchives(t *testing.T) {
	l, err := Layer([]Entry{Dir("d"), File("d/f", "x"), Whiteout("d", "g"), Opaque("d")}, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image(Platform(), v1.Config{}, l)
	if err != nil {
		t.Fatal(err)
	}
	var ds bytes.Buffer
	if err := WriteDockerSave(&ds, None, Tagged{Image: img, Tags: []string{"a:1"}}); err != nil {
		t.Fatal(err)
	}
	_, mb := tarNames(t, ds.Bytes(), "manifest.json")
	var m []struct {
		Config           string
		RepoTags, Layers []string
	}
	if err := json.Unmarshal(mb, &m); err != nil || len(m) != 1 || m[0].RepoTags[0] != "a:1" || len(m[0].Layers) != 1 {
		t.Fatalf("manifest.json %s: %v", mb, err)
	}
	names, _ := tarNames(t, ds.Bytes(), "")
	_, layerBody := tarNames(t, ds.Bytes(), m[0].Layers[0])
	inner, _ := tarNames(t, layerBody, "")
	if len(inner) != 4 || inner[2] != "d/.wh.g" || inner[3] != "d/.wh..wh..opq" {
		t.Errorf("docker-save layer is not the uncompressed tar: %v (archive %v)", inner, names)
	}

	var oci bytes.Buffer
	idx, err := MultiArch(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteOCILayout(&oci, Zstd, OCIEntry{Name: "x/y:z", Index: idx}); err != nil {
		t.Fatal(err)
	}
	zr, err := zstd.NewReader(&oci)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	names, ib := tarNames(t, plain, "index.json")
	im, err := v1.ParseIndexManifest(bytes.NewReader(ib))
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Annotations["io.containerd.image.name"] != "x/y:z" {
		t.Fatalf("index.json %s: %v", ib, err)
	}
	// oci-layout, index.json, blobs/ and blobs/sha256/ dirs, index, manifest, config, layer.
	if len(names) != 8 {
		t.Errorf("OCI archive entries %v", names)
	}
}
