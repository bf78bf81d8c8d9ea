package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/orch-dev/orch/internal/testimage"
)

// newRegistry serves an in-process registry on 127.0.0.1, optionally
// wrapped, and returns its host:port.
func newRegistry(t testing.TB, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// deadHost is a loopback host:port nothing listens on.
func deadHost(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func push(t testing.TB, ref string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func pushIndex(t testing.TB, ref string, idx v1.ImageIndex) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func registriesFile(t testing.TB, yaml string) func(*Config) {
	p := filepath.Join(t.TempDir(), "registries.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *Config) { c.RegistriesFile = p }
}

func TestPull(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t, nil)
	_, top, _ := twoImages(t)
	here := busybox(t, testimage.Gzip)
	other := must[v1.Image](t)(testimage.BusyboxFor(testimage.OtherPlatform(), testimage.Gzip))
	idx := must[v1.ImageIndex](t)(testimage.MultiArch(other, here))
	push(t, host+"/library/app:1", top)
	pushIndex(t, host+"/library/busybox:multi", idx)
	pushIndex(t, host+"/library/otheronly:1", must[v1.ImageIndex](t)(testimage.MultiArch(other)))
	push(t, host+"/library/othersingle:1", other)

	s := newTestStore(t)
	var mu sync.Mutex
	var reports []Progress
	img, err := s.Pull(ctx, host+"/library/app:1", PullOptions{Progress: func(p Progress) {
		mu.Lock()
		reports = append(reports, p)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	md := must[v1.Hash](t)(top.Digest()).String()
	if img.ID != must[v1.Hash](t)(top.ConfigName()).String() || img.ManifestDigest != md {
		t.Errorf("pulled %s / %s", img.ID, img.ManifestDigest)
	}
	if !slices.Equal(img.RepoTags, []string{host + "/library/app:1"}) || !slices.Contains(img.RepoDigests, host+"/library/app@"+md) {
		t.Errorf("tags %v digests %v", img.RepoTags, img.RepoDigests)
	}
	done := 0
	for _, p := range reports {
		if p.Done && !p.Cached {
			done++
		}
	}
	if done != 2 {
		t.Errorf("progress reported %d finished layers, want 2: %+v", done, reports)
	}
	if got := readAll(t, filepath.Join(img.LayerDirs[1], "app/hello")); string(got) != "hi\n" {
		t.Errorf("app/hello %q", got)
	}

	// By digest: the layers are already there.
	reports = nil
	byDigest, err := s.Pull(ctx, host+"/library/app@"+md, PullOptions{Progress: func(p Progress) { reports = append(reports, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if byDigest.ID != img.ID {
		t.Errorf("by digest: %s", byDigest.ID)
	}
	if len(reports) != 2 || !reports[0].Cached || !reports[1].Cached {
		t.Errorf("second pull progress %+v, want 2 cached layers", reports)
	}
	if ok, _ := s.Has(ctx, host+"/library/app@"+md); !ok {
		t.Error("Has by digest")
	}

	// Multi-arch index → this platform.
	multi, err := s.Pull(ctx, host+"/library/busybox:multi", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if multi.ID != must[v1.Hash](t)(here.ConfigName()).String() || multi.Platform != testimage.Platform().String() {
		t.Errorf("multi-arch pull got %s (%s)", multi.ID, multi.Platform)
	}
	if !slices.Contains(multi.RepoDigests, host+"/library/busybox@"+must[v1.Hash](t)(idx.Digest()).String()) {
		t.Errorf("index digest not recorded: %v", multi.RepoDigests)
	}

	before := layerDirs(t, s)
	for ref, want := range map[string]error{
		"/library/otheronly:1":    ErrPlatform,
		"/library/othersingle:1":  ErrPlatform,
		"/library/missing:1":      ErrNotFound,
		"/library/app:missingtag": ErrNotFound,
		"/library/app@sha256:0000000000000000000000000000000000000000000000000000000000000000": ErrNotFound,
	} {
		_, err := s.Pull(ctx, host+ref, PullOptions{})
		if !errors.Is(err, want) {
			t.Errorf("pull %s: got %v, want %v", ref, err, want)
		}
	}
	if !slices.Equal(before, layerDirs(t, s)) {
		t.Errorf("failed pulls changed layers: %v → %v", before, layerDirs(t, s))
	}
	if n := len(must[[]*Image](t)(s.List(ctx))); n != 2 {
		t.Errorf("%d images, want 2", n)
	}
}

func TestPullMirror(t *testing.T) {
	ctx := context.Background()
	mirror := newRegistry(t, nil)
	img := busybox(t, testimage.Zstd)
	push(t, mirror+"/library/busybox:stable", img)
	push(t, mirror+"/mirrored/tool:1", img)
	dead := deadHost(t) // the image's own registry: unreachable
	yaml := fmt.Sprintf(`
mirrors:
  %q:
    endpoint: ["http://%s", "http://%s"]
    rewrite:
      "^tools/(.*)": "mirrored/$1"
`, dead, deadHost(t), mirror)
	s := newTestStore(t, registriesFile(t, yaml))
	got, err := s.Pull(ctx, dead+"/library/busybox:stable", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != must[v1.Hash](t)(img.ConfigName()).String() || !slices.Equal(got.RepoTags, []string{dead + "/library/busybox:stable"}) {
		t.Errorf("mirror pull: %s %v", got.ID, got.RepoTags)
	}
	if _, err := s.Pull(ctx, dead+"/tools/tool:1", PullOptions{}); err != nil {
		t.Fatalf("rewritten pull: %v", err)
	}
	if ok, _ := s.Has(ctx, dead+"/tools/tool:1"); !ok {
		t.Error("rewritten image not stored under its own name")
	}
	// Nothing anywhere: all endpoints' errors are reported.
	_, err = s.Pull(ctx, dead+"/library/nothing:1", PullOptions{})
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), mirror) {
		t.Errorf("got %v, want errors naming every endpoint", err)
	}
}

func basicAuth(user, pass string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="orchtest"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestPullAuth(t *testing.T) {
	ctx := context.Background()
	host := newRegistry(t, basicAuth("orch", "s3cret"))
	img := busybox(t, testimage.Gzip)
	push(t, host+"/private/bb:1", img, remote.WithAuth(&authn.Basic{Username: "orch", Password: "s3cret"}))

	anon := newTestStore(t)
	if _, err := anon.Pull(ctx, host+"/private/bb:1", PullOptions{}); err == nil {
		t.Fatal("pull without credentials succeeded")
	}
	assertEmpty(t, anon)
	wrong := newTestStore(t, registriesFile(t, fmt.Sprintf("configs:\n  %q:\n    auth: {username: orch, password: nope}\n", host)))
	if _, err := wrong.Pull(ctx, host+"/private/bb:1", PullOptions{}); err == nil {
		t.Fatal("pull with wrong credentials succeeded")
	}
	for name, yaml := range map[string]string{
		"password": fmt.Sprintf("configs:\n  %q:\n    auth: {username: orch, password: s3cret}\n", host),
		"auth":     fmt.Sprintf("configs:\n  %q:\n    auth: {auth: %s}\n", host, base64.StdEncoding.EncodeToString([]byte("orch:s3cret"))),
	} {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, registriesFile(t, yaml))
			if _, err := s.Pull(ctx, host+"/private/bb:1", PullOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// corruptBlob flips a byte in responses for the blob with this digest.
func corruptBlob(digest string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if len(b) > 0 {
				b[len(b)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(b)
		})
	}
}

func TestPullTamperedLayer(t *testing.T) {
	ctx := context.Background()
	_, top, _ := twoImages(t)
	layers := must[[]v1.Layer](t)(top.Layers())
	bad := must[v1.Hash](t)(layers[1].Digest()).String()
	host := newRegistry(t, corruptBlob(bad))
	push(t, host+"/library/app:1", top)
	s := newTestStore(t)
	_, err := s.Pull(ctx, host+"/library/app:1", PullOptions{})
	if err == nil {
		t.Fatal("pull of a tampered layer succeeded")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("error does not mention the digest: %v", err)
	}
	assertEmpty(t, s)
}

func TestLoadRegistriesErrors(t *testing.T) {
	dir := t.TempDir()
	for name, yaml := range map[string]string{
		"unknown field": "mirrors:\n  docker.io:\n    endpoints: [x]\n",
		"bad scheme":    "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
		"bad regexp":    "mirrors:\n  docker.io:\n    endpoint: [\"https://x\"]\n    rewrite: {\"(\": \"y\"}\n",
		"not yaml":      "mirrors: [",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadRegistries(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if r, err := LoadRegistries(filepath.Join(dir, "missing")); err != nil || len(r.Mirrors) != 0 {
		t.Errorf("missing file: %v %v", r, err)
	}
	r, err := LoadRegistries(writeYAML(t, dir, "mirrors:\n  docker.io:\n    endpoint: [\"https://m1:5000\", \"http://m2\"]\n  \"*\":\n    endpoint: [\"https://any\"]\nconfigs:\n  docker.io:\n    auth: {username: u, password: p}\n"))
	if err != nil {
		t.Fatal(err)
	}
	eps := r.endpoints(must[reference](t)(parseReference("busybox")))
	if len(eps) != 3 || eps[0].host != "m1:5000" || eps[0].insecure || eps[1].host != "m2" || !eps[1].insecure || eps[2].host != name.DefaultRegistry || eps[2].repo != "library/busybox" {
		t.Errorf("docker.io endpoints %+v", eps)
	}
	if eps := r.endpoints(must[reference](t)(parseReference("quay.io/a/b"))); len(eps) != 2 || eps[0].host != "any" || eps[1].host != "quay.io" {
		t.Errorf("wildcard endpoints %+v", eps)
	}
	if c, ok := r.config(name.DefaultRegistry); !ok || c.Auth.Username != "u" {
		t.Errorf("docker hub config %+v %v", c, ok)
	}
}

func writeYAML(t *testing.T, dir, s string) string {
	p := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
