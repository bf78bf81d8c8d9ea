package dns

import (
	"bufio"
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"

	// The stock plugins orch's Corefiles may use. Importing a plugin registers
	// it with caddy's (global) plugin registry; only names in directives below
	// can appear in a Corefile. Never import coremain or core/plugin: they pull
	// in every plugin and register command-line flags.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/rewrite"

	"github.com/orch-dev/orch/dns/cluster"
	"github.com/orch-dev/orch/dns/loopguard"
	"github.com/orch-dev/orch/dns/upcache"
)

// directives is the execution order of the plugins orch supports: each wraps
// the ones after it. The stock `loop` plugin is replaced by orch_loop (loop
// calls log.Fatal) and `kubernetes` by orch (see the cluster package). orch
// comes before cache: cluster answers come from memory and must show a new
// Service at once, so only names that fall through (upstream) are cached,
// and cluster queries skip the cache's bookkeeping. The cache is orch's own
// (package upcache, under CoreDNS's name): CoreDNS's links its metrics, which
// turn off the linker's method dead-code elimination for the whole binary.
var directives = []string{
	"bind", "health", "errors", "log", "rewrite", "hosts",
	cluster.Name, upcache.Name, loopguard.Name, "forward",
}

// setupOnce configures CoreDNS's process-wide state the first time a Server is
// built: dnsserver.Directives (a global slice read by caddy at every start and
// reload), the registration of orch's three plugins in caddy's global registry,
// caddy's startup banners, and the standard library logger CoreDNS logs
// through. It is safe because every value set is the same for the whole
// process and nothing else in orch uses CoreDNS; it runs before any instance
// starts, so no start or reload reads the globals while they change.
var setupOnce = sync.OnceValue(func() error {
	if err := dnsserver.SetDirectives(directives); err != nil {
		return err
	}
	plugin.Register(cluster.Name, cluster.Setup)
	plugin.Register(loopguard.Name, loopguard.Setup)
	plugin.Register(upcache.Name, upcache.Setup)
	caddy.Quiet, dnsserver.Quiet = true, true
	log.SetFlags(0)
	log.SetOutput(logBridge{})
	return nil
})

// coreLog is the logger CoreDNS's output goes to: that of the most recently
// started Server (normally the only one).
var coreLog atomic.Pointer[slog.Logger]

// logBridge turns CoreDNS's "[LEVEL] plugin/x: message" lines (written through
// the standard library logger) into slog records.
type logBridge struct{}

func (logBridge) Write(p []byte) (int, error) {
	l := coreLog.Load()
	if l == nil {
		return len(p), nil
	}
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		line := sc.Text()
		level := slog.LevelInfo
		for prefix, lv := range map[string]slog.Level{"[ERROR] ": slog.LevelError, "[WARNING] ": slog.LevelWarn, "[INFO] ": slog.LevelInfo, "[DEBUG] ": slog.LevelDebug} {
			if strings.HasPrefix(line, prefix) {
				level, line = lv, strings.TrimPrefix(line, prefix)
				break
			}
		}
		l.Log(context.Background(), level, "coredns: "+line)
	}
	return len(p), nil
}
