package cluster

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/upstream"
	"github.com/miekg/dns"

	"github.com/orch-dev/orch/dns/internal/hook"
)

// Setup parses the `orch` directive and adds the plugin to the server block:
//
//	orch ID ZONE [REVERSE_ZONES...] {
//	    ns ADDRESS...
//	    ttl SECONDS
//	}
//
// ID names the *Index a running dns.Server registered with the hook table.
// The dns package registers Setup with CoreDNS.
func Setup(c *caddy.Controller) error {
	h, err := parse(c)
	if err != nil {
		return plugin.Error(Name, err)
	}
	h.Upstream = upstream.New()
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

func parse(c *caddy.Controller) (*Handler, error) {
	var h *Handler
	for c.Next() {
		if h != nil {
			return nil, c.Err("orch may appear once per server block")
		}
		args := c.RemainingArgs()
		if len(args) < 2 {
			return nil, c.ArgErr()
		}
		index, err := hook.Lookup[*Index](args[0])
		if err != nil {
			return nil, err
		}
		zone, ok := normZone(args[1])
		if !ok {
			return nil, c.Errf("bad zone %q", args[1])
		}
		h = &Handler{Zone: zone, TTL: DefaultTTL, Index: index}
		for _, z := range args[2:] {
			rz, ok := normZone(z)
			if !ok {
				return nil, c.Errf("bad reverse zone %q", z)
			}
			h.ReverseZones = append(h.ReverseZones, rz)
		}
		for c.NextBlock() {
			switch c.Val() {
			case "ns":
				vals := c.RemainingArgs()
				if len(vals) == 0 {
					return nil, c.ArgErr()
				}
				for _, v := range vals {
					a, err := netip.ParseAddr(v)
					if err != nil {
						return nil, c.Errf("ns: %v", err)
					}
					h.NS = append(h.NS, a.Unmap())
				}
			case "ttl":
				vals := c.RemainingArgs()
				if len(vals) != 1 {
					return nil, c.ArgErr()
				}
				ttl, err := strconv.ParseUint(vals[0], 10, 32)
				if err != nil || ttl > 3600 {
					return nil, c.Errf("ttl %q: want 0..3600 seconds", vals[0])
				}
				h.TTL = uint32(ttl)
			default:
				return nil, c.Errf("unknown property %q", c.Val())
			}
		}
	}
	if h == nil {
		return nil, fmt.Errorf("no orch directive")
	}
	return h, nil
}

func normZone(z string) (string, bool) {
	z = dns.CanonicalName(z)
	if _, ok := dns.IsDomainName(z); !ok || z == "." {
		return "", false
	}
	return z, true
}
