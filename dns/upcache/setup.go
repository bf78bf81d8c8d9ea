package upcache

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
)

// Setup parses the `cache` directive and adds the plugin to the server block:
//
//	cache [TTL] [ZONES...] {
//	    success CAPACITY [TTL [MINTTL]]
//	    denial CAPACITY [TTL [MINTTL]]
//	    servfail DURATION
//	}
//
// The dns package registers Setup with CoreDNS under Name.
func Setup(c *caddy.Controller) error {
	cfg, err := parse(c)
	if err != nil {
		return plugin.Error(Name, err)
	}
	h, err := New(cfg)
	if err != nil {
		return plugin.Error(Name, err)
	}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

// parse reads the directive's configuration; zones default to the server
// block's.
func parse(c *caddy.Controller) (Config, error) {
	cfg := DefaultConfig()
	seen := false
	for c.Next() {
		if seen {
			return Config{}, plugin.ErrOnce
		}
		seen = true
		args := c.RemainingArgs()
		if len(args) > 0 && looksLikeTTL(args[0]) {
			ttl, err := parseTTL(args[0], 1)
			if err != nil {
				return Config{}, c.Errf("TTL: %v", err)
			}
			cfg.Success.MaxTTL, cfg.Denial.MaxTTL = ttl, ttl
			cfg.Success.MinTTL = min(cfg.Success.MinTTL, ttl)
			cfg.Denial.MinTTL = min(cfg.Denial.MinTTL, ttl)
			args = args[1:]
		}
		for _, z := range args {
			if len(plugin.Host(z).NormalizeExact()) == 0 {
				return Config{}, c.Errf("bad zone %q", z)
			}
		}
		cfg.Zones = plugin.OriginsFromArgsOrServerBlock(args, c.ServerBlockKeys)
		given := map[string]bool{}
		for c.NextBlock() {
			opt := c.Val()
			if given[opt] {
				return Config{}, c.Errf("%s given twice", opt)
			}
			given[opt] = true
			var err error
			switch opt {
			case "success":
				err = parsePolicy(c, &cfg.Success)
			case "denial":
				err = parsePolicy(c, &cfg.Denial)
			case "servfail":
				err = parseServFail(c, &cfg.ServFail)
			case "prefetch", "serve_stale", "keepttl", "disable": // CoreDNS's, not orch's
				err = c.Errf("option %q is not supported by orch's cache (it has success, denial and servfail)", opt)
			default:
				err = c.Errf("unknown option %q (orch's cache has success, denial and servfail)", opt)
			}
			if err != nil {
				return Config{}, err
			}
		}
	}
	return cfg, nil
}

// parsePolicy reads `success|denial CAPACITY [TTL [MINTTL]]`.
func parsePolicy(c *caddy.Controller, p *Policy) error {
	opt := c.Val()
	args := c.RemainingArgs()
	if len(args) < 1 || len(args) > 3 {
		return c.Errf("%s: want CAPACITY [TTL [MINTTL]], got %d arguments", opt, len(args))
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return c.Errf("%s: capacity %q: want a positive integer", opt, args[0])
	}
	p.Capacity = n
	if len(args) > 1 {
		ttl, err := parseTTL(args[1], 1)
		if err != nil {
			return c.Errf("%s: TTL: %v", opt, err)
		}
		p.MaxTTL = ttl
		p.MinTTL = min(p.MinTTL, ttl)
	}
	if len(args) > 2 {
		minTTL, err := parseTTL(args[2], 0)
		if err != nil {
			return c.Errf("%s: MINTTL: %v", opt, err)
		}
		if minTTL > p.MaxTTL {
			return c.Errf("%s: MINTTL %s is above TTL %d", opt, args[2], p.MaxTTL/time.Second)
		}
		p.MinTTL = minTTL
	}
	return nil
}

// parseServFail reads `servfail DURATION`.
func parseServFail(c *caddy.Controller, d *time.Duration) error {
	args := c.RemainingArgs()
	if len(args) != 1 {
		return c.Errf("servfail: want one DURATION, got %d arguments", len(args))
	}
	v, err := time.ParseDuration(args[0])
	if err != nil || v < 0 || v > MaxServFail {
		return c.Errf("servfail: duration %q: want 0 (off) to %v, e.g. 10s", args[0], MaxServFail)
	}
	*d = v
	return nil
}

// looksLikeTTL reports whether the directive's first argument is meant as a
// TTL (a number, maybe a malformed one) rather than a zone.
func looksLikeTTL(s string) bool {
	return s != "" && (s[0] == '-' || s[0] == '+' || ('0' <= s[0] && s[0] <= '9')) && !strings.Contains(s, ".")
}

// parseTTL reads a TTL in whole seconds, at least least.
func parseTTL(s string, least int64) (time.Duration, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number of seconds", s)
	}
	if n < least || n > math.MaxInt32 {
		return 0, fmt.Errorf("%d seconds: want %d to %d", n, least, math.MaxInt32)
	}
	return time.Duration(n) * time.Second, nil
}
