package server

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

// gcPercent is the runtime's current GOGC.
func gcPercent() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestStartupGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	t.Setenv("GOGC", "") // the environment's GOGC comes back at the end
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}

	restore := startupGC()
	if g := gcPercent(); g != startupGCPercent {
		t.Errorf("GOGC %d while starting, want %d", g, startupGCPercent)
	}
	restore()
	restore() // idempotent: Run restores at ready and again on return
	if g := gcPercent(); g != 100 {
		t.Errorf("GOGC %d after start-up, want 100 back", g)
	}

	t.Setenv("GOGC", "100")
	restore = startupGC()
	if g := gcPercent(); g != 100 {
		t.Errorf("GOGC %d with GOGC=100 in the environment, want it left alone", g)
	}
	restore()
}
