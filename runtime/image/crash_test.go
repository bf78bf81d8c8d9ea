package image

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/orch-dev/orch/internal/testimage"
)

// TestKilledImport SIGKILLs a process importing an archive at several
// points and checks the store is consistent afterwards: no image without
// its layers, staging removed at the next Open, and the import then works.
func TestKilledImport(t *testing.T) {
	if root := os.Getenv("ORCHTEST_IMAGE_CHILD_ROOT"); root != "" {
		s, err := Open(Config{Root: root}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.ImportFile(context.Background(), os.Getenv("ORCHTEST_IMAGE_CHILD_FILE"))
		t.Logf("child import: %v", err)
		return
	}
	if testing.Short() {
		t.Skip("slow")
	}
	es, err := testimage.BusyboxEntries()
	if err != nil {
		t.Fatal(err)
	}
	layers := []v1.Layer{must[v1.Layer](t)(testimage.Layer(es, testimage.None))}
	for i := range 3 {
		layers = append(layers, must[v1.Layer](t)(testimage.Layer(testimage.RandomEntries("d", 16<<20, uint64(i)), testimage.Gzip)))
	}
	img := must[v1.Image](t)(testimage.Image(testimage.Platform(), v1.Config{}, layers...))
	file := writeFile(t, func(w io.Writer) error {
		return testimage.WriteOCILayout(w, testimage.None, testimage.OCIEntry{Name: "crash:1", Image: img})
	})

	// Kill when n layers are published (0: during the first unpack).
	for _, n := range []int{0, 1, 3} {
		root := filepath.Join(t.TempDir(), "store")
		s := must[*Store](t)(Open(Config{Root: root}, testLogger(t)))
		cmd := exec.Command(os.Args[0], "-test.run=^TestKilledImport$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ORCHTEST_IMAGE_CHILD_ROOT="+root, "ORCHTEST_IMAGE_CHILD_FILE="+file)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killed := false
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			staging, _ := os.ReadDir(s.path("tmp"))
			published, _ := os.ReadDir(s.path("layers"))
			if (n == 0 && len(staging) > 0) || (n > 0 && len(published) >= n) {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				killed = true
				break
			}
			time.Sleep(time.Millisecond)
		}
		_ = cmd.Wait()
		if !killed {
			t.Fatalf("kill point %d never reached", n)
		}
		// Reopen as the next process would: stale staging goes, the index
		// names no missing layer.
		s = must[*Store](t)(Open(Config{Root: root}, testLogger(t)))
		checkConsistent(t, s)
		imgs := must[[]*Image](t)(s.List(context.Background()))
		t.Logf("killed after %d layers: %d images, %d layer dirs", n, len(imgs), len(layerDirs(t, s)))
		// Orphaned complete layers are reused or pruned; the import works.
		got, err := s.ImportFile(context.Background(), file)
		if err != nil {
			t.Fatalf("import after kill: %v", err)
		}
		for _, d := range got[0].LayerDirs {
			if _, err := os.Stat(filepath.Join(d, "d")); err != nil && d != got[0].LayerDirs[0] {
				t.Errorf("layer %s incomplete: %v", d, err)
			}
		}
		if _, err := s.GC(context.Background(), GCPolicy{HighPercent: 100, LowPercent: 100}, nil); err != nil {
			t.Fatal(err)
		}
		if n := len(layerDirs(t, s)); n != 4 {
			t.Errorf("%d layer dirs after GC, want 4", n)
		}
		checkConsistent(t, s)
	}
}
