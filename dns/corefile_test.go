package dns

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/orch-dev/orch/internal/kube/clientgo"
)

func TestCorefile(t *testing.T) {
	p := corefileParams{Domain: "cluster.local", Addrs: []netip.Addr{netip.MustParseAddr("10.43.0.10")}, Port: 53,
		ClusterID: "hA", LoopID: "hB", Upstreams: []string{"192.0.2.1:53"}, CacheTTL: 30,
		Custom: map[string]string{
			"b.override":  "log",
			"a.override":  "rewrite name foo.example bar.example\n\n",
			"corp.server": "corp.internal:53 {\n  forward . 192.0.2.9\n}",
			"own.server":  "own.internal:53 {\n  bind 10.43.0.10\n  hosts {\n  }\n}",
			"ignored":     "whatever",
		}}
	got, err := corefile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		".:53 {\n    bind 10.43.0.10\n    errors\n",
		"    orch hA cluster.local. in-addr.arpa ip6.arpa {\n        ns 10.43.0.10\n    }\n",
		"    orch_loop hB\n    forward . 192.0.2.1:53\n",
		"    cache 30\n",
		"    # a.override\n    rewrite name foo.example bar.example\n    # b.override\n    log\n}\n",
		"corp.internal:53 {\n    bind 10.43.0.10\n  forward . 192.0.2.9\n}",
		"own.internal:53 {\n  bind 10.43.0.10\n  hosts",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "whatever") {
		t.Errorf("a key that is neither .server nor .override was used:\n%s", got)
	}
	// No upstreams: no forward and no loop probe.
	p.Upstreams, p.Custom = nil, nil
	if got, _ := corefile(p); strings.Contains(got, "forward") || strings.Contains(got, "orch_loop") {
		t.Errorf("forward without upstreams:\n%s", got)
	}
	// Bad server blocks are errors naming the key.
	for _, bad := range []string{"x.internal {\n  hosts {", "a.internal:53 {\n}\nb.internal:53 {\n}"} {
		p.Custom = map[string]string{"bad.server": bad}
		if _, err := corefile(p); err == nil || !strings.Contains(err.Error(), "bad.server") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestUpstreams(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte("search example\nnameserver 10.43.0.10\nnameserver 192.0.2.53\nnameserver fd00::53\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := upstreams(p, []netip.Addr{netip.MustParseAddr("10.43.0.10")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.53:53", "[fd00::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %q, want %q", got, want)
	}
	if _, err := upstreams(filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("missing resolv.conf: no error")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cs := clientgo.Wrap(fake.NewClientset())
	for name, cfg := range map[string]Config{
		"domain": {Domain: "bad..domain"},
		"port":   {Port: 70000},
		"addr":   {Addrs: []netip.Addr{{}}},
	} {
		if _, err := New(cfg, cs, log); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := New(Config{}, nil, log); err == nil {
		t.Error("nil client: no error")
	}
	s, err := New(Config{}, cs, log)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Domain != "cluster.local" || s.cfg.Addrs[0].String() != "10.43.0.10" || s.cfg.Port != 53 || s.cfg.Interface != "orch-dns" {
		t.Errorf("defaults: %+v", s.cfg)
	}
}

func TestLogBridge(t *testing.T) {
	var b strings.Builder
	coreLog.Store(slog.New(slog.NewTextHandler(&b, nil)))
	t.Cleanup(func() { coreLog.Store(nil) })
	if _, err := (logBridge{}).Write([]byte("[ERROR] plugin/errors: 2 x. A: boom\n[INFO] hello\n")); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, `level=ERROR msg="coredns: plugin/errors: 2 x. A: boom"`) || !strings.Contains(out, `level=INFO msg="coredns: hello"`) {
		t.Errorf("bridged log:\n%s", out)
	}
}
