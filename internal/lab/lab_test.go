package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLabConnectivityAndTeardown(t *testing.T) {
	var names []string
	var done chan error // set once a process runs inside h0
	t.Run("lab", func(t *testing.T) {
		l := New(t, 2)
		if len(l.Hosts) != 2 || l.Client == nil {
			t.Fatalf("hosts %d client %v", len(l.Hosts), l.Client)
		}
		for _, h := range append(l.Hosts, l.Client) {
			names = append(names, h.Name)
			if !Subnet.Contains(h.IP) {
				t.Errorf("%s: %s outside %s", h.Role, h.IP, Subnet)
			}
			if h.DataDir == "" || h.CgroupRoot == "" {
				t.Errorf("%s: missing data dir or cgroup root", h.Role)
			}
		}
		names = append(names, l.Switch.Name)
		pod := l.NewNS(t, "pod")
		names = append(names, pod.Name)

		// TCP from h0 to h1 and to the client.
		for _, dst := range []*Host{l.Hosts[1], l.Client} {
			echo(t, l.Hosts[0].NS, dst)
		}
		// A process started in a host sees the host's address.
		out, err := l.Hosts[1].Command(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("ip in host: %v: %s", err, out)
		}
		if want := l.Hosts[1].IP.String(); !strings.Contains(string(out), want) {
			t.Errorf("ip addr in h1 = %q, want %s", out, want)
		}
		// A process left running inside a host is killed by the teardown.
		cmd := l.Hosts[0].Command(context.Background(), "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan error, 1)
		go func() { done <- cmd.Wait() }()
	})
	if done == nil {
		return
	}
	if err := <-done; err == nil {
		t.Errorf("process in a host survived the teardown")
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after teardown (%v)", n, err)
		}
	}
}

func echo(t *testing.T, from NS, to *Host) {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(to.IP, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", to.Role, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	var c net.Conn
	if err := from.Do(func() (err error) {
		c, err = net.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), from.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo from %s: %q %v", to.Role, buf, err)
	}
}

func TestSweepRemovesDeadOwnersOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// A pid that surely is gone: a process that has exited and been reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	deadName := Prefix + strconv.Itoa(dead) + "-sweeptest-h0"
	liveName := Prefix + strconv.Itoa(os.Getpid()) + "-sweeptest-h0"
	for _, n := range []string{deadName, liveName} {
		if err := createNamed(n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNS(n) })
	}
	if err := Sweep(); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, deadName)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s survived the sweep", deadName)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, liveName)); err != nil {
		t.Errorf("live namespace %s was swept: %v", liveName, err)
	}
}

