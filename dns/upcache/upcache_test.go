package upcache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// upstream is the next plugin: it answers with reply (built for the query)
// and counts the queries it sees.
type upstream struct {
	calls  atomic.Int32
	reply  func(r *dns.Msg) *dns.Msg
	err    error // returned without writing
	silent bool  // return SERVFAIL without writing
}

func (u *upstream) Name() string { return "upstream" }

func (u *upstream) ServeDNS(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	u.calls.Add(1)
	if u.err != nil {
		return dns.RcodeServerFailure, u.err
	}
	if u.silent {
		return dns.RcodeServerFailure, nil
	}
	m := u.reply(r)
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	return m.Rcode, nil
}

// answer replies NOERROR with rrs (owner names as the upstream writes them:
// "$" is replaced by the query's name).
func answer(rrs ...string) func(r *dns.Msg) *dns.Msg {
	return func(r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(1232, o.Do())
		}
		for _, s := range rrs {
			m.Answer = append(m.Answer, mustRR(strings.ReplaceAll(s, "$", r.Question[0].Name)))
		}
		return m
	}
}

// denial replies rcode with soa (if not empty) in the authority section.
func denial(rcode int, soa string) func(r *dns.Msg) *dns.Msg {
	return func(r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		if soa != "" {
			m.Ns = []dns.RR{mustRR(soa)}
		}
		return m
	}
}

func newHandler(t testing.TB, cfg Config, u *upstream) (*Handler, *clock) {
	t.Helper()
	c := newClock()
	cfg.Now = c.now
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Next = u
	return h, c
}

type query struct {
	name   string
	qtype  uint16
	do, cd bool
	edns   uint16 // UDP size advertised; 0: no OPT unless do
	tcp    bool
	id     uint16
}

func ask(t testing.TB, h *Handler, q query) *dns.Msg {
	t.Helper()
	r := new(dns.Msg)
	if q.qtype == 0 {
		q.qtype = dns.TypeA
	}
	r.SetQuestion(q.name, q.qtype)
	r.Id = q.id
	r.CheckingDisabled = q.cd
	if q.do || q.edns != 0 {
		r.SetEdns0(max(q.edns, 512), q.do)
	}
	w := dnstest.NewRecorder(&test.ResponseWriter{TCP: q.tcp})
	if _, err := h.ServeDNS(context.Background(), w, r); err != nil {
		t.Fatalf("%s: %v", q.name, err)
	}
	if w.Msg == nil {
		t.Fatalf("%s: no answer written", q.name)
	}
	return w.Msg
}

func ttls(m *dns.Msg) []uint32 {
	var out []uint32
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				out = append(out, rr.Header().Ttl)
			}
		}
	}
	return out
}

func wantCalls(t *testing.T, u *upstream, n int32) {
	t.Helper()
	if got := u.calls.Load(); got != n {
		t.Fatalf("upstream saw %d queries, want %d", got, n)
	}
}

func TestPositiveTTLDecay(t *testing.T) {
	u := &upstream{reply: answer("$ 30 IN A 192.0.2.1", "$ 60 IN A 192.0.2.2")}
	h, c := newHandler(t, DefaultConfig(), u)
	q := query{name: "example.org."}
	// The answer passed on has its TTLs capped to the entry's lifetime.
	if got := ttls(ask(t, h, q)); fmt.Sprint(got) != "[30 30]" {
		t.Fatalf("first answer TTLs %v, want [30 30]", got)
	}
	c.advance(10500 * time.Millisecond)
	m := ask(t, h, q)
	wantCalls(t, u, 1)
	// 10.5s in the cache: 19.5s left, so no TTL may exceed 19.
	if got := ttls(m); fmt.Sprint(got) != "[19 19]" {
		t.Fatalf("cached TTLs %v, want [19 19]", got)
	}
	if m.Authoritative {
		t.Error("cached answer is authoritative")
	}
	c.advance(19 * time.Second) // 29.5s
	if got := ttls(ask(t, h, q)); fmt.Sprint(got) != "[0 0]" {
		t.Fatalf("TTLs at 29.5s %v, want [0 0]", got)
	}
	wantCalls(t, u, 1)
	c.advance(500 * time.Millisecond) // 30s: expired
	if got := ttls(ask(t, h, q)); fmt.Sprint(got) != "[30 30]" {
		t.Fatalf("answer after expiry TTLs %v", got)
	}
	wantCalls(t, u, 2)
}

