// Package upcache is orch's cache of DNS answers, a CoreDNS plugin that
// takes the place of CoreDNS's own `cache` under the same directive and
// syntax (the options orch supports: TTL, zones, success, denial,
// servfail). It replaces the stock plugin because that one links CoreDNS's
// metrics and, through them, packages that turn off the Go linker's method
// dead-code elimination for the whole orch binary.
//
// It sits after orch's cluster plugin, so it holds upstream answers only:
// positive answers for the smallest TTL of their records, NXDOMAIN and NODATA
// for the TTL their SOA gives (RFC 2308), SERVFAIL for a short fixed time;
// every TTL capped to the configured bounds. Answers served from the cache
// carry the query's ID and question and TTLs lowered by the time spent in
// the cache.
package upcache

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// Name is the plugin's directive in a Corefile (that of CoreDNS's cache).
const Name = "cache"

// Defaults, as CoreDNS's cache documents them.
const (
	// DefaultSuccessTTL is the longest time a positive answer is kept.
	DefaultSuccessTTL = 3600 * time.Second
	// DefaultDenialTTL is the longest time a denial of existence is kept.
	DefaultDenialTTL = 1800 * time.Second
	// DefaultMinTTL is the shortest time an answer is kept.
	DefaultMinTTL = 5 * time.Second
	// DefaultCapacity is the number of answers of each kind kept.
	DefaultCapacity = 9984
	// DefaultServFail is how long a SERVFAIL is kept.
	DefaultServFail = 5 * time.Second
	// MaxServFail is the longest servfail duration accepted.
	MaxServFail = 5 * time.Minute
)

// Policy bounds one kind of cached answer.
type Policy struct {
	// Capacity is the most answers kept (at least 1).
	Capacity int
	// MaxTTL and MinTTL bound how long an answer is kept, whatever its
	// records' TTLs say; whole seconds, 0 < MaxTTL, 0 <= MinTTL <= MaxTTL.
	MaxTTL, MinTTL time.Duration
}

