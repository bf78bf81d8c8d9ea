package runtime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) `)

func TestCRILogFormatAndReader(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "logs")
	st, _ := e.run(t, sb, e.ctr("lines", "sh", "-c", `echo two >&2; sleep 0.1; echo one; echo three; printf partial`))
	expectExit(t, st, 0, ReasonCompleted)
	raw, err := os.ReadFile(st.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("log file:\n%s", raw)
	}
	for _, l := range lines {
		if !criLine.MatchString(l) {
			t.Errorf("not a CRI log line: %q", l)
		}
	}
	if !strings.HasSuffix(lines[0], " stderr F two") || !strings.HasSuffix(lines[3], " stdout F partial") {
		t.Errorf("stderr line missing:\n%s", raw)
	}
	if got := e.logs(t, st.ID, LogOptions{Tail: 2}); !strings.HasSuffix(got, "three\npartial\n") || strings.Contains(got, "one") {
		t.Errorf("tail 2 = %q", got)
	}
	if got := e.logs(t, st.ID, LogOptions{Tail: 0}); got != "" {
		t.Errorf("tail 0 = %q", got)
	}
	got := e.logs(t, st.ID, LogOptions{Tail: 1, Timestamps: true})
	if ts, _, _ := strings.Cut(got, " "); ts == "" || !strings.HasSuffix(got, " partial\n") {
		t.Errorf("timestamps = %q", got)
	} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Errorf("timestamp %q: %v", ts, err)
	}
	if got := e.logs(t, st.ID, LogOptions{Tail: -1, Since: time.Now().Add(time.Hour)}); got != "" {
		t.Errorf("since future = %q", got)
	}
}

func TestLogFollowUntilExit(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "follow")
	id, err := e.r.CreateContainer(sb.Config.UID, e.ctr("slow", "sh", "-c", `for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b bytes.Buffer
	if err := e.r.Logs(ctx, id, LogOptions{Tail: -1, Follow: true}, &b); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("follow did not end when the container exited")
	}
	if b.String() != "line1\nline2\nline3\nline4\nline5\n" {
		t.Errorf("followed %q", b.String())
	}
}

func TestLogRotation(t *testing.T) {
	e := newTestRuntime(t)
	e.r.cfg.LogMaxBytes, e.r.cfg.LogMaxFiles = 4096, 2
	sb := e.sandbox(t, "rotate")
	st, _ := e.run(t, sb, e.ctr("chatty", "sh", "-c", `i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done`))
	expectExit(t, st, 0, ReasonCompleted)
	for _, p := range []string{st.LogPath, st.LogPath + ".1", st.LogPath + ".2"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 4096+200 {
			t.Errorf("%s is %d bytes", p, fi.Size())
		}
	}
	if _, err := os.Stat(st.LogPath + ".3"); err == nil {
		t.Errorf("more rotated files than LogMaxFiles")
	}
	got := e.logs(t, st.ID, LogOptions{Tail: 3})
	if got != "line 297\nline 298\nline 299\n" {
		t.Errorf("tail across rotation = %q", got)
	}
}

func TestExec(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "exec")
	cfg := e.ctr("box", "sleep", "1000")
	cfg.Env = []EnvVar{{"GREETING", "hi"}}
	id, err := e.r.CreateContainer(sb.Config.UID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out, errb bytes.Buffer
	code, err := e.r.Exec(ctx, id, ExecOptions{Cmd: []string{"sh", "-c", "echo $GREETING; echo oops >&2; exit 5"}, Stdout: &out, Stderr: &errb})
	if err != nil || code != 5 || out.String() != "hi\n" || errb.String() != "oops\n" {
		t.Errorf("exec = %d %v out %q err %q", code, err, out.String(), errb.String())
	}
	out.Reset()
	code, err = e.r.Exec(ctx, id, ExecOptions{Cmd: []string{"tr", "a-z", "A-Z"}, Stdin: strings.NewReader("hello\n"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "HELLO\n" {
		t.Errorf("exec stdin = %d %v %q", code, err, out.String())
	}

	// TTY with a resize.
	resize := make(chan TermSize, 1)
	resize <- TermSize{Width: 123, Height: 45}
	out.Reset()
	code, err = e.r.Exec(ctx, id, ExecOptions{Cmd: []string{"sh", "-c", "sleep 0.3; tty; stty size"}, TTY: true, Stdout: &out, Resize: resize})
	if err != nil || code != 0 {
		t.Fatalf("exec tty = %d %v", code, err)
	}
	if s := strings.ReplaceAll(out.String(), "\r", ""); !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "45 123") {
		t.Errorf("tty output %q", out.String())
	}
	// Interactive shell through the TTY.
	pr, pw := io.Pipe()
	out.Reset()
	go func() {
		_, _ = pw.Write([]byte("echo $((6*7))\nexit 3\n"))
	}()
	code, err = e.r.Exec(ctx, id, ExecOptions{Cmd: []string{"sh"}, TTY: true, Stdin: pr, Stdout: &out})
	if err != nil || code != 3 || !strings.Contains(out.String(), "42") {
		t.Errorf("interactive tty = %d %v %q", code, err, out.String())
	}

	// A missing binary is a clear error.
	_, err = e.r.Exec(ctx, id, ExecOptions{Cmd: []string{"/no/such/binary"}})
	if err == nil || !strings.Contains(err.Error(), "no/such/binary") {
		t.Errorf("exec missing binary: %v", err)
	}
	if _, err := e.r.Exec(ctx, "nope", ExecOptions{Cmd: []string{"true"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("exec in unknown container: %v", err)
	}
}