func TestClockStepsBack(t *testing.T) {
	u := &upstream{reply: answer("$ 30 IN A 192.0.2.1")}
	h, c := newHandler(t, DefaultConfig(), u)
	ask(t, h, query{name: "example.org."})
	c.advance(-time.Hour)
	if got := ttls(ask(t, h, query{name: "example.org."})); fmt.Sprint(got) != "[30]" {
		t.Fatalf("TTLs %v after the clock stepped back, want [30]", got)
	}
	wantCalls(t, u, 1)
}

// TestLatestKindWins stores a positive and then a negative answer for one
// key (as two concurrent misses may): the later one is served.
func TestLatestKindWins(t *testing.T) {
	h, c := newHandler(t, DefaultConfig(), &upstream{})
	r := new(dns.Msg)
	r.SetQuestion("flip.example.org.", dns.TypeA)
	q := r.Question[0]
	k := key{name: q.Name, qtype: q.Qtype, qclass: q.Qclass}
	hash := hashOf(h, k)
	for i, m := range []*dns.Msg{answer("$ 300 IN A 192.0.2.1")(r), denial(dns.RcodeNameError, soa)(r), answer("$ 300 IN A 192.0.2.2")(r)} {
		e := h.entryFor(k, q, m)
		if e == nil {
			t.Fatalf("answer %d not cacheable", i)
		}
		e.stored = c.now()
		h.put(e, hash)
		got := h.lookup(k, hash, c.now())
		if got != e {
			t.Fatalf("after answer %d: served %v", i, got.msg)
		}
		if n := h.pcache.len() + h.ncache.len(); n != 1 {
			t.Fatalf("after answer %d: %d entries", i, n)
		}
	}
}

func TestExpiredEntryDropped(t *testing.T) {
	u := &upstream{reply: answer("$ 10 IN A 192.0.2.1")}
	h, c := newHandler(t, DefaultConfig(), u)
	h.Next = u
	k := key{name: "example.org.", qtype: dns.TypeA, qclass: dns.ClassINET}
	ask(t, h, query{name: "example.org."})
	if h.pcache.len() != 1 {
		t.Fatalf("%d entries, want 1", h.pcache.len())
	}
	c.advance(10 * time.Second)
	if e := h.lookup(k, hashOf(h, k), c.now()); e != nil {
		t.Fatal("expired entry returned")
	}
	if n := h.pcache.len(); n != 0 {
		t.Fatalf("%d entries after finding the expired one, want 0", n)
	}
}

func hashOf(h *Handler, k key) uint64 {
	return maphash.Comparable(h.seed, k)
}

func TestTTLBounds(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Success.MaxTTL = 100 * time.Second
	cfg.Success.MinTTL = 5 * time.Second

	long := &upstream{reply: answer("$ 7200 IN A 192.0.2.1")}
	h, c := newHandler(t, cfg, long)
	if got := ttls(ask(t, h, query{name: "long.example."})); fmt.Sprint(got) != "[100]" {
		t.Fatalf("first answer TTL %v, want [100]", got)
	}
	c.advance(40 * time.Second)
	if got := ttls(ask(t, h, query{name: "long.example."})); fmt.Sprint(got) != "[60]" {
		t.Fatalf("TTL capped at 100s after 40s: %v, want [60]", got)
	}
	c.advance(60 * time.Second)
	ask(t, h, query{name: "long.example."})
	wantCalls(t, long, 2)

	short := &upstream{reply: answer("$ 1 IN A 192.0.2.1")}
	h, c = newHandler(t, cfg, short)
	if got := ttls(ask(t, h, query{name: "short.example."})); fmt.Sprint(got) != "[1]" {
		t.Fatalf("first answer TTL %v, want [1] (never raised)", got)
	}
	c.advance(3 * time.Second)
	if got := ttls(ask(t, h, query{name: "short.example."})); fmt.Sprint(got) != "[0]" {
		t.Fatalf("record TTL 1 after 3s: %v, want [0]", got)
	}
	wantCalls(t, short, 1) // kept for MINTTL
	c.advance(2 * time.Second)
	ask(t, h, query{name: "short.example."})
	wantCalls(t, short, 2)

	zero := &upstream{reply: answer("$ 0 IN A 192.0.2.1")}
	cfg.Success.MinTTL = 0
	h, _ = newHandler(t, cfg, zero)
	ask(t, h, query{name: "zero.example."})
	ask(t, h, query{name: "zero.example."})
	wantCalls(t, zero, 2) // TTL 0 and no minimum: not cached
}

const soa = "example.org. 300 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 60"

