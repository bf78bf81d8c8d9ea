//go:build orch_init

package runtime

import "testing"

// TestPackedInit: a binary built with the orch_init tag runs its
// containers' inits from the init built into it.
func TestPackedInit(t *testing.T) {
	e := newTestRuntime(t)
	assertSmallInit(t, e, e.sandbox(t, "packed-init"))
}
