package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunTrueAndExitCodes(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "codes")
	st, _ := e.run(t, sb, e.ctr("true", "/bin/true"))
	expectExit(t, st, 0, ReasonCompleted)
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v finished %v", st.StartedAt, st.FinishedAt)
	}
	st, out := e.run(t, sb, e.ctr("three", "sh", "-c", "echo out; echo err >&2; exit 3"))
	expectExit(t, st, 3, ReasonError)
	if out != "out\nerr\n" && out != "err\nout\n" {
		t.Errorf("logs = %q", out)
	}
	if !strings.HasSuffix(st.LogPath, "/default_codes_"+sb.Config.UID+"/three/0.log") {
		t.Errorf("log path %s", st.LogPath)
	}
}

func i64(v int64) *int64 { return &v }

func TestEnvArgsWorkdirUser(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "env")
	cfg := e.ctr("env")
	cfg.Command = nil
	cfg.Image = ImageConfig{
		Entrypoint: []string{"sh", "-c"},
		Cmd:        []string{"echo from-image-cmd"},
		Env:        []string{"FOO=img", "BAR=img"},
		User:       "app",
		WorkingDir: "/home/app",
	}
	cfg.Args = []string{`echo "$FOO $BAR $BAZ"; pwd; id -u; id -g; id -G; echo $HOME`, "ignored"}
	cfg.Env = []EnvVar{{"BAR", "ctr"}, {"BAZ", "new"}}
	st, out := e.run(t, sb, cfg)
	expectExit(t, st, 0, ReasonCompleted)
	want := "img ctr new\n/home/app\n1000\n1000\n1000 50\n/home/app\n"
	if out != want {
		t.Errorf("output %q, want %q", out, want)
	}

	// runAsUser/runAsGroup override the image's user; workingDir the image's.
	cfg.Security.RunAsUser, cfg.Security.RunAsGroup = i64(4321), i64(99)
	cfg.WorkingDir = "/tmp"
	cfg.Args = []string{"pwd; id -u; id -g"}
	cfg.Name = "env2"
	st, out = e.run(t, sb, cfg)
	expectExit(t, st, 0, ReasonCompleted)
	if out != "/tmp\n4321\n99\n" {
		t.Errorf("output %q", out)
	}

	// Image ENTRYPOINT+CMD when the container sets neither.
	cfg = e.ctr("env3")
	cfg.Command = nil
	cfg.Image.Entrypoint, cfg.Image.Cmd = []string{"echo"}, []string{"a", "b"}
	st, out = e.run(t, sb, cfg)
	expectExit(t, st, 0, ReasonCompleted)
	if out != "a b\n" {
		t.Errorf("output %q", out)
	}
}

func TestPodSharesNetIPCUTSNotPIDOrMount(t *testing.T) {
	e := newTestRuntime(t)
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := e.r.CreateSandbox(SandboxConfig{UID: "uid-" + randHex(6), Namespace: "default", Name: "pair", Hostname: "web-0"})
	if err != nil {
		t.Fatal(err)
	}
	// No thread of ours stays in the pod's namespaces.
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if ns, err := os.Readlink(task); err == nil && ns != hostNS {
			t.Errorf("%s is in %s, not the host's %s", task, ns, hostNS)
		}
	}
	if sb.NetNS == "" || sb.IPCNS == "" || sb.UTSNS == "" {
		t.Fatalf("namespaces not pinned: %+v", sb)
	}
	server := e.ctr("server", "sh", "-c", "mkdir -p /www && echo hello-from-server > /www/index.html && echo shm > /dev/shm/x && exec httpd -f -p 127.0.0.1:8080 -h /www")
	sid, err := e.r.CreateContainer(sb.Config.UID, server)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(sid); err != nil {
		t.Fatal(err)
	}
	client := e.ctr("client", "sh", "-c", `
for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/index.html && break; sleep 0.1; done
hostname
cat /dev/shm/x
echo pid1=$(cat /proc/1/comm)
for ns in net ipc uts pid mnt; do echo $ns=$(readlink /proc/self/ns/$ns); done`)
	st, out := e.run(t, sb, client)
	expectExit(t, st, 0, ReasonCompleted)
	for _, want := range []string{"hello-from-server\n", "web-0\n", "shm\n", "pid1=sh\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("client output lacks %q:\n%s", want, out)
		}
	}
	var sout strings.Builder
	code, err := e.r.Exec(context.Background(), sid, ExecOptions{Cmd: []string{"sh", "-c", "for ns in net ipc uts pid mnt; do echo $ns=$(readlink /proc/self/ns/$ns); done"}, Stdout: &sout})
	if err != nil || code != 0 {
		t.Fatalf("exec: %d %v", code, err)
	}
	for _, ns := range []string{"net", "ipc", "uts", "pid", "mnt"} {
		a, b := field(out, ns+"="), field(sout.String(), ns+"=")
		same := a == b && a != ""
		if shared := ns == "net" || ns == "ipc" || ns == "uts"; same != shared {
			t.Errorf("%s namespace: client %q server %q (shared=%v)", ns, a, b, shared)
		}
	}
	// The pinned netns is the one the containers use.
	if field(out, "net=") == hostNS {
		t.Errorf("pod shares the host netns")
	}
}