func TestNegative(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rcode  int
		soa    string
		cached time.Duration // 0: not cached
	}{
		{"nxdomain with SOA", dns.RcodeNameError, soa, 60 * time.Second},
		{"nodata with SOA", dns.RcodeSuccess, soa, 60 * time.Second},
		{"SOA TTL below its minimum", dns.RcodeNameError, "example.org. 20 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 60", 20 * time.Second},
		{"nxdomain without SOA", dns.RcodeNameError, "", 0},
		{"referral (no SOA)", dns.RcodeSuccess, "", 0},
		{"refused", dns.RcodeRefused, soa, 0},
		{"not implemented", dns.RcodeNotImplemented, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &upstream{reply: denial(tc.rcode, tc.soa)}
			h, c := newHandler(t, DefaultConfig(), u)
			q := query{name: "nope.example.org."}
			first := ask(t, h, q)
			if first.Rcode != tc.rcode {
				t.Fatalf("rcode %d, want %d", first.Rcode, tc.rcode)
			}
			m := ask(t, h, q)
			if tc.cached == 0 {
				wantCalls(t, u, 2)
				return
			}
			wantCalls(t, u, 1)
			if m.Rcode != tc.rcode || len(m.Ns) != 1 {
				t.Fatalf("cached answer %v", m)
			}
			c.advance(tc.cached - time.Second)
			m = ask(t, h, q)
			wantCalls(t, u, 1)
			if got := ttls(m); fmt.Sprint(got) != "[1]" {
				t.Fatalf("SOA TTL 1s before expiry: %v", got)
			}
			c.advance(time.Second)
			ask(t, h, q)
			wantCalls(t, u, 2)
		})
	}
}

func TestDenialTTLBounds(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Denial.MaxTTL = 10 * time.Second
	u := &upstream{reply: denial(dns.RcodeNameError, soa)}
	h, c := newHandler(t, cfg, u)
	ask(t, h, query{name: "nope.example.org."})
	c.advance(10 * time.Second)
	ask(t, h, query{name: "nope.example.org."})
	wantCalls(t, u, 2)
}

func TestServFail(t *testing.T) {
	u := &upstream{reply: denial(dns.RcodeServerFailure, "")}
	h, c := newHandler(t, DefaultConfig(), u)
	q := query{name: "broken.example."}
	ask(t, h, q)
	c.advance(4 * time.Second)
	if m := ask(t, h, q); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("cached rcode %d", m.Rcode)
	}
	wantCalls(t, u, 1)
	c.advance(time.Second)
	ask(t, h, q)
	wantCalls(t, u, 2)

	cfg := DefaultConfig()
	cfg.ServFail = 0
	u = &upstream{reply: denial(dns.RcodeServerFailure, "")}
	h, _ = newHandler(t, cfg, u)
	ask(t, h, q)
	ask(t, h, q)
	wantCalls(t, u, 2)
}

func TestNotCached(t *testing.T) {
	t.Run("truncated", func(t *testing.T) {
		u := &upstream{reply: func(r *dns.Msg) *dns.Msg {
			m := answer("$ 300 IN A 192.0.2.1")(r)
			m.Truncated = true
			return m
		}}
		h, _ := newHandler(t, DefaultConfig(), u)
		ask(t, h, query{name: "big.example."})
		ask(t, h, query{name: "big.example."})
		wantCalls(t, u, 2)
	})
	t.Run("answer to another question", func(t *testing.T) {
		u := &upstream{reply: func(r *dns.Msg) *dns.Msg {
			m := answer("other.example. 300 IN A 192.0.2.1")(r)
			m.Question[0].Name = "other.example."
			return m
		}}
		h, _ := newHandler(t, DefaultConfig(), u)
		ask(t, h, query{name: "asked.example."})
		ask(t, h, query{name: "asked.example."})
		wantCalls(t, u, 2)
	})
	t.Run("next errored", func(t *testing.T) {
		u := &upstream{err: errors.New("upstream down")}
		h, _ := newHandler(t, DefaultConfig(), u)
		for range 2 {
			r := new(dns.Msg)
			r.SetQuestion("down.example.", dns.TypeA)
			w := dnstest.NewRecorder(&test.ResponseWriter{})
			if _, err := h.ServeDNS(context.Background(), w, r); err == nil {
				t.Fatal("error not passed on")
			}
		}
		wantCalls(t, u, 2)
		if h.pcache.len()+h.ncache.len() != 0 {
			t.Fatal("something cached")
		}
	})
	t.Run("next wrote nothing", func(t *testing.T) {
		u := &upstream{silent: true}
		h, _ := newHandler(t, DefaultConfig(), u)
		for range 2 {
			r := new(dns.Msg)
			r.SetQuestion("silent.example.", dns.TypeA)
			w := dnstest.NewRecorder(&test.ResponseWriter{})
			if rcode, _ := h.ServeDNS(context.Background(), w, r); rcode != dns.RcodeServerFailure || w.Msg != nil {
				t.Fatalf("rcode %d, written %v", rcode, w.Msg)
			}
		}
		wantCalls(t, u, 2)
	})
	t.Run("outside the zones", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Zones = []string{"Example.ORG.", "example.net."}
		u := &upstream{reply: answer("$ 300 IN A 192.0.2.1")}
		h, _ := newHandler(t, cfg, u)
		ask(t, h, query{name: "a.example.com."})
		ask(t, h, query{name: "a.example.com."})
		wantCalls(t, u, 2)
		ask(t, h, query{name: "a.example.org."})
		ask(t, h, query{name: "a.example.org."})
		ask(t, h, query{name: "example.net."})
		ask(t, h, query{name: "example.net."})
		wantCalls(t, u, 4)
	})
	t.Run("zone transfer", func(t *testing.T) {
		u := &upstream{reply: answer(soa)}
		h, _ := newHandler(t, DefaultConfig(), u)
		ask(t, h, query{name: "example.org.", qtype: dns.TypeAXFR})
		ask(t, h, query{name: "example.org.", qtype: dns.TypeAXFR})
		wantCalls(t, u, 2)
	})
}

