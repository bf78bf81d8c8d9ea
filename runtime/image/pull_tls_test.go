package image

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/orch-dev/orch/internal/testimage"
)

func TestPullTLS(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failing cases log handshake errors
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref := must[name.Reference](t)(name.ParseReference(host + "/secure/bb:1"))
	img := busybox(t, testimage.Gzip)
	if err := remote.Write(ref, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newTestStore(t).Pull(ctx, ref.String(), PullOptions{}); err == nil {
		t.Fatal("pull from a registry with an unknown CA succeeded")
	}
	for name, tlsYAML := range map[string]string{
		"ca_file":              fmt.Sprintf("{ca_file: %q}", caFile),
		"insecure_skip_verify": "{insecure_skip_verify: true}",
	} {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, registriesFile(t, fmt.Sprintf("configs:\n  %q:\n    tls: %s\n", host, tlsYAML)))
			if _, err := s.Pull(ctx, ref.String(), PullOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
	bad := newTestStore(t, registriesFile(t, fmt.Sprintf("configs:\n  %q:\n    tls: {ca_file: /nonexistent/ca.pem}\n", host)))
	if _, err := bad.Pull(ctx, ref.String(), PullOptions{}); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("missing ca_file: %v", err)
	}
}

func TestConcurrentPullsShareLayers(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	blobGets := map[string]int{}
	host := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				mu.Lock()
				blobGets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	base, top, baseLayer := twoImages(t)
	push(t, host+"/c/base:1", base)
	push(t, host+"/c/top:1", top)
	s := newTestStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := host + "/c/base:1"
			if i%2 == 1 {
				ref = host + "/c/top:1"
			}
			_, err := s.Pull(ctx, ref, PullOptions{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := len(layerDirs(t, s)); n != 2 {
		t.Errorf("%d layer dirs, want 2", n)
	}
	d := must[v1.Hash](t)(baseLayer.Digest())
	mu.Lock()
	defer mu.Unlock()
	if blobGets[d.String()] != 1 {
		t.Errorf("shared layer fetched %d times", blobGets[d.String()])
	}
}
