package runtime

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	cgmanager "github.com/opencontainers/cgroups/manager"
)

func TestMain(m *testing.M) {
	MaybeInit()
	if os.Getenv("ORCHTEST_OLD_ORCH") != "" {
		os.Exit(oldOrchMain())
	}
	os.Exit(m.Run())
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// busyboxRootfs builds an image layer dir from Debian's busybox-static.
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Skip("busybox-static not installed (apt-get install -y busybox-static)")
	}
	dir := filepath.Join(t.TempDir(), "layer")
	if err := makeBusyboxRootfs(bb, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func makeBusyboxRootfs(bb, dir string) error {
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/app"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	src, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), src, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		name := sc.Text()
		if name == "" || name == "busybox" {
			continue
		}
		_ = os.Symlink("busybox", filepath.Join(dir, "bin", name))
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

type testEnv struct {
	r          *Runtime
	stateDir   string
	logDir     string
	cgroupRoot string
	layer      string
}

// newTestRuntime returns a Runtime with its own state dir, log dir and
// cgroup root; cleanup removes every sandbox and checks nothing leaked.
func newTestRuntime(t *testing.T) *testEnv {
	t.Helper()
	return newTestRuntimeInit(t, nil)
}

// newTestRuntimeInit is newTestRuntime with Config.InitBinary.
func newTestRuntimeInit(t *testing.T, initBinary []byte) *testEnv {
	t.Helper()
	needRoot(t)
	base := t.TempDir()
	e := &testEnv{
		stateDir:   filepath.Join(base, "state"),
		logDir:     filepath.Join(base, "logs"),
		cgroupRoot: "/orchtest-ctr-" + randHex(4),
		layer:      busyboxRootfs(t),
	}
	r, err := New(Config{StateDir: e.stateDir, LogDir: e.logDir, CgroupRoot: e.cgroupRoot, InitBinary: initBinary},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	t.Cleanup(func() { e.cleanup(t) })
	return e
}

func (e *testEnv) cleanup(t *testing.T) {
	r := e.r
	r.mu.Lock()
	var uids []string
	for uid := range r.pods {
		uids = append(uids, uid)
	}
	r.mu.Unlock()
	for _, uid := range uids {
		if err := r.RemoveSandbox(uid); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	// Anything a failed test left: unmount and remove.
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], e.stateDir) {
				t.Errorf("leaked mount %s", f[4])
				_ = unmountAll(f[4])
			}
		}
	}
	for _, sub := range []string{"memory", "cpu", "pids"} {
		entries, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", sub, e.cgroupRoot))
		for _, en := range entries {
			if en.IsDir() {
				t.Errorf("leaked cgroup %s/%s/%s", sub, e.cgroupRoot, en.Name())
			}
		}
	}
	if m, err := cgmanager.New(&cgroups.Cgroup{Path: e.cgroupRoot, Resources: &cgroups.Resources{}}); err == nil {
		_ = m.Destroy()
	}
	if entries, _ := os.ReadDir(filepath.Join(e.stateDir, "containers")); len(entries) > 0 {
		t.Errorf("leaked container dirs: %d", len(entries))
	}
	if err := r.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

func (e *testEnv) sandbox(t *testing.T, name string) *Sandbox {
	t.Helper()
	sb, err := e.r.CreateSandbox(SandboxConfig{UID: "uid-" + randHex(6), Namespace: "default", Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func (e *testEnv) ctr(name string, cmd ...string) ContainerConfig {
	return ContainerConfig{Name: name, Lowerdirs: []string{e.layer}, Command: cmd}
}

// run creates, starts and waits for a container, returning its status and
// its log's content.
func (e *testEnv) run(t *testing.T, sb *Sandbox, cfg ContainerConfig) (ContainerStatus, string) {
	t.Helper()
	id, err := e.r.CreateContainer(sb.Config.UID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.r.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return st, e.logs(t, id, LogOptions{Tail: -1})
}

func (e *testEnv) logs(t *testing.T, id string, opts LogOptions) string {
	t.Helper()
	var b strings.Builder
	if err := e.r.Logs(context.Background(), id, opts, &b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func expectExit(t *testing.T, st ContainerStatus, code int, reason string) {
	t.Helper()
	if st.State != StateExited || st.ExitCode != code || st.Reason != reason {
		t.Fatalf("status = %s code %d reason %q (%s), want Exited %d %q", st.State, st.ExitCode, st.Reason, st.Message, code, reason)
	}
}

var _ = fmt.Sprintf