func TestKeyBits(t *testing.T) {
	u := &upstream{reply: func(r *dns.Msg) *dns.Msg {
		// The answer tells which bits the query had.
		ip := "192.0.2.0"
		if o := r.IsEdns0(); o != nil && o.Do() {
			ip = "192.0.2.1"
		}
		if r.CheckingDisabled {
			ip = strings.Replace(ip, "192.0.2.", "192.0.3.", 1)
		}
		return answer("$ 300 IN A " + ip)(r)
	}}
	h, _ := newHandler(t, DefaultConfig(), u)
	want := map[query]string{
		{name: "example.org."}:                     "192.0.2.0",
		{name: "example.org.", do: true}:           "192.0.2.1",
		{name: "example.org.", cd: true}:           "192.0.3.0",
		{name: "example.org.", do: true, cd: true}: "192.0.3.1",
		{name: "example.org.", edns: 1232}:         "192.0.2.0", // EDNS without DO shares the plain entry
	}
	for round := range 2 {
		for q, ip := range want {
			m := ask(t, h, q)
			if got := m.Answer[0].(*dns.A).A.String(); got != ip {
				t.Errorf("round %d, %+v: answer %s, want %s", round, q, got, ip)
			}
			if m.CheckingDisabled != q.cd {
				t.Errorf("%+v: CD %v in the answer", q, m.CheckingDisabled)
			}
			if o := m.IsEdns0(); (o != nil) != (q.do || q.edns != 0) || (o != nil && o.Do() != q.do) {
				t.Errorf("%+v: OPT %v in the answer", q, o)
			}
		}
	}
	wantCalls(t, u, 4) // EDNS without DO shares the plain entry
}

func TestCaseAndID(t *testing.T) {
	u := &upstream{reply: answer("$ 300 IN CNAME target.example.", "target.example. 300 IN A 192.0.2.1")}
	h, _ := newHandler(t, DefaultConfig(), u)
	ask(t, h, query{name: "WWW.Example.org.", id: 1})
	m := ask(t, h, query{name: "www.eXAMPLE.ORG.", id: 4242})
	wantCalls(t, u, 1)
	if m.Id != 4242 || !m.Response {
		t.Fatalf("ID %d, response %v", m.Id, m.Response)
	}
	if m.Question[0].Name != "www.eXAMPLE.ORG." {
		t.Fatalf("question %q, want the query's case", m.Question[0].Name)
	}
	if got := m.Answer[0].Header().Name; got != "www.eXAMPLE.ORG." {
		t.Fatalf("answer owner %q, want the query's case", got)
	}
	if got := m.Answer[1].Header().Name; got != "target.example." {
		t.Fatalf("other owner %q changed", got)
	}
	// The entry itself is unchanged by serving it.
	m = ask(t, h, query{name: "www.example.org.", id: 7})
	if m.Question[0].Name != "www.example.org." || m.Answer[0].Header().Name != "www.example.org." {
		t.Fatalf("third answer %v", m)
	}
}

