package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadInput(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "bad")
	uid := sb.Config.UID

	cfg := e.ctr("unknown-user", "true")
	cfg.Image.User = "nosuchuser"
	if _, err := e.r.CreateContainer(uid, cfg); !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), "nosuchuser") {
		t.Errorf("unknown user: %v", err)
	}
	cfg.Image.User = "app:nosuchgroup"
	if _, err := e.r.CreateContainer(uid, cfg); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown group: %v", err)
	}

	cfg = e.ctr("no-command")
	if _, err := e.r.CreateContainer(uid, cfg); !errors.Is(err, ErrNoCommand) {
		t.Errorf("no command: %v", err)
	}

	cfg = e.ctr("missing-layer", "true")
	cfg.Lowerdirs = []string{e.layer, filepath.Join(t.TempDir(), "gone")}
	if _, err := e.r.CreateContainer(uid, cfg); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("missing lowerdir: %v", err)
	}

	if _, err := e.r.CreateContainer("no-such-pod", e.ctr("x", "true")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown pod: %v", err)
	}
	if _, err := e.r.CreateContainer(uid, e.ctr("../escape", "true")); err == nil {
		t.Errorf("bad container name accepted")
	}
	cfg = e.ctr("bad-mount", "true")
	cfg.Mounts = []Mount{{HostPath: filepath.Join(t.TempDir(), "nothing"), ContainerPath: "/data"}}
	if _, err := e.r.CreateContainer(uid, cfg); err == nil {
		t.Errorf("mount of a missing host path accepted")
	}
	cfg = e.ctr("bad-cap", "true")
	cfg.Security.CapAdd = []string{"NOT_A_CAP"}
	if _, err := e.r.CreateContainer(uid, cfg); err == nil || !strings.Contains(err.Error(), "NOT_A_CAP") {
		t.Errorf("unknown capability: %v", err)
	}
	cfg = e.ctr("bad-signal", "true")
	cfg.Image.StopSignal = "SIGNOPE"
	if _, err := e.r.CreateContainer(uid, cfg); err == nil {
		t.Errorf("unknown stop signal accepted")
	}

	// A missing binary fails the start: StartError, and nothing runs.
	id, err := e.r.CreateContainer(uid, e.ctr("missing-binary", "/no/such/binary"))
	if err != nil {
		t.Fatal(err)
	}
	err = e.r.StartContainer(id)
	if err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Errorf("start of a missing binary: %v", err)
	}
	st, err := e.r.ContainerStatus(id)
	if err != nil {
		t.Fatal(err)
	}
	expectExit(t, st, 128, ReasonStartError)
	if err := e.r.StartContainer(id); err == nil {
		t.Errorf("second start accepted")
	}
	if err := e.r.RemoveContainer(id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.ContainerStatus(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed container still there: %v", err)
	}
	// Every failure above cleaned up after itself.
	if entries, _ := os.ReadDir(filepath.Join(e.stateDir, "containers")); len(entries) != 0 {
		t.Errorf("%d container dirs left", len(entries))
	}
	if entries, _ := os.ReadDir(filepath.Join(e.stateDir, "libcontainer")); len(entries) != 0 {
		t.Errorf("%d libcontainer dirs left", len(entries))
	}
}

func TestSecurityContext(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "sec")
	f := false
	cfg := e.ctr("locked", "sh", "-c", `grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; touch /x 2>/dev/null && echo rw || echo ro; ls -l /proc/keys | cut -c1; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sys-rw || echo sys-ro; touch /tmp/x && echo tmp-rw`)
	cfg.Security = SecurityContext{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}, ReadOnlyRootFilesystem: true, AllowPrivilegeEscalation: &f}
	dir := t.TempDir()
	cfg.Mounts = []Mount{{HostPath: dir, ContainerPath: "/tmp"}}
	st, out := e.run(t, sb, cfg)
	expectExit(t, st, 0, ReasonCompleted)
	// CAP_NET_BIND_SERVICE is bit 10.
	for _, want := range []string{"CapEff:\t0000000000000400\n", "NoNewPrivs:\t1\n", "ro\n", "c\n", "sys-ro\n", "tmp-rw\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err != nil {
		t.Errorf("bind mount not shared with the host: %v", err)
	}

	cfg = e.ctr("priv", "sh", "-c", `grep CapEff /proc/self/status; ls -l /proc/keys | cut -c1`)
	cfg.Security.Privileged = true
	_, out = e.run(t, sb, cfg)
	self, _ := os.ReadFile("/proc/self/status")
	bnd := field(string(self), "CapBnd:\t")
	if bnd == "" || !strings.Contains(out, "CapEff:\t"+bnd+"\n") || !strings.Contains(out, "-\n") {
		t.Errorf("privileged output:\n%s", out)
	}

	cfg = e.ctr("ro-vol", "sh", "-c", `touch /data/y`)
	cfg.Mounts = []Mount{{HostPath: dir, ContainerPath: "/data", ReadOnly: true}}
	st, _ = e.run(t, sb, cfg)
	if st.ExitCode == 0 {
		t.Errorf("wrote to a read-only volume")
	}
}
