package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestResolveCommand(t *testing.T) {
	img := ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"cmd-arg"}}
	for _, tc := range []struct {
		name          string
		cmd, args     []string
		img           ImageConfig
		want          []string
		wantNoCommand bool
	}{
		{name: "image only", img: img, want: []string{"/ep", "cmd-arg"}},
		{name: "command drops image cmd", cmd: []string{"/c"}, img: img, want: []string{"/c"}},
		{name: "args replace image cmd", args: []string{"a"}, img: img, want: []string{"/ep", "a"}},
		{name: "both", cmd: []string{"/c"}, args: []string{"a"}, img: img, want: []string{"/c", "a"}},
		{name: "cmd only image", img: ImageConfig{Cmd: []string{"/bin/sh"}}, want: []string{"/bin/sh"}},
		{name: "args without entrypoint", args: []string{"/bin/x", "y"}, want: []string{"/bin/x", "y"}},
		{name: "nothing", wantNoCommand: true},
		{name: "empty command", cmd: []string{""}, wantNoCommand: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveCommand(&ContainerConfig{Command: tc.cmd, Args: tc.args, Image: tc.img})
			if tc.wantNoCommand {
				if !errors.Is(err, ErrNoCommand) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %q %v, want %q", got, err, tc.want)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/img", "A=1", "B=2"}, []EnvVar{{"B", "3"}, {"C", "x=y"}})
	if want := []string{"PATH=/img", "A=1", "B=3", "C=x=y"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	got = mergeEnv(nil, []EnvVar{{"A", "1"}})
	if len(got) != 2 || got[0] != defaultPath || got[1] != "A=1" {
		t.Errorf("default PATH: %q", got)
	}
}

func TestCapabilities(t *testing.T) {
	got, err := capabilities(SecurityContext{CapDrop: []string{"NET_RAW", "cap_chown"}, CapAdd: []string{"SYS_TIME", "KILL"}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, "CAP_NET_RAW") || slices.Contains(got, "CAP_CHOWN") || !slices.Contains(got, "CAP_SYS_TIME") {
		t.Errorf("caps %q", got)
	}
	if n := len(got); n != len(defaultCaps)-1 {
		t.Errorf("%d caps, want %d", n, len(defaultCaps)-1)
	}
	got, err = capabilities(SecurityContext{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_ADMIN"}})
	if err != nil || !slices.Equal(got, []string{"CAP_NET_ADMIN"}) {
		t.Errorf("drop ALL add NET_ADMIN = %q %v", got, err)
	}
	if _, err := capabilities(SecurityContext{CapAdd: []string{"BOGUS"}}); err == nil {
		t.Error("unknown capability accepted")
	}
}

func TestMilliCPUToShares(t *testing.T) {
	for milli, want := range map[int64]uint64{0: 2, 1: 2, 100: 102, 1000: 1024, 2500: 2560} {
		if got := milliCPUToShares(milli); got != want {
			t.Errorf("%dm = %d, want %d", milli, got, want)
		}
	}
}

func TestStopSignal(t *testing.T) {
	for in, want := range map[string]unix.Signal{"": unix.SIGTERM, "SIGQUIT": unix.SIGQUIT, "int": unix.SIGINT, "9": unix.SIGKILL, "SIGRTMIN+3": 0} {
		got, err := stopSignal(in)
		if want == 0 {
			if err == nil && in != "SIGRTMIN+3" {
				t.Errorf("%q accepted", in)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q = %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := stopSignal("SIGBOGUS"); err == nil {
		t.Error("SIGBOGUS accepted")
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "web-0", "uid.1_2", strings.Repeat("a", 253)} {
		if err := validName("x", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "../x", "a/b", "-a", ".a", "a b", strings.Repeat("a", 254)} {
		if validName("x", bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestResolveUser(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"), 0o644)
	_ = os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\napp:x:1001:\nextra:x:7:app\n"), 0o644)
	u, err := resolveUser(root, "app", SecurityContext{})
	if err != nil || u.Uid != 1000 || u.Gid != 1001 || !slices.Contains(u.Sgids, 7) || u.Home != "/home/app" {
		t.Errorf("app = %+v %v", u, err)
	}
	u, err = resolveUser(root, "", SecurityContext{})
	if err != nil || u.Uid != 0 || u.Gid != 0 {
		t.Errorf("default = %+v %v", u, err)
	}
	u, err = resolveUser(root, "123:456", SecurityContext{})
	if err != nil || u.Uid != 123 || u.Gid != 456 {
		t.Errorf("numeric = %+v %v", u, err)
	}
	uid := int64(1000)
	u, err = resolveUser(root, "root", SecurityContext{RunAsUser: &uid})
	if err != nil || u.Uid != 1000 || u.Gid != 1001 {
		t.Errorf("runAsUser = %+v %v", u, err)
	}
	if _, err := resolveUser(root, "ghost", SecurityContext{}); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("ghost: %v", err)
	}
	// A symlinked /etc/passwd cannot point outside the rootfs.
	outside := filepath.Join(t.TempDir(), "passwd")
	_ = os.WriteFile(outside, []byte("ghost:x:5:5::/:/bin/sh\n"), 0o644)
	root2 := t.TempDir()
	_ = os.MkdirAll(filepath.Join(root2, "etc"), 0o755)
	_ = os.Symlink(outside, filepath.Join(root2, "etc/passwd"))
	if _, err := resolveUser(root2, "ghost", SecurityContext{}); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("escaped through a symlink: %v", err)
	}
}

func TestParseLogLine(t *testing.T) {
	l, err := ParseLogLine([]byte("2024-01-02T03:04:05.123456789Z stderr P hello world"))
	if err != nil || l.Stream != "stderr" || !l.Partial || string(l.Content) != "hello world" || l.Time.Nanosecond() != 123456789 {
		t.Errorf("%+v %v", l, err)
	}
	l, err = ParseLogLine([]byte("2024-01-02T03:04:05Z stdout F "))
	if err != nil || len(l.Content) != 0 {
		t.Errorf("empty line: %+v %v", l, err)
	}
	for _, bad := range []string{"", "garbage", "2024-01-02T03:04:05Z stdin F x", "2024-01-02T03:04:05Z stdout X x", "notatime stdout F x"} {
		if _, err := ParseLogLine([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReadLogRotatedAndFollow(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "0.log")
	line := func(ts, s string) string { return "2024-01-01T00:00:0" + ts + ".000000000Z stdout F " + s + "\n" }
	_ = os.WriteFile(p+".2", []byte(line("1", "a")), 0o644)
	_ = os.WriteFile(p+".1", []byte(line("2", "b")+"torn line without format\n"), 0o644)
	_ = os.WriteFile(p, []byte(line("3", "c")+"2024-01-01T00:00:04.000000000Z stdout P par\n"+line("5", "tial")), 0o644)
	var b bytes.Buffer
	if err := ReadLog(context.Background(), p, 4, LogOptions{Tail: -1}, &b, nil); err != nil {
		t.Fatal(err)
	}
	if b.String() != "a\nb\nc\npartial\n" {
		t.Errorf("all = %q", b.String())
	}
	b.Reset()
	since, _ := time.Parse(time.RFC3339, "2024-01-01T00:00:02Z")
	if err := ReadLog(context.Background(), p, 4, LogOptions{Tail: -1, Since: since}, &b, nil); err != nil {
		t.Fatal(err)
	}
	if b.String() != "b\nc\npartial\n" {
		t.Errorf("since = %q", b.String())
	}

	// Follow picks up appended lines and a rotation, and stops when done.
	b.Reset()
	done := make(chan struct{})
	var finished atomic.Bool
	go func() {
		defer close(done)
		_ = ReadLog(context.Background(), p, 4, LogOptions{Tail: 0, Follow: true}, &b, finished.Load)
	}()
	time.Sleep(50 * time.Millisecond)
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(line("6", "d"))
	f.Close()
	time.Sleep(50 * time.Millisecond)
	_ = os.Rename(p, p+".1")
	_ = os.WriteFile(p, []byte(line("7", "e")), 0o644)
	time.Sleep(300 * time.Millisecond)
	finished.Store(true)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not stop")
	}
	if b.String() != "d\ne\n" {
		t.Errorf("follow = %q", b.String())
	}
}
