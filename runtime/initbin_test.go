package runtime

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

func TestSealedInitCannotBeWritten(t *testing.T) {
	f, err := sealedInit(strings.NewReader("\x7fELF not really"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	path := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if target, err := os.Readlink(path); err != nil || target != "/memfd:"+initMemfdName+" (deleted)" {
		t.Fatalf("memfd link %q %v: initexec.c would not find it", target, err)
	}
	if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		_, err := w.Write([]byte("x"))
		w.Close()
		if err == nil {
			t.Fatal("the sealed init takes a write through /proc/self/fd")
		}
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("the sealed init takes a write")
	}
	if err := f.Truncate(0); err == nil {
		t.Fatal("the sealed init can be truncated")
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE; seals&want != want {
		t.Fatalf("seals %#x, want %#x", seals, want)
	}
}

func TestInitSource(t *testing.T) {
	r := &Runtime{cfg: Config{InitBinary: []byte("init")}}
	src, err := r.initSource()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(src); string(b) != "init" {
		t.Fatalf("init source %q", b)
	}
	if _, err := sealedInit(strings.NewReader("")); err == nil {
		t.Fatal("an empty init binary was taken")
	}
}

// TestInitHandoff: with an init binary, libcontainer's re-exec of this
// binary as "init" turns into an exec of that binary (a script here,
// which records its arguments and fails the start).
func TestInitHandoff(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	script := "#!/bin/sh\necho \"$@\" >" + marker + "\nexit 3\n"
	e := newTestRuntimeInit(t, []byte(script))
	sb := e.sandbox(t, "handoff")
	id, err := e.r.CreateContainer(sb.Config.UID, e.ctr("c", "/bin/true"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err == nil {
		t.Fatal("a container started with an init that does nothing")
	}
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatalf("the init binary did not run: %v", err)
	}
	if strings.TrimSpace(string(b)) != "init" {
		t.Fatalf("init binary got arguments %q", b)
	}
}

// buildInit builds internal/initbin for this machine.
func buildInit(t testing.TB) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build the init binary")
	}
	out := filepath.Join(t.TempDir(), "orch-init")
	cmd := exec.Command(goBin, "build", "-tags", "seccomp", "-o", out, "./internal/initbin")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build init: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSmallInit runs containers and execs with the small init binary.
func TestSmallInit(t *testing.T) {
	needRoot(t)
	e := newTestRuntimeInit(t, buildInit(t))
	sb := e.sandbox(t, "small-init")
	if fi, err := e.r.initFile.Stat(); err != nil || fi.Size() != 0 {
		t.Fatalf("the init memfd was filled before any container started (%v)", err)
	}
	st, out := e.run(t, sb, e.ctr("hello", "sh", "-c", "echo hello; exit 4"))
	expectExit(t, st, 4, ReasonError)
	if out != "hello\n" {
		t.Errorf("logs %q", out)
	}
	assertSmallInit(t, e, sb)
	id, err := e.r.CreateContainer(sb.Config.UID, e.ctr("sleep", "sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := e.r.Exec(ctx, id, ExecOptions{Cmd: []string{"sh", "-c", "echo exec; exit 5"}, Stdout: &buf, Stderr: &buf})
	if err != nil || code != 5 || buf.String() != "exec\n" {
		t.Fatalf("exec: code %d err %v output %q", code, err, buf.String())
	}
	if err := e.r.RemoveContainer(id); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

// assertSmallInit starts a container's init without letting it exec the
// command (it then waits on the exec fifo) and checks that it is the small
// init, from its sealed memfd.
func assertSmallInit(t *testing.T, e *testEnv, sb *Sandbox) {
	t.Helper()
	id, err := e.r.CreateContainer(sb.Config.UID, e.ctr("held", "/bin/true"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.r.get(id)
	if err != nil {
		t.Fatal(err)
	}
	p := &libcontainer.Process{Args: []string{"/bin/true"}, Env: []string{"PATH=/bin"}, Cwd: "/", Init: true}
	e.r.ensureInit() // as StartContainer does
	if err := c.lc.Start(p); err != nil {
		t.Fatal(err)
	}
	pid, err := p.Pid()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	_ = c.lc.Signal(unix.SIGKILL)
	_, _ = p.Wait()
	if err != nil || exe != "/memfd:"+initMemfdName+" (deleted)" {
		t.Fatalf("the container's init runs %q (%v), not the small init", exe, err)
	}
	if err := e.r.RemoveContainer(id); err != nil {
		t.Fatal(err)
	}
}
