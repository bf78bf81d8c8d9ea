package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func testConfig(dir string) Config {
	return Config{
		DataDir:             filepath.Join(dir, "data"),
		BindAddress:         netip.MustParseAddr("127.0.0.1"),
		HTTPSPort:           0,
		NodeName:            "test-node",
		WriteKubeconfig:     filepath.Join(dir, "kubeconfig.yaml"),
		WriteKubeconfigMode: 0o600,
		ClusterCIDR:         netip.MustParsePrefix("10.42.0.0/16"),
		ServiceCIDR:         netip.MustParsePrefix("10.43.0.0/16"),
		ClusterDNS:          netip.MustParseAddr("10.43.0.10"),
		NodePortMin:         30000,
		NodePortMax:         32767,
		DisableAgent:        true,
		Version:             "test",
	}
}

// start runs a server until the returned stop is called.
func start(t *testing.T, cfg Config) (*Server, func()) {
	t.Helper()
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !srv.Ready() {
		select {
		case err := <-done:
			t.Fatalf("server stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}
	t.Cleanup(stop)
	return srv, stop
}

func clientFor(t *testing.T, kubeconfig string) kubernetes.Interface {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestServerEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.EnablePprof = true
	srv, stop := start(t, cfg)
	fi, err := os.Stat(cfg.WriteKubeconfig)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig: %v %v", err, fi)
	}
	cs := clientFor(t, cfg.WriteKubeconfig)
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mysecret"}, Data: map[string][]byte{"password": []byte("1f2d1e2e67df-plaintext-marker")}}
	created, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().Secrets("default").Get(ctx, "mysecret", metav1.GetOptions{})
	if err != nil || string(got.Data["password"]) != "1f2d1e2e67df-plaintext-marker" {
		t.Fatalf("secret read back: %v %v", err, got)
	}
	base := "https://127.0.0.1:" + strconv.Itoa(srv.Port())
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	// Anonymous callers get 401, except health, version and the CA.
	for path, want := range map[string]int{"/api/v1/namespaces": 401, "/readyz": 200, "/version": 200, "/cacerts": 200, "/debug/pprof/": 403} {
		resp, err := insecure.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// The join token works as a bearer token and gets node certificates.
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1-orch/client-cert", bytes.NewBufferString(`{"nodeName":"agent-1"}`))
	req.SetBasicAuth("node", string(bytes.TrimSpace(tok)))
	resp, err := insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var cc ClientCertResponse
	_ = json.NewDecoder(resp.Body).Decode(&cc)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(cc.Cert) == 0 {
		t.Fatalf("client cert: %d", resp.StatusCode)
	}
	// Profiles (--enable-pprof) are served to administrators: the token
	// as a bearer token.
	req, _ = http.NewRequest(http.MethodGet, base+"/debug/pprof/heap", nil)
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(tok)))
	resp, err = insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("heap profile as administrator: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPost, base+"/v1-orch/client-cert", bytes.NewBufferString(`{"nodeName":"agent-1"}`))
	req.SetBasicAuth("node", "wrong")
	resp, err = insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("client cert with a wrong token: %d", resp.StatusCode)
	}

	// Restart: same objects, same uid and resourceVersion; the database
	// never held the Secret's plaintext.
	stop()
	for _, f := range []string{"state.db", "state.db.wal"} {
		db, err := os.ReadFile(filepath.Join(cfg.DataDir, "server", "db", f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(db, []byte("plaintext-marker")) {
			t.Fatalf("database file %s holds the Secret's plaintext", f)
		}
	}
	_, _ = start(t, cfg)
	cs = clientFor(t, cfg.WriteKubeconfig)
	again, err := cs.CoreV1().Secrets("default").Get(ctx, "mysecret", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.UID != created.UID || again.ResourceVersion != created.ResourceVersion {
		t.Fatalf("after restart uid/rv %s/%s, want %s/%s", again.UID, again.ResourceVersion, created.UID, created.ResourceVersion)
	}
}

func TestConfigValidation(t *testing.T) {
	base := testConfig(t.TempDir())
	cases := map[string]func(*Config){
		"overlap":     func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("10.42.128.0/17") },
		"small-pods":  func(c *Config) { c.ClusterCIDR = netip.MustParsePrefix("10.42.0.0/25") },
		"small-svc":   func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("10.43.0.0/30") },
		"dns-outside": func(c *Config) { c.ClusterDNS = netip.MustParseAddr("10.44.0.10") },
		"ports":       func(c *Config) { c.NodePortMin, c.NodePortMax = 32000, 31000 },
	}
	for name, mutate := range cases {
		c := base
		mutate(&c)
		if _, err := New(c, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKubeconfigHostAndBindSANs(t *testing.T) {
	for _, c := range []struct {
		bind, host string
		sans       []string
	}{
		{"", "127.0.0.1", nil},
		{"0.0.0.0", "127.0.0.1", nil},
		{"::", "127.0.0.1", nil},
		{"127.0.0.1", "127.0.0.1", nil},
		{"192.0.2.7", "192.0.2.7", []string{"192.0.2.7"}},
		{"2001:db8::7", "2001:db8::7", []string{"2001:db8::7"}},
	} {
		var a netip.Addr
		if c.bind != "" {
			a = netip.MustParseAddr(c.bind)
		}
		if h := kubeconfigHost(a); h != c.host {
			t.Errorf("bind %q: kubeconfig host %q, want %q", c.bind, h, c.host)
		}
		if s := bindSANs(a); !slices.Equal(s, c.sans) {
			t.Errorf("bind %q: SANs %v, want %v", c.bind, s, c.sans)
		}
	}
}