// Config is a cache's configuration.
type Config struct {
	// Zones are the zones whose answers are cached (fully qualified, any
	// case); empty or "." caches every name.
	Zones []string
	// Success is for NOERROR answers with records, Denial for NXDOMAIN and
	// NODATA (and SERVFAIL, which shares its capacity).
	Success, Denial Policy
	// ServFail is how long a SERVFAIL is kept; 0 keeps none.
	ServFail time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// DefaultConfig returns the configuration of a bare `cache` directive.
func DefaultConfig() Config {
	return Config{
		Success:  Policy{Capacity: DefaultCapacity, MaxTTL: DefaultSuccessTTL, MinTTL: DefaultMinTTL},
		Denial:   Policy{Capacity: DefaultCapacity, MaxTTL: DefaultDenialTTL, MinTTL: DefaultMinTTL},
		ServFail: DefaultServFail,
	}
}

// Handler is the cache plugin.
type Handler struct {
	// Next is the plugin whose answers are cached.
	Next plugin.Handler

	zones    plugin.Zones // nil: every name
	success  Policy
	denial   Policy
	servfail time.Duration
	now      func() time.Time
	seed     maphash.Seed
	pcache   *store
	ncache   *store
}

// New returns a cache configured by cfg, or an error naming what is invalid.
func New(cfg Config) (*Handler, error) {
	for _, p := range []struct {
		name string
		Policy
	}{{"success", cfg.Success}, {"denial", cfg.Denial}} {
		switch {
		case p.Capacity < 1:
			return nil, fmt.Errorf("%s capacity %d: want at least 1", p.name, p.Capacity)
		case p.MaxTTL < time.Second || p.MaxTTL%time.Second != 0:
			return nil, fmt.Errorf("%s TTL %v: want a positive number of whole seconds", p.name, p.MaxTTL)
		case p.MinTTL < 0 || p.MinTTL%time.Second != 0:
			return nil, fmt.Errorf("%s minimum TTL %v: want a number of whole seconds", p.name, p.MinTTL)
		case p.MinTTL > p.MaxTTL:
			return nil, fmt.Errorf("%s minimum TTL %v is above its TTL %v", p.name, p.MinTTL, p.MaxTTL)
		}
	}
	if cfg.ServFail < 0 || cfg.ServFail > MaxServFail {
		return nil, fmt.Errorf("servfail %v: want 0 to %v", cfg.ServFail, MaxServFail)
	}
	h := &Handler{
		success:  cfg.Success,
		denial:   cfg.Denial,
		servfail: cfg.ServFail,
		now:      cfg.Now,
		seed:     maphash.MakeSeed(),
		pcache:   newStore(cfg.Success.Capacity),
		ncache:   newStore(cfg.Denial.Capacity),
	}
	if h.now == nil {
		h.now = time.Now
	}
	for _, z := range cfg.Zones {
		z = plugin.Name(z).Normalize()
		if _, ok := dns.IsDomainName(z); !ok {
			return nil, fmt.Errorf("bad zone %q", z)
		}
		if z == "." {
			h.zones = nil
			break
		}
		h.zones = append(h.zones, z)
	}
	return h, nil
}

// Name implements plugin.Handler.
func (h *Handler) Name() string { return Name }

// ServeDNS implements plugin.Handler: it answers from the cache or passes the
// query on and keeps the answer written back.
func (h *Handler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	q := r.Question[0]
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	k := key{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, cd: r.CheckingDisabled}
	if h.zones != nil && h.zones.Matches(k.name) == "" {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	state := request.Request{W: w, Req: r}
	k.do = state.Do()
	hash := maphash.Comparable(h.seed, k)
	now := h.now()
	if e := h.lookup(k, hash, now); e != nil {
		m := e.reply(r, now)
		state.SizeAndDo(m)
		m = state.Scrub(m)
		if err := w.WriteMsg(m); err != nil {
			return dns.RcodeServerFailure, fmt.Errorf("cache: write cached answer for %s: %w", q.Name, err)
		}
		return m.Rcode, nil
	}
	rec := &recorder{ResponseWriter: w, h: h, k: k, q: q}
	rcode, err := plugin.NextOrFailure(h.Name(), h.Next, ctx, rec, r)
	if err == nil && rec.e != nil {
		rec.e.stored = h.now()
		h.put(rec.e, hash)
	}
	return rcode, err
}

// lookup returns the live entry for k, positive first.
func (h *Handler) lookup(k key, hash uint64, now time.Time) *entry {
	if e := h.pcache.get(k, hash, now); e != nil {
		return e
	}
	return h.ncache.get(k, hash, now)
}

// entryFor returns the cache entry for m, the answer to q, or nil if it is
// not cached; in m, TTLs above the entry's lifetime are lowered to it (so
// `cache 30` bounds the TTLs clients see, as in CoreDNS).
func (h *Handler) entryFor(k key, q dns.Question, m *dns.Msg) *entry {
	if m.Truncated || len(m.Question) != 1 || m.Question[0].Qtype != q.Qtype ||
		m.Question[0].Qclass != q.Qclass || !strings.EqualFold(m.Question[0].Name, q.Name) {
		return nil
	}
	var ttl time.Duration
	positive := false
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl, positive = h.success.clamp(minTTL(m)), true
	case m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError:
		soa := findSOA(m.Ns)
		if soa == nil {
			return nil
		}
		ttl = h.denial.clamp(min(soa.Hdr.Ttl, soa.Minttl))
	case m.Rcode == dns.RcodeServerFailure:
		ttl = h.servfail
	default:
		return nil
	}
	if ttl <= 0 {
		return nil
	}
	secs := uint32(ttl / time.Second)
	stored := &dns.Msg{MsgHdr: m.MsgHdr, Question: []dns.Question{{Name: k.name, Qtype: q.Qtype, Qclass: q.Qclass}}}
	stored.Id = 0
	for _, sec := range []struct {
		from []dns.RR
		to   *[]dns.RR
	}{{m.Answer, &stored.Answer}, {m.Ns, &stored.Ns}, {m.Extra, &stored.Extra}} {
		for _, rr := range sec.from {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			rr.Header().Ttl = min(rr.Header().Ttl, secs)
			*sec.to = append(*sec.to, dns.Copy(rr))
		}
	}
	return &entry{key: k, msg: stored, ttl: ttl, positive: positive}
}

// put stores e (whose key hashes to hash) in the store of its kind.
func (h *Handler) put(e *entry, hash uint64) {
	if e.positive {
		h.pcache.put(e, hash)
		h.ncache.delete(e.key, hash)
	} else {
		h.ncache.put(e, hash)
		h.pcache.delete(e.key, hash)
	}
}

// clamp bounds a record TTL (seconds) to the policy's.
func (p Policy) clamp(ttl uint32) time.Duration {
	d := time.Duration(ttl) * time.Second
	return min(max(d, p.MinTTL), p.MaxTTL)
}

// minTTL is the smallest TTL of m's records (OPT aside).
func minTTL(m *dns.Msg) uint32 {
	ttl := ^uint32(0)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				ttl = min(ttl, h.Ttl)
			}
		}
	}
	return ttl
}

func findSOA(rrs []dns.RR) *dns.SOA {
	for _, rr := range rrs {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

// reply builds the answer to r from e at now: the cached message with r's
// ID, flags and question (in r's case, as are the owner names equal to it),
// not authoritative, and every TTL lowered by the time spent in the cache.
func (e *entry) reply(r *dns.Msg, now time.Time) *dns.Msg {
	m := e.msg.Copy()
	m.Id = r.Id
	m.Response = true
	m.Opcode = r.Opcode
	m.RecursionDesired = r.RecursionDesired
	m.CheckingDisabled = r.CheckingDisabled
	m.Authoritative = false
	m.Question[0] = r.Question[0]
	age := max(now.Sub(e.stored), 0) // an injected clock may step back
	// The age in whole seconds, rounded up. Stored TTLs are at most the
	// entry's lifetime (see entryFor), so each TTL less the age is at most
	// what the entry has left.
	elapsed := uint32((age + time.Second - 1) / time.Second)
	qname := r.Question[0].Name
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Ttl > elapsed {
				h.Ttl -= elapsed
			} else {
				h.Ttl = 0
			}
			if h.Name != qname && strings.EqualFold(h.Name, e.key.name) {
				h.Name = qname
			}
		}
	}
	return m
}

// recorder passes the next plugin's answer on, its TTLs bounded, and keeps
// the entry for it: a copy, as later writers (rewrite's for one) may change
// the message they are given.
type recorder struct {
	dns.ResponseWriter
	h *Handler
	k key
	q dns.Question
	e *entry
}

// WriteMsg implements dns.ResponseWriter.
func (r *recorder) WriteMsg(m *dns.Msg) error {
	r.e = r.h.entryFor(r.k, r.q, m)
	return r.ResponseWriter.WriteMsg(m)
}
