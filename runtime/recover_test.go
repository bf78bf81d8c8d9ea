package runtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// oldOrchMain plays an orch process that starts a pod and is then killed:
// it prints the container IDs and waits.
func oldOrchMain() int {
	r, err := New(Config{StateDir: os.Getenv("ORCHTEST_STATE"), LogDir: os.Getenv("ORCHTEST_LOGS"),
		CgroupRoot: os.Getenv("ORCHTEST_CGROUP")}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err == nil {
		err = r.Recover()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sb, err := r.CreateSandbox(SandboxConfig{UID: os.Getenv("ORCHTEST_UID"), Namespace: "default", Name: "survivor"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	layer := os.Getenv("ORCHTEST_LAYER")
	var ids []string
	for _, c := range []ContainerConfig{
		{Name: "long", Lowerdirs: []string{layer}, Command: []string{"sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"}},
		{Name: "short", Lowerdirs: []string{layer}, Command: []string{"sh", "-c", "sleep 1; echo bye; exit 7"}},
	} {
		id, err := r.CreateContainer(sb.Config.UID, c)
		if err == nil {
			err = r.StartContainer(id)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ids = append(ids, id)
	}
	fmt.Println(strings.Join(ids, " "))
	select {}
}

func TestRecoverAfterOrchRestart(t *testing.T) {
	e := newTestRuntime(t)
	uid := "uid-" + randHex(6)
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), "ORCHTEST_OLD_ORCH=1", "ORCHTEST_STATE="+e.stateDir, "ORCHTEST_LOGS="+e.logDir,
		"ORCHTEST_CGROUP="+e.cgroupRoot, "ORCHTEST_UID="+uid, "ORCHTEST_LAYER="+e.layer)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("old orch: %v", err)
	}
	ids := strings.Fields(line)
	if len(ids) != 2 {
		t.Fatalf("old orch printed %q", line)
	}
	long, short := ids[0], ids[1]
	// "orch" dies abruptly, its containers do not.
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	if err := e.r.Recover(); err != nil {
		t.Fatal(err)
	}
	sb, err := e.r.Sandbox(uid)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.r.ContainerStatus(long); err != nil || st.State != StateRunning {
		t.Fatalf("long after restart: %+v %v", st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := e.r.Wait(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	expectExit(t, st, 7, ReasonError)
	if out := e.logs(t, short, LogOptions{Tail: -1}); out != "bye\n" {
		t.Errorf("short's log written while orch was down = %q", out)
	}
	// The long one still logs, and exec works into an adopted container.
	before := e.logs(t, long, LogOptions{Tail: 1})
	time.Sleep(300 * time.Millisecond)
	if after := e.logs(t, long, LogOptions{Tail: 1}); after == before {
		t.Errorf("adopted container's log stopped: %q", after)
	}
	var out strings.Builder
	if code, err := e.r.Exec(ctx, long, ExecOptions{Cmd: []string{"hostname"}, Stdout: &out}); err != nil || code != 0 || out.String() != "survivor\n" {
		t.Errorf("exec into adopted container: %d %v %q", code, err, out.String())
	}
	if err := e.r.StopContainer(ctx, long, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.r.ContainerStatus(long); st.State != StateExited || st.ExitCode != 137 {
		t.Errorf("long after stop: %+v", st)
	}
	if err := e.r.RemoveSandbox(sb.Config.UID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.r.podDir(uid)); !os.IsNotExist(err) {
		t.Errorf("pod dir left: %v", err)
	}
}

func TestRecoverSweepsLeftovers(t *testing.T) {
	e := newTestRuntime(t)
	// A pod whose creation crashed after mounting its shm, and a container
	// that crashed after mounting its rootfs.
	pod := filepath.Join(e.stateDir, "pods", "uid-crashed")
	ctr := filepath.Join(e.stateDir, "containers", "0123456789abcdef")
	// And a container dir discarded just before a crash, before its
	// background removal ended.
	trashed := filepath.Join(e.stateDir, "trash", "fedcba9876543210")
	for _, d := range []string{pod + "/shm", pod + "/ns", ctr + "/rootfs", ctr + "/upper", ctr + "/work", trashed + "/upper/etc"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("shm", pod+"/shm", "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", ctr+"/rootfs", "overlay", 0, "lowerdir="+e.layer+",upperdir="+ctr+"/upper,workdir="+ctr+"/work"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Recover(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pod, ctr, trashed} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s not swept: %v", p, err)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), e.stateDir) {
		t.Errorf("mounts left under the state dir")
	}
	_ = io.Discard
}
