// Package loopguard is orch's forwarding-loop detector, a CoreDNS plugin
// (`orch_loop ID`). Like CoreDNS's loop plugin it sends one HINFO query for a
// random name to its own server at startup; when that query comes back more
// than twice, forwarding points back at this server. Unlike the stock plugin,
// which calls log.Fatal and ends the process, it answers the probe with
// SERVFAIL (breaking the loop) and reports the loop to the orch DNS server
// that registered the Guard.
package loopguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/orch-dev/orch/dns/internal/hook"
)

// Name is the plugin's directive.
const Name = "orch_loop"

// ErrLoop is reported when forwarded queries come back to the server.
var ErrLoop = fmt.Errorf("dns: forwarding loop: the upstream resolvers forward back to this server")

// Guard receives loop reports; a dns.Server registers one per instance.
type Guard struct {
	// OnLoop is called once per detection with an error wrapping ErrLoop.
	OnLoop func(error)
	// Window is how long after startup probes are watched (default 10s).
	Window time.Duration
	// Exchange sends the probe to the server; nil uses a plain UDP client.
	// (A server serving inside another network namespace dials from there.)
	Exchange func(m *dns.Msg, addr string) (*dns.Msg, error)
}

type handler struct {
	next     plugin.Handler
	guard    *Guard
	qname    string
	seen     atomic.Int32
	disabled atomic.Bool
	once     sync.Once
}

// Setup parses `orch_loop ID` and adds the plugin. The dns package registers
// it with CoreDNS.
func Setup(c *caddy.Controller) error {
	var g *Guard
	for c.Next() {
		if g != nil {
			return plugin.Error(Name, plugin.ErrOnce)
		}
		args := c.RemainingArgs()
		if len(args) != 1 {
			return plugin.Error(Name, c.ArgErr())
		}
		var err error
		if g, err = hook.Lookup[*Guard](args[0]); err != nil {
			return plugin.Error(Name, err)
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails
	h := &handler{guard: g, qname: "orch-loop-" + hex.EncodeToString(b[:]) + "."}
	cfg := dnsserver.GetConfig(c)
	cfg.AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.next = next
		return h
	})
	stop := make(chan struct{})
	c.OnStartup(func() error {
		host := "127.0.0.1"
		if len(cfg.ListenHosts) > 0 && cfg.ListenHosts[0] != "" {
			host = cfg.ListenHosts[0]
		}
		go h.probe(net.JoinHostPort(host, cfg.Port), stop)
		return nil
	})
	c.OnShutdown(func() error {
		close(stop)
		return nil
	})
	return nil
}

// probe sends the HINFO query until one answer arrives, then watches for a
// while longer (a loop makes copies keep arriving) and disables itself.
func (h *handler) probe(addr string, stop <-chan struct{}) {
	window := h.guard.Window
	if window <= 0 {
		window = 10 * time.Second
	}
	deadline := time.After(window)
	exchange := h.guard.Exchange
	if exchange == nil {
		client := &dns.Client{Timeout: 2 * time.Second}
		exchange = func(m *dns.Msg, addr string) (*dns.Msg, error) {
			r, _, err := client.Exchange(m, addr)
			return r, err
		}
	}
	m := new(dns.Msg)
	m.SetQuestion(h.qname, dns.TypeHINFO)
	for answered := false; !answered; {
		if _, err := exchange(m, addr); err == nil {
			answered = true
		}
		select {
		case <-stop:
			h.disabled.Store(true)
			return
		case <-deadline:
			h.disabled.Store(true)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	select {
	case <-stop:
	case <-deadline:
	case <-time.After(2 * time.Second):
	}
	h.disabled.Store(true)
}

func (h *handler) Name() string { return Name }

func (h *handler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if h.disabled.Load() || len(r.Question) != 1 || r.Question[0].Qtype != dns.TypeHINFO || !equalFold(r.Question[0].Name, h.qname) {
		return plugin.NextOrFailure(h.Name(), h.next, ctx, w, r)
	}
	if h.seen.Add(1) > 2 {
		h.once.Do(func() {
			if h.guard.OnLoop != nil {
				h.guard.OnLoop(fmt.Errorf("%w (probe %s seen %d times, from %s)", ErrLoop, h.qname, h.seen.Load(), w.RemoteAddr()))
			}
		})
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		return dns.RcodeServerFailure, w.WriteMsg(m)
	}
	return plugin.NextOrFailure(h.Name(), h.next, ctx, w, r)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
