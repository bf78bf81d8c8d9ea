package apiserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/store"
)

// allowAll authenticates every request as an administrator.
type allowAll struct{}

func (allowAll) Authenticate(*http.Request) (*User, bool, error) {
	return &User{Name: "test", Groups: []string{"system:masters"}}, true, nil
}

type testServer struct {
	srv    *Server
	st     *store.DB
	http   *httptest.Server
	cfg    *rest.Config
	client kubernetes.Interface
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "state.db")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newTestServerOn(t, st)
}

func newTestServerOn(t testing.TB, st *store.DB) *testServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(Config{ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16")}, st, nil, allowAll{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Bootstrap(context.Background(), netip.MustParseAddr("127.0.0.1"), 6443); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	cfg := &rest.Config{Host: hs.URL, QPS: -1}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{srv: srv, st: st, http: hs, cfg: cfg, client: cs}
}
