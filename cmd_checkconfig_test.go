package main

import (
	"testing"

	"github.com/orch-dev/orch/internal/checkconfig"
)

func TestParsePorts(t *testing.T) {
	if p, err := parsePorts(nil); err != nil || p != nil {
		t.Errorf("no --port: %v %v, want the defaults (nil)", p, err)
	}
	p, err := parsePorts([]string{"7443/tcp", "8472/udp", "10250"})
	want := []checkconfig.Port{{Number: 7443, Proto: "tcp", Use: "--port"}, {Number: 8472, Proto: "udp", Use: "--port"}, {Number: 10250, Proto: "tcp", Use: "--port"}}
	if err != nil || len(p) != len(want) {
		t.Fatalf("parsePorts: %v %v", p, err)
	}
	for i := range want {
		if p[i] != want[i] {
			t.Errorf("port %d: %+v, want %+v", i, p[i], want[i])
		}
	}
	if p, err := parsePorts([]string{"none"}); err != nil || p == nil || len(p) != 0 {
		t.Errorf("none: %v %v, want an empty list", p, err)
	}
	for _, bad := range []string{"x", "0/tcp", "70000/udp", "53/sctp", "/tcp"} {
		if _, err := parsePorts([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