// TestScrub checks a large answer cached from a TCP query is fitted to each
// client's buffer when served.
func TestScrub(t *testing.T) {
	var rrs []string
	for i := range 60 {
		rrs = append(rrs, fmt.Sprintf("$ 300 IN A 192.0.2.%d", i))
	}
	u := &upstream{reply: answer(rrs...)}
	h, _ := newHandler(t, DefaultConfig(), u)
	if m := ask(t, h, query{name: "many.example.org.", tcp: true}); len(m.Answer) != 60 {
		t.Fatalf("TCP: %d answers", len(m.Answer))
	}
	m := ask(t, h, query{name: "many.example.org."})
	wantCalls(t, u, 1)
	if !m.Truncated || m.Len() > 512 {
		t.Fatalf("plain UDP: truncated %v, %d bytes", m.Truncated, m.Len())
	}
	m = ask(t, h, query{name: "many.example.org.", edns: 4096})
	if m.Truncated || len(m.Answer) != 60 {
		t.Fatalf("EDNS 4096: truncated %v, %d answers", m.Truncated, len(m.Answer))
	}
	if o := m.IsEdns0(); o == nil || o.UDPSize() != 4096 {
		t.Fatalf("EDNS 4096: OPT %v", o)
	}
}

func TestCapacity(t *testing.T) {
	for _, capacity := range []int{1, 10, 300, DefaultCapacity} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Success.Capacity = capacity
			cfg.Denial.Capacity = 3
			u := &upstream{reply: answer("$ 300 IN A 192.0.2.1")}
			h, _ := newHandler(t, cfg, u)
			// Enough names to fill every shard (all but surely).
			n := 30*capacity + 100
			if capacity > 1000 {
				n = 3 * capacity
			}
			for i := range n {
				ask(t, h, query{name: fmt.Sprintf("n%d.example.", i)})
			}
			got := h.pcache.len()
			if got > capacity || (capacity <= 1000 && got != capacity) || got < capacity*9/10 {
				t.Fatalf("%d entries after %d names, want %d", got, n, capacity)
			}
			// Every shard's bookkeeping agrees with its map.
			for i := range h.pcache.shards {
				sh := &h.pcache.shards[i]
				if len(sh.items) != len(sh.m) || len(sh.items) > sh.cap {
					t.Fatalf("shard %d: %d items, %d in map, cap %d", i, len(sh.items), len(sh.m), sh.cap)
				}
				for j, e := range sh.items {
					if e.idx != j || sh.m[e.key] != e {
						t.Fatalf("shard %d item %d: index %d", i, j, e.idx)
					}
				}
			}
			// The last name is still cached.
			before := u.calls.Load()
			ask(t, h, query{name: fmt.Sprintf("n%d.example.", n-1)})
			wantCalls(t, u, before)
		})
	}
}

func TestConcurrent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Success.Capacity = 64
	cfg.Denial.Capacity = 64
	u := &upstream{reply: func(r *dns.Msg) *dns.Msg {
		if strings.HasPrefix(r.Question[0].Name, "nx") {
			return denial(dns.RcodeNameError, soa)(r)
		}
		return answer("$ 7 IN A 192.0.2.1")(r)
	}}
	h, c := newHandler(t, cfg, u)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 2000 {
				name := fmt.Sprintf("n%d.example.org.", rng.IntN(200))
				if rng.IntN(3) == 0 {
					name = "nx" + name
				}
				m := ask(t, h, query{name: name, do: rng.IntN(2) == 0, id: uint16(i)})
				if m.Id != uint16(i) || m.Question[0].Name != name {
					t.Errorf("answer %v to %s", m, name)
					return
				}
				for _, ttl := range ttls(m) {
					if ttl > 300 {
						t.Errorf("TTL %d", ttl)
						return
					}
				}
				if i%100 == 0 {
					c.advance(time.Second)
				}
			}
		})
	}
	wg.Wait()
	if n := h.pcache.len(); n > 64 {
		t.Fatalf("%d entries", n)
	}
}

func BenchmarkHit(b *testing.B) {
	u := &upstream{reply: answer("$ 300 IN A 192.0.2.1", "$ 300 IN A 192.0.2.2")}
	h, err := New(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	h.Next = u
	r := new(dns.Msg)
	r.SetQuestion("www.example.org.", dns.TypeA)
	w := &test.ResponseWriter{}
	ctx := context.Background()
	if _, err := h.ServeDNS(ctx, w, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := r.Copy()
		for pb.Next() {
			if _, err := h.ServeDNS(ctx, w, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if n := u.calls.Load(); n != 1 {
		b.Fatalf("upstream saw %d queries", n)
	}
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(fmt.Sprintf("test record %q: %v", s, err))
	}
	return rr
}