func TestStale(t *testing.T) {
	for name, want := range map[string]bool{
		"orchtest-px-1-2": false,
		Prefix + strconv.Itoa(os.Getpid()) + "-x-h0": false,
		Prefix + "junk": true,
	} {
		if got := stale(name); got != want {
			t.Errorf("stale(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestSignalTeardown runs a lab in a child process that then gets SIGTERM:
// the lab must be gone when the child has died of the signal.
func TestSignalTeardown(t *testing.T) {
	if os.Getenv("ORCHLAB_SIGNAL_CHILD") == "1" {
		l := New(t, 1)
		fmt.Println("LAB", l.ID)
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(20 * time.Second)
		t.Fatal("survived SIGTERM")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalTeardown$", "-test.v")
	// The child dies of the signal before its testing package removes its
	// temporary directories: they go inside one of ours.
	cmd.Env = append(os.Environ(), "ORCHLAB_SIGNAL_CHILD=1", "TMPDIR="+t.TempDir())
	out, err := cmd.Output()
	t.Cleanup(func() { _ = Sweep() }) // whatever the child left, its pid is dead now
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v, want death by signal\n%s", err, out)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("child ended with %v, want killed by SIGTERM", ee)
	}
	_, id, ok := strings.Cut(string(out), "LAB ")
	id, _, _ = strings.Cut(id, "\n")
	if !ok || id == "" {
		t.Fatalf("child printed no lab id:\n%s", out)
	}
	left, _ := filepath.Glob(filepath.Join(netnsDir, Prefix+id+"-*"))
	if len(left) != 0 {
		t.Errorf("namespaces left after SIGTERM: %v", left)
	}
}

// TestLabScript checks scripts/lab.sh builds a lab the sweep leaves alone
// while its keeper lives, and deletes it again.
func TestLabScript(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	script, err := filepath.Abs("../../scripts/lab.sh")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(script, "up", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("lab.sh up: %v\n%s", err, out)
	}
	// "lab orchlab-<pid>-sh: 2 hosts"
	_, rest, _ := strings.Cut(string(out), "lab "+Prefix)
	pid, _, _ := strings.Cut(rest, "-")
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("no keeper pid in %q", out)
	}
	t.Cleanup(func() { _ = exec.Command(script, "down", pid).Run() })
	pattern := filepath.Join(netnsDir, Prefix+pid+"-sh-*")
	if got, _ := filepath.Glob(pattern); len(got) != 4 {
		t.Fatalf("lab.sh made %v, want switch, h0, h1, client", got)
	}
	h0 := NS{Name: Prefix + pid + "-sh-h0", Path: filepath.Join(netnsDir, Prefix+pid+"-sh-h0")}
	h1 := &Host{NS: NS{Name: Prefix + pid + "-sh-h1", Path: filepath.Join(netnsDir, Prefix+pid+"-sh-h1")}, Role: "h1",
		IP: netip.MustParseAddr("172.31.250.11")}
	echo(t, h0, h1)
	if err := Sweep(); err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Glob(pattern); len(got) != 4 {
		t.Fatalf("sweep removed a live lab.sh lab: %v left", got)
	}
	if out, err := exec.Command(script, "down", pid).CombinedOutput(); err != nil {
		t.Fatalf("lab.sh down: %v\n%s", err, out)
	}
	if got, _ := filepath.Glob(pattern); len(got) != 0 {
		t.Errorf("lab.sh down left %v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(mustAtoi(t, pid)) {
		if time.Now().After(deadline) {
			t.Fatalf("keeper %s still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStopHostKillsItsProcessesAndCgroups(t *testing.T) {
	l := New(t, 2)
	h := l.Hosts[0]
	// A process in the host's namespace and one only in its cgroup tree
	// (as a container in its own namespaces would be).
	inNS := h.Command(context.Background(), "sleep", "600")
	if err := inNS.Start(); err != nil {
		t.Fatal(err)
	}
	var cgDir string
	for _, hier := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(hier, "cgroup.procs")); err == nil {
			cgDir = filepath.Join(hier, h.CgroupRoot, "pod")
			break
		}
	}
	if cgDir == "" {
		t.Skip("no cgroup hierarchy with cgroup.procs")
	}
	if err := os.MkdirAll(cgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	inCg := exec.Command("sleep", "600")
	if err := inCg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cgDir, "cgroup.procs"), []byte(strconv.Itoa(inCg.Process.Pid)), 0o644); err != nil {
		_ = inCg.Process.Kill()
		t.Fatal(err)
	}
	waits := make(chan error, 2)
	go func() { waits <- inNS.Wait() }()
	go func() { waits <- inCg.Wait() }()
	if err := l.StopHost(h); err != nil {
		t.Fatalf("StopHost: %v", err)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-waits:
		case <-time.After(5 * time.Second):
			t.Fatal("a process of the stopped host is still running")
		}
	}
	if _, err := os.Stat(h.Path); !os.IsNotExist(err) {
		t.Errorf("namespace pin %s still there: %v", h.Path, err)
	}
	if _, err := os.Stat(filepath.Dir(cgDir)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still there: %v", filepath.Dir(cgDir), err)
	}
	// The other host is untouched, and stopping twice is fine.
	if _, err := os.Stat(l.Hosts[1].Path); err != nil {
		t.Errorf("other host: %v", err)
	}
	if err := l.StopHost(h); err != nil {
		t.Errorf("second StopHost: %v", err)
	}
}

func TestUnmountUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := t.TempDir()
	inner := filepath.Join(dir, "a", "b c") // a space: escaped in mountinfo
	t.Cleanup(func() { _ = UnmountUnder(dir) })
	for _, p := range []string{filepath.Join(dir, "a"), inner, inner} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", p, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount %s: %v", p, err)
		}
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), dir) {
		t.Errorf("mounts left under %s", dir)
	}
	if got := unescapeMount(`/x/b\040c\134d`); got != `/x/b c\d` {
		t.Errorf("unescapeMount = %q", got)
	}
}
