package upcache

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
)

func TestParse(t *testing.T) {
	def := DefaultConfig()
	for _, tc := range []struct {
		in   string
		keys []string // server block keys
		want func(c *Config)
	}{
		{in: "cache", want: func(c *Config) { c.Zones = []string{} }},
		{in: "cache", keys: []string{".:53"}, want: func(c *Config) { c.Zones = []string{"."} }},
		{in: "cache 30", want: func(c *Config) {
			c.Zones = []string{}
			c.Success.MaxTTL, c.Denial.MaxTTL = 30*time.Second, 30*time.Second
		}},
		{in: "cache 3", want: func(c *Config) {
			c.Zones = []string{}
			c.Success.MaxTTL, c.Denial.MaxTTL = 3*time.Second, 3*time.Second
			c.Success.MinTTL, c.Denial.MinTTL = 3*time.Second, 3*time.Second
		}},
		{in: "cache 300 Example.ORG 10.in-addr.arpa.", keys: []string{".:53"}, want: func(c *Config) {
			c.Zones = []string{"example.org.", "10.in-addr.arpa."}
			c.Success.MaxTTL, c.Denial.MaxTTL = 300*time.Second, 300*time.Second
		}},
		{in: "cache example.org", want: func(c *Config) { c.Zones = []string{"example.org."} }},
		{in: `cache 60 {
			success 5000
			denial 2500 120 10
			servfail 0
		}`, want: func(c *Config) {
			c.Zones = []string{}
			c.Success = Policy{Capacity: 5000, MaxTTL: 60 * time.Second, MinTTL: 5 * time.Second}
			c.Denial = Policy{Capacity: 2500, MaxTTL: 120 * time.Second, MinTTL: 10 * time.Second}
			c.ServFail = 0
		}},
		{in: `cache {
			success 10 30
			servfail 1m
		}`, want: func(c *Config) {
			c.Zones = []string{}
			c.Success = Policy{Capacity: 10, MaxTTL: 30 * time.Second, MinTTL: 5 * time.Second}
			c.ServFail = time.Minute
		}},
		{in: "cache {\n success 10 2 \n}", want: func(c *Config) {
			c.Zones = []string{}
			c.Success = Policy{Capacity: 10, MaxTTL: 2 * time.Second, MinTTL: 2 * time.Second}
		}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			c := caddy.NewTestController("dns", tc.in)
			c.ServerBlockKeys = tc.keys
			got, err := parse(c)
			if err != nil {
				t.Fatal(err)
			}
			want := def
			tc.want(&want)
			if !slices.Equal(got.Zones, want.Zones) || got.Success != want.Success || got.Denial != want.Denial || got.ServFail != want.ServFail {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			if _, err := New(got); err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"cache 0", "TTL: 0 seconds: want 1 to"},
		{"cache -5", "TTL: -5 seconds"},
		{"cache 30s", `TTL: "30s" is not a whole number of seconds`},
		{"cache 99999999999", "TTL: 99999999999 seconds"},
		{"cache {\n prefetch 10\n}", `option "prefetch" is not supported by orch's cache`},
		{"cache {\n serve_stale\n}", `option "serve_stale" is not supported by orch's cache`},
		{"cache {\n keepttl\n}", `option "keepttl" is not supported`},
		{"cache {\n disable success\n}", `option "disable" is not supported`},
		{"cache {\n sucess 10\n}", `unknown option "sucess"`},
		{"cache {\n success\n}", "success: want CAPACITY [TTL [MINTTL]], got 0 arguments"},
		{"cache {\n success 1 2 3 4\n}", "got 4 arguments"},
		{"cache {\n success 0\n}", `success: capacity "0": want a positive integer`},
		{"cache {\n denial lots\n}", `denial: capacity "lots"`},
		{"cache {\n denial 10 0\n}", "denial: TTL: 0 seconds"},
		{"cache {\n denial 10 ten\n}", `denial: TTL: "ten" is not a whole number`},
		{"cache {\n success 10 30 60\n}", "success: MINTTL 60 is above TTL 30"},
		{"cache {\n success 10 30 -1\n}", "success: MINTTL: -1 seconds"},
		{"cache {\n servfail\n}", "servfail: want one DURATION"},
		{"cache {\n servfail 5\n}", `servfail: duration "5"`},
		{"cache {\n servfail 10m\n}", `servfail: duration "10m": want 0 (off) to 5m0s`},
		{"cache {\n servfail -1s\n}", `servfail: duration "-1s"`},
		{"cache {\n success 10\n success 20\n}", "success given twice"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			err := Setup(caddy.NewTestController("dns", tc.in))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "plugin/cache: ") {
				t.Fatalf("error %q, want plugin/cache: ... %q", err, tc.want)
			}
		})
	}
	err := Setup(caddy.NewTestController("dns", "cache\ncache 30"))
	if !errors.Is(err, plugin.ErrOnce) {
		t.Fatalf("cache twice: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"capacity":      func(c *Config) { c.Denial.Capacity = 0 },
		"max TTL":       func(c *Config) { c.Success.MaxTTL = 0 },
		"fractional":    func(c *Config) { c.Success.MaxTTL = 1500 * time.Millisecond },
		"min above max": func(c *Config) { c.Denial.MinTTL = c.Denial.MaxTTL + time.Second },
		"servfail":      func(c *Config) { c.ServFail = time.Hour },
		"zone":          func(c *Config) { c.Zones = []string{"a..b"} },
	} {
		cfg := DefaultConfig()
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestSetupAddsPlugin checks Setup chains the cache into the server block.
func TestSetupAddsPlugin(t *testing.T) {
	c := caddy.NewTestController("dns", "cache 30 example.org")
	if err := Setup(c); err != nil {
		t.Fatal(err)
	}
	plugins := dnsserver.GetConfig(c).Plugin
	if len(plugins) != 1 {
		t.Fatalf("%d plugins added", len(plugins))
	}
	h, ok := plugins[0](nil).(*Handler)
	if !ok {
		t.Fatalf("added %T", plugins[0](nil))
	}
	if h.success.MaxTTL != 30*time.Second || !slices.Equal([]string(h.zones), []string{"example.org."}) {
		t.Fatalf("handler %+v", h)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"cache", "cache 30", "cache 30 example.org {\n success 10 20 5\n denial 5\n servfail 2s\n}", "cache {\n prefetch 1\n}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := parse(caddy.NewTestController("dns", in))
		if err != nil {
			return
		}
		h, err := New(cfg)
		if err != nil {
			// parse's checks and New's agree except on zones, which
			// parse hands over as CoreDNS normalised them.
			for _, z := range cfg.Zones {
				if strings.Contains(err.Error(), z) {
					return
				}
			}
			t.Fatalf("parse accepted %q, New rejects it: %v", in, err)
		}
		if h.success.MinTTL > h.success.MaxTTL || h.denial.MinTTL > h.denial.MaxTTL {
			t.Fatalf("%q: bounds %+v %+v", in, h.success, h.denial)
		}
	})
}
