package pki

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestWriteAdminKubeconfig(t *testing.T) {
	p := mustLoad(t, t.TempDir(), testOpts())
	url := startServer(t, p)
	path := filepath.Join(t.TempDir(), "etc", "orch", "orch.yaml")
	if err := p.WriteAdminKubeconfig(path, 0, url); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("default mode %v, want 0600", m)
	}

	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("clientcmd cannot load it: %v", err)
	}
	if cfg.CurrentContext != "default" || cfg.Contexts["default"] == nil ||
		cfg.Contexts["default"].Cluster != "default" || cfg.Contexts["default"].AuthInfo != "default" {
		t.Errorf("contexts %+v current %q", cfg.Contexts, cfg.CurrentContext)
	}
	cl := cfg.Clusters["default"]
	if cl == nil || cl.Server != url || !bytes.Equal(cl.CertificateAuthorityData, p.CACertPEM()) {
		t.Errorf("cluster %+v", cl)
	}
	cert, key := p.AdminCredentials()
	u := cfg.AuthInfos["default"]
	if u == nil || !bytes.Equal(u.ClientCertificateData, cert) || !bytes.Equal(u.ClientKeyData, key) {
		t.Errorf("user %+v", u)
	}

	// The kubeconfig works end to end: client-go authenticates as the admin.
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "system:admin system:masters" {
		t.Errorf("GET with kubeconfig: %d %q", resp.StatusCode, body)
	}
}

func TestWriteKubeconfigModeIgnoresUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := mustLoad(t, t.TempDir(), testOpts())
	path := filepath.Join(t.TempDir(), "k.yaml")
	if err := p.WriteAdminKubeconfig(path, 0o644, "https://127.0.0.1:6443"); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m != 0o644 {
		t.Errorf("mode %v, want 0644", m)
	}
	// Rewriting with another mode applies it.
	if err := p.WriteAdminKubeconfig(path, 0o640, "https://127.0.0.1:6443"); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m != 0o640 {
		t.Errorf("mode %v, want 0640", m)
	}
}

func TestWriteKubeconfigAtomicAndBadInput(t *testing.T) {
	p := mustLoad(t, t.TempDir(), testOpts())
	dir := t.TempDir()
	path := filepath.Join(dir, "k.yaml")
	if err := p.WriteAdminKubeconfig(path, 0, "https://127.0.0.1:6443"); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteAdminKubeconfig(path, 0, "https://[::1]:7443"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readFile(t, path)), "https://[::1]:7443") {
		t.Error("rewrite did not replace content")
	}
	good := readFile(t, path)

	cert, key := p.AdminCredentials()
	other := mustLoad(t, t.TempDir(), testOpts())
	_, otherKey := other.AdminCredentials()
	for name, call := range map[string]func() error{
		"http URL":     func() error { return WriteKubeconfig(path, 0, "http://127.0.0.1:6443", p.CACertPEM(), cert, key) },
		"no host":      func() error { return WriteKubeconfig(path, 0, "https://", p.CACertPEM(), cert, key) },
		"bad URL":      func() error { return WriteKubeconfig(path, 0, "https://a b\x7f", p.CACertPEM(), cert, key) },
		"missing CA":   func() error { return WriteKubeconfig(path, 0, "https://h:1", nil, cert, key) },
		"CA not PEM":   func() error { return WriteKubeconfig(path, 0, "https://h:1", []byte("x"), cert, key) },
		"key mismatch": func() error { return WriteKubeconfig(path, 0, "https://h:1", p.CACertPEM(), cert, otherKey) },
		"key not PEM":  func() error { return WriteKubeconfig(path, 0, "https://h:1", p.CACertPEM(), cert, []byte("x")) },
		"non-perm mode": func() error {
			return WriteKubeconfig(path, os.ModeSetuid|0o600, "https://h:1", p.CACertPEM(), cert, key)
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s: want error", name)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if !bytes.Equal(readFile(t, path), good) {
		t.Error("failed writes changed the file")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("temporary files left behind: %v", names)
	}

	// A write that cannot rename (target is a directory) leaves no temp file.
	blocked := filepath.Join(dir, "blocked")
	if err := os.Mkdir(blocked, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blocked, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteKubeconfig(blocked, 0, "https://h:1", p.CACertPEM(), cert, key); err == nil {
		t.Error("writing over a non-empty directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("temporary files left behind after failed rename: %d entries", len(entries))
	}
}

func TestAgentKubeconfig(t *testing.T) {
	p := mustLoad(t, t.TempDir(), testOpts())
	url := startServer(t, p)
	cert, key, err := p.IssueClientCert("system:node:orchtest-n3", []string{"system:nodes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Kubeconfig(url, p.CACertPEM(), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "system:node:orchtest-n3 system:nodes" {
		t.Errorf("identity %q", body)
	}
}
