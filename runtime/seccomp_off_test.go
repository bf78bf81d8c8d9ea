//go:build !seccomp

package runtime

import (
	"errors"
	"testing"
)

func TestSeccompUnsupportedIsAnError(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "seccomp")
	cfg := e.ctr("filtered", "true")
	cfg.Security.Seccomp = SeccompRuntimeDefault
	if _, err := e.r.CreateContainer(sb.Config.UID, cfg); !errors.Is(err, ErrSeccompUnsupported) {
		t.Fatalf("err = %v, want ErrSeccompUnsupported", err)
	}
}
