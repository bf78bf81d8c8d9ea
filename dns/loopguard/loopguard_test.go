package loopguard

import (
	"context"
	"errors"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

type answer struct{}

func (answer) Name() string { return "answer" }
func (answer) ServeDNS(_ context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeNameError)
	return dns.RcodeNameError, w.WriteMsg(m)
}

func serve(t *testing.T, h *handler, name string, qtype uint16) int {
	t.Helper()
	r := new(dns.Msg)
	r.SetQuestion(name, qtype)
	w := dnstest.NewRecorder(&test.ResponseWriter{})
	if _, err := h.ServeDNS(context.Background(), w, r); err != nil {
		t.Fatal(err)
	}
	return w.Msg.Rcode
}

func TestLoopReportedOnce(t *testing.T) {
	var got []error
	h := &handler{next: answer{}, guard: &Guard{OnLoop: func(err error) { got = append(got, err) }}, qname: "orch-loop-x."}
	// Other queries pass untouched, however often they come.
	for range 5 {
		if rc := serve(t, h, "example.org.", dns.TypeHINFO); rc != dns.RcodeNameError {
			t.Fatalf("other HINFO: rcode %d", rc)
		}
	}
	// The probe twice is fine (the first trip and one echo).
	for range 2 {
		if rc := serve(t, h, "ORCH-loop-x.", dns.TypeHINFO); rc != dns.RcodeNameError {
			t.Fatalf("probe: rcode %d", rc)
		}
	}
	if len(got) != 0 {
		t.Fatalf("loop reported early: %v", got)
	}
	// The third time is a loop: SERVFAIL ends it, reported once.
	for range 3 {
		if rc := serve(t, h, "orch-loop-x.", dns.TypeHINFO); rc != dns.RcodeServerFailure {
			t.Fatalf("looping probe: rcode %d", rc)
		}
	}
	if len(got) != 1 || !errors.Is(got[0], ErrLoop) {
		t.Fatalf("reports %v", got)
	}
	// Once disabled, the probe name is an ordinary name again.
	h.disabled.Store(true)
	if rc := serve(t, h, "orch-loop-x.", dns.TypeHINFO); rc != dns.RcodeNameError {
		t.Fatalf("disabled: rcode %d", rc)
	}
}
