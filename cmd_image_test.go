package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/orch-dev/orch/internal/testimage"
)

func runImageCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := newApp(&out, &out).Run(context.Background(), append([]string{"image"}, args...))
	return out.String(), err
}

func TestImageCommand(t *testing.T) {
	dataDir := t.TempDir()
	img, err := testimage.Busybox(testimage.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "bb.tar.zst")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.WriteDockerSave(f, testimage.Zstd, testimage.Tagged{Image: img, Tags: []string{"busybox:stable"}}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out, err := runImageCmd(t, "--data-dir", dataDir, "import", archive)
	if err != nil || !strings.Contains(out, "imported docker.io/library/busybox:stable") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/tools/bb:1"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	out, err = runImageCmd(t, "--data-dir", dataDir, "pull", "--registries", filepath.Join(dataDir, "none.yaml"), ref)
	if err != nil || !strings.Contains(out, "pulled sha256:") || !strings.Contains(out, "already present") {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	out, err = runImageCmd(t, "ls", "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "docker.io/library/busybox") || !strings.Contains(out, "/tools/bb") || !strings.Contains(out, "IMAGE ID") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, err = runImageCmd(t, "--data-dir", dataDir, "rm", "busybox:stable")
	if err != nil || !strings.Contains(out, "untagged busybox:stable") {
		t.Fatalf("rm tag: %v\n%s", err, out)
	}
	out, err = runImageCmd(t, "--data-dir", dataDir, "rm", ref, "nothing:1")
	if err == nil || !strings.Contains(out, "deleted sha256:") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	out, err = runImageCmd(t, "--data-dir", dataDir, "ls", "-q")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("ls after rm: %v\n%q", err, out)
	}
	if _, err := runImageCmd(t, "--data-dir", dataDir, "import"); err == nil {
		t.Error("import without files succeeded")
	}
}
