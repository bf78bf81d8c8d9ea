package runtime

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/orch-dev/orch/internal/syncbuf"
)

func (e *testEnv) start(t *testing.T, sb *Sandbox, cfg ContainerConfig) string {
	t.Helper()
	id, err := e.r.CreateContainer(sb.Config.UID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.StartContainer(id); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAttachStdin: stdin (kept open, closed when the session's stdin ends)
// reaches the process; its stdout and stderr come back separately and are
// logged too; Attach returns when the process exits.
func TestAttachStdin(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "attach")
	cfg := e.ctr("cat", "sh", "-c", "cat; echo done >&2")
	cfg.Stdin, cfg.StdinOnce = true, true
	id := e.start(t, sb, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut syncbuf.Buffer
	if err := e.r.Attach(ctx, id, AttachStreams{Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stderr: &errOut}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello\nworld\n" || errOut.String() != "done\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errOut.String())
	}
	st, err := e.r.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	expectExit(t, st, 0, ReasonCompleted)
	logs := e.logs(t, id, LogOptions{Tail: -1})
	for _, want := range []string{"hello\n", "world\n", "done\n"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%q", want, logs)
		}
	}
	// A container that exited cannot be attached.
	if err := e.r.Attach(ctx, id, AttachStreams{Stdout: io.Discard}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("attach to an exited container: %v", err)
	}
}

// TestAttachTTY: a TTY container gets a terminal of the size asked, reads
// input through it and writes its output (one stream) to the session.
func TestAttachTTY(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "tty")
	cfg := e.ctr("sh", "sh", "-c", "read x; stty size; echo got-$x; test -t 1 && echo is-a-tty")
	cfg.Stdin, cfg.TTY = true, true
	id := e.start(t, sb, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resize := make(chan TermSize, 1)
	resize <- TermSize{Width: 91, Height: 17}
	var out syncbuf.Buffer
	if err := e.r.Attach(ctx, id, AttachStreams{Stdin: strings.NewReader("abc\n"), Stdout: &out, Resize: resize}); err != nil {
		t.Fatal(err)
	}
	// The terminal echoes the input and ends lines with \r\n.
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	for _, want := range []string{"17 91\n", "got-abc\n", "is-a-tty\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q: %q", want, got)
		}
	}
	st, err := e.r.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	expectExit(t, st, 0, ReasonCompleted)
}

// TestAttachWithoutStdinAndCancel: a container without Stdin reads
// /dev/null (the session's input is ignored); a session ends with its ctx
// while the container keeps running; two sessions see the same output.
func TestAttachWithoutStdinAndCancel(t *testing.T) {
	e := newTestRuntime(t)
	sb := e.sandbox(t, "nostdin")
	id := e.start(t, sb, e.ctr("loop", "sh", "-c", "cat; while true; do echo tick; sleep 0.05; done"))
	var a, b syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	go func() { errc <- e.r.Attach(ctx, id, AttachStreams{Stdin: strings.NewReader("ignored\n"), Stdout: &a}) }()
	go func() { errc <- e.r.Attach(ctx, id, AttachStreams{Stdout: &b}) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(a.String(), "tick") || !strings.Contains(b.String(), "tick") {
		if time.Now().After(deadline) {
			t.Fatalf("no output: %q %q", a.String(), b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	for range 2 {
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("attach after cancel: %v", err)
		}
	}
	if strings.Contains(a.String(), "ignored") {
		t.Error("input reached a container without stdin")
	}
	st, err := e.r.ContainerStatus(id)
	if err != nil || st.State != StateRunning {
		t.Fatalf("container after the sessions: %+v %v", st, err)
	}
	if err := e.r.StopContainer(context.Background(), id, 0); err != nil {
		t.Fatal(err)
	}
}
