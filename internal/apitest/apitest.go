// Package apitest starts a real orch API server over a temporary store for
// tests of components that talk to the cluster through client-go.
package apitest

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

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/apiserver"
	"github.com/orch-dev/orch/store"
)

// Server is a running test API server.
type Server struct {
	API    *apiserver.Server
	Store  *store.DB
	HTTP   *httptest.Server
	Config *rest.Config
	Client kubernetes.Interface
	// Kube is orch's own clientset over the same server.
	Kube *kube.Clientset
}

// allowAll authenticates every request as a cluster administrator.
type allowAll struct{}

func (allowAll) Authenticate(*http.Request) (*apiserver.User, bool, error) {
	return &apiserver.User{Name: "system:admin", Groups: []string{"system:masters"}}, true, nil
}

// Start runs an API server on 127.0.0.1 with the built-in namespaces and the
// kubernetes Service (service CIDR 10.43.0.0/16); it stops when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "state.db")}, log)
	if err != nil {
		t.Fatalf("apitest: open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	api, err := apiserver.New(apiserver.Config{ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16")}, st, nil, allowAll{}, log)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	if err := api.Bootstrap(context.Background(), netip.MustParseAddr("127.0.0.1"), 6443); err != nil {
		t.Fatalf("apitest: bootstrap: %v", err)
	}
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	cfg := &rest.Config{Host: hs.URL, QPS: -1}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("apitest: client: %v", err)
	}
	kc, err := kube.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("apitest: kube client: %v", err)
	}
	return &Server{API: api, Store: st, HTTP: hs, Config: cfg, Client: cs, Kube: kc}
}
