//go:build seccomp

package runtime

import (
	"strings"
	"testing"
)

func TestSeccompRuntimeDefault(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "seccomp")
	cfg := e.ctr("filtered", "sh", "-c", `grep ^Seccomp: /proc/self/status`)
	cfg.Security.Seccomp = SeccompRuntimeDefault
	// Even with CAP_SYS_ADMIN, the profile keeps mount(2) from the container.
	cfg.Security.CapAdd = []string{"SYS_ADMIN"}
	cfg.Command = []string{"sh", "-c", `grep ^Seccomp: /proc/self/status; mkdir -p /mnt/t; mount -t tmpfs none /mnt/t && echo mounted || echo denied`}
	st, out := e.run(t, sb, cfg)
	expectExit(t, st, 0, ReasonCompleted)
	if !strings.Contains(out, "Seccomp:\t2\n") || !strings.Contains(out, "denied\n") {
		t.Errorf("output:\n%s", out)
	}
	cfg.Name, cfg.Security.Seccomp = "unfiltered", SeccompUnconfined
	_, out = e.run(t, sb, cfg)
	if !strings.Contains(out, "Seccomp:\t0\n") || !strings.Contains(out, "mounted\n") {
		t.Errorf("unconfined output:\n%s", out)
	}
}