func field(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
	return ""
}

func TestOOMKilled(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "oom")
	cfg := e.ctr("hog", "tail", "/dev/zero")
	cfg.Resources.MemoryLimit = 48 << 20 // room for a -race runc init
	st, _ := e.run(t, sb, cfg)
	expectExit(t, st, 137, ReasonOOMKilled)
}

func TestStopGraceThenKill(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "stop")
	start := func(cfg ContainerConfig) string {
		id, err := e.r.CreateContainer(sb.Config.UID, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.r.StartContainer(id); err != nil {
			t.Fatal(err)
		}
		// Give sh time to install its trap.
		time.Sleep(200 * time.Millisecond)
		return id
	}
	polite := start(e.ctr("polite", "sh", "-c", `trap "echo bye; exit 0" TERM; while :; do sleep 0.05; done`))
	stubborn := start(e.ctr("stubborn", "sh", "-c", `trap "echo ignored" TERM; while :; do sleep 0.05; done`))
	usr1 := e.ctr("usr1", "sh", "-c", `trap "exit 42" USR1; while :; do sleep 0.05; done`)
	usr1.Image.StopSignal = "SIGUSR1"
	custom := start(usr1)

	if err := e.r.StopContainer(context.Background(), polite, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	st, _ := e.r.ContainerStatus(polite)
	expectExit(t, st, 0, ReasonCompleted)

	begin := time.Now()
	if err := e.r.StopContainer(context.Background(), stubborn, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 500*time.Millisecond {
		t.Errorf("killed after %v, before the grace period", d)
	}
	st, _ = e.r.ContainerStatus(stubborn)
	expectExit(t, st, 137, ReasonError)
	if !strings.Contains(e.logs(t, stubborn, LogOptions{Tail: -1}), "ignored") {
		t.Errorf("SIGTERM not delivered first")
	}

	if err := e.r.StopContainer(context.Background(), custom, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	st, _ = e.r.ContainerStatus(custom)
	expectExit(t, st, 42, ReasonError)
}

func TestHostNetworkAndSandboxLifecycle(t *testing.T) {
	e := newTestRuntime(t)
	uid := "uid-" + randHex(6)
	sb, err := e.r.CreateSandbox(SandboxConfig{UID: uid, Namespace: "kube-system", Name: "hostnet", HostNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	if sb.NetNS != "" || sb.UTSNS != "" || sb.IPCNS == "" {
		t.Fatalf("host-network sandbox: %+v", sb)
	}
	again, err := e.r.CreateSandbox(SandboxConfig{UID: uid, Namespace: "kube-system", Name: "hostnet", HostNetwork: true})
	if err != nil || again != sb {
		t.Errorf("CreateSandbox is not idempotent: %v", err)
	}
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	hostName, _ := os.Hostname()
	st, out := e.run(t, sb, e.ctr("c", "sh", "-c", "readlink /proc/self/ns/net; hostname"))
	expectExit(t, st, 0, ReasonCompleted)
	if out != hostNet+"\n"+hostName+"\n" {
		t.Errorf("host network pod sees %q, want %q and %q", out, hostNet, hostName)
	}
	logDir := filepath.Dir(filepath.Dir(st.LogPath))
	if err := e.r.RemoveSandbox(uid); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{logDir, e.r.podDir(uid)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after RemoveSandbox: %v", p, err)
		}
	}
	if _, err := e.r.ContainerStatus(st.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("container left after RemoveSandbox: %v", err)
	}
	if err := e.r.RemoveSandbox(uid); err != nil {
		t.Errorf("second RemoveSandbox: %v", err)
	}
}
