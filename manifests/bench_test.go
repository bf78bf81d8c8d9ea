package manifests

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/dynamic"

	"github.com/orch-dev/orch/internal/apitest"
)

// BenchmarkSyncUnchanged is the steady state: a rescan (an inotify event
// elsewhere, a resync) of a directory of 100 applied files, 3 objects each.
func BenchmarkSyncUnchanged(b *testing.B) {
	api := apitest.Start(b)
	dir := b.TempDir()
	for i := 0; i < 100; i++ {
		var docs []string
		for j := 0; j < 3; j++ {
			docs = append(docs, configMap(fmt.Sprintf("b%d-%d", i, j), "", "v"))
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.yaml", i)), []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	dyn, _ := dynamic.NewForConfig(api.Config)
	c, err := NewWithClients(Config{Dir: dir}, api.Kube, dyn, api.API.RESTMapper(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Sync(ctx, false); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Sync(ctx, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyFile is one changed file of 3 objects applied.
func BenchmarkApplyFile(b *testing.B) {
	api := apitest.Start(b)
	dir := b.TempDir()
	dyn, _ := dynamic.NewForConfig(api.Config)
	c, err := NewWithClients(Config{Dir: dir}, api.Kube, dyn, api.API.RESTMapper(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := fmt.Sprint(i)
		content := configMap("x1", "", v) + "---\n" + configMap("x2", "", v) + "---\n" + configMap("x3", "", v)
		if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := c.Sync(ctx, false); err != nil {
			b.Fatal(err)
		}
	}
}
