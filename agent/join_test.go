package agent_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/agent"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server"
	"github.com/orch-dev/orch/server/pki"
)

// startServer runs a real orch server (control plane only) on loopback.
func startServer(t *testing.T) (url, token string) {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{
		DataDir: filepath.Join(dir, "data"), BindAddress: netip.MustParseAddr("127.0.0.1"), NodeName: "srv",
		WriteKubeconfig: filepath.Join(dir, "kubeconfig.yaml"), WriteKubeconfigMode: 0o600,
		ClusterCIDR: netip.MustParsePrefix("10.42.0.0/16"), ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"),
		ClusterDNS: netip.MustParseAddr("10.43.0.10"), NodePortMin: 30000, NodePortMax: 32767, DisableAgent: true, Version: "test",
	}
	srv, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("server not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	return "https://127.0.0.1:" + strconv.Itoa(srv.Port()), strings.TrimSpace(string(tok))
}

func TestJoin(t *testing.T) {
	url, token := startServer(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "agent")

	// A token pinning another CA is refused and writes nothing.
	tok, err := pki.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	bad := tok
	bad.CAHash = strings.Repeat("ab", 32)
	_, err = agent.Join(ctx, agent.JoinConfig{ServerURL: url, Token: bad.String(), NodeName: "n1", Dir: dir}, log)
	if !errors.Is(err, pki.ErrCAMismatch) {
		t.Fatalf("mismatched CA: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, agent.KubeconfigFile)); !os.IsNotExist(err) {
		t.Fatalf("credentials written after a refused join: %v", err)
	}
	// A wrong secret is rejected by the server.
	wrong := tok
	wrong.Secret = "nope"
	if _, err := agent.Join(ctx, agent.JoinConfig{ServerURL: url, Token: wrong.String(), NodeName: "n1", Dir: dir}, log); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("wrong secret: err = %v", err)
	}
	for _, c := range []agent.JoinConfig{
		{ServerURL: "http://127.0.0.1:1", Token: token, NodeName: "n1", Dir: dir},
		{ServerURL: url, Token: "", NodeName: "n1", Dir: dir},
		{ServerURL: url, Token: token, Dir: dir},
	} {
		if _, err := agent.Join(ctx, c, log); err == nil {
			t.Errorf("join %+v accepted", c)
		}
	}

	rc, err := agent.Join(ctx, agent.JoinConfig{ServerURL: url, Token: token, NodeName: "n1", Dir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kube.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	// The node's certificate lets it register its own Node.
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register node with node credentials: %v", err)
	}
	for _, f := range []string{agent.CACertFile, agent.ClientCertFile, agent.ClientKeyFile, agent.KubeconfigFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, err, fi)
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, agent.ClientCertFile))
	// A restart reuses the saved credentials.
	if _, err := agent.Join(ctx, agent.JoinConfig{ServerURL: url, Token: token, NodeName: "n1", Dir: dir}, log); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, agent.ClientCertFile))
	if string(before) != string(after) {
		t.Error("restart fetched a new certificate instead of reusing the saved one")
	}
	// A bare secret joins too (trusting the CA with a warning).
	if _, err := agent.Join(ctx, agent.JoinConfig{ServerURL: url, Token: tok.Secret, NodeName: "n2", Dir: filepath.Join(t.TempDir(), "a2")}, log); err != nil {
		t.Fatalf("bare secret: %v", err)
	}
}

// TestJoinWaitsForServer: an agent started before its server waits for it
// (connection refused) instead of exiting.
func TestJoinWaitsForServer(t *testing.T) {
	url, token := startServer(t)
	backend := strings.TrimPrefix(url, "https://")
	// A port nothing listens on yet; the server appears there later,
	// through a TCP proxy.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		rc  *rest.Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		rc, err := agent.Join(ctx, agent.JoinConfig{ServerURL: "https://" + addr, Token: token, NodeName: "late", Dir: filepath.Join(t.TempDir(), "agent"),
			RetryMax: 500 * time.Millisecond}, log)
		done <- result{rc, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("join returned with no server: %v", r.err)
	case <-time.After(1500 * time.Millisecond):
	}
	pl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer pl.Close()
	go proxyTCP(pl, backend)
	r := <-done
	if r.err != nil {
		t.Fatalf("join after the server came: %v", r.err)
	}
	// A canceled context ends the wait.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := agent.Join(cctx, agent.JoinConfig{ServerURL: "https://127.0.0.1:1", Token: token, NodeName: "x", Dir: filepath.Join(t.TempDir(), "x")}, log); !errors.Is(err, context.Canceled) {
		t.Fatalf("join with a canceled context: %v", err)
	}
}

// proxyTCP forwards each connection accepted on l to addr.
func proxyTCP(l net.Listener, addr string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer b.Close()
			go func() { _, _ = io.Copy(b, c) }()
			_, _ = io.Copy(c, b)
		}()
	}
}
