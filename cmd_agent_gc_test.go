package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestIdleGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)

	t.Setenv("GOGC", "") // the environment's GOGC comes back at the end
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	idleGC()
	if got := debug.SetGCPercent(100); got != agentGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, agentGCPercent)
	}

	t.Setenv("GOGC", "100")
	idleGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100 in the environment: GC percent %d, want it left at 100", got)
	}
}
