package runtime

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRemoveContainerLeavesNothing: the rootfs is a volatile overlay (no
// sync on unmount), and removal leaves no mount, cgroup, libcontainer state
// or dir once the background removal ended.
func TestRemoveContainerLeavesNothing(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "teardown")
	cfg := e.ctr("w", "sh", "-c", "echo data > /written && sleep 1000")
	id, err := e.r.CreateContainer(sb.Config.UID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(e.r.ctrDir(id), "rootfs")
	// overlayfs marks the work dir of a volatile mount.
	if _, err := os.Stat(filepath.Join(e.r.ctrDir(id), "work", "work", "incompat", "volatile")); err != nil {
		t.Errorf("rootfs mount is not volatile: %v", err)
	}
	if err := e.r.StartContainer(id); err != nil {
		t.Fatal(err)
	}
	upperFile := filepath.Join(e.r.ctrDir(id), "upper", "written")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(upperFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container's write never reached its upper dir")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.r.RemoveContainer(id); err != nil {
		t.Fatal(err)
	}
	// Synchronously gone: the dir (moved to the trash), the mount, the
	// cgroup and the libcontainer state.
	if _, err := os.Stat(e.r.ctrDir(id)); !os.IsNotExist(err) {
		t.Errorf("container dir still there: %v", err)
	}
	// (Reads of mountinfo may miss lines while other mounts change, but
	// never invent one.)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), rootfs) {
		t.Error("rootfs still mounted")
	}
	if _, err := os.Stat(filepath.Join(e.r.lcRoot(), id)); !os.IsNotExist(err) {
		t.Errorf("libcontainer state still there: %v", err)
	}
	for _, sub := range []string{"memory", "pids", "freezer"} {
		p := filepath.Join("/sys/fs/cgroup", sub, e.r.podCgroup(sb.Config.UID), id)
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there: %v", p, err)
		}
	}
	if _, err := e.r.ContainerStatus(id); err == nil {
		t.Error("removed container still known")
	}
	e.r.waitBackground()
	if entries, err := os.ReadDir(e.r.trashDir()); err != nil || len(entries) != 0 {
		t.Errorf("trash not emptied: %d entries, %v", len(entries), err)
	}
	// The pod's cgroup stays for the pod's next containers.
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", e.r.podCgroup(sb.Config.UID))); err != nil {
		t.Errorf("pod cgroup gone with its container: %v", err)
	}
	// And a new container of the same pod runs.
	st, _ := e.run(t, sb, e.ctr("again", "true"))
	expectExit(t, st, 0, ReasonCompleted)
}

// TestDiscardFallsBackToRemoveInPlace: a dir whose name is taken in the
// trash by a non-empty left-over is removed in place.
func TestDiscardFallsBackToRemoveInPlace(t *testing.T) {
	base := t.TempDir()
	r, err := New(Config{StateDir: filepath.Join(base, "state"), LogDir: filepath.Join(base, "logs")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	dir := r.ctrDir("abc")
	if err := os.MkdirAll(filepath.Join(dir, "upper", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(r.trashDir(), "abc", "busy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := r.discard(dir); err != nil {
		t.Fatal(err)
	}
	r.waitBackground()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir not removed: %v", err)
	}
	// Discarding what is already gone is fine.
	if err := r.discard(dir); err != nil {
		t.Errorf("discard of a missing dir: %v", err)
	}
}

// children returns the pids of this process' child processes.
func children(t *testing.T) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "children"))
		if err == nil {
			pids = append(pids, strings.Fields(string(b))...)
		}
	}
	return pids
}

// TestFailedStartLeavesNoMonitor: the monitor started alongside a container
// whose process cannot start exits (and is reaped) without writing an exit
// status; the container reports StartError.
func TestFailedStartLeavesNoMonitor(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "nomon")
	id, err := e.r.CreateContainer(sb.Config.UID, e.ctr("missing", "/no/such/binary"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err == nil {
		t.Fatal("start of a missing binary succeeded")
	}
	st, err := e.r.ContainerStatus(id)
	if err != nil {
		t.Fatal(err)
	}
	expectExit(t, st, 128, ReasonStartError)
	deadline := time.Now().Add(10 * time.Second)
	for len(children(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("children left after a failed start: %v", children(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(e.r.exitPath(id)); !os.IsNotExist(err) {
		t.Errorf("exit file of a container that never started: %v", err)
	}
}
