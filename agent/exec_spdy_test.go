package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/orch-dev/orch/internal/syncbuf"
)

// spdyExec runs a remote command through client-go's SPDY executor (no
// WebSocket) against the node API at path?q.
func spdyExec(t *testing.T, base, path string, q url.Values, opts remotecommand.StreamOptions) error {
	t.Helper()
	u, _ := url.Parse(base + path + "?" + q.Encode())
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: base}, http.MethodPost, u)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return ex.StreamWithContext(ctx, opts)
}

func TestNodeAPIExecSPDY(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ex"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: sh("sleep 3600")}}}})
	h.waitPod("default", "ex", 30*time.Second, "Running", podRunningReady)
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()

	out, errOut := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	err := spdyExec(t, srv.URL, "/exec/default/ex/c", url.Values{"command": sh("echo hi; echo oops >&2; exit 3"), "stdout": {"true"}, "stderr": {"true"}},
		remotecommand.StreamOptions{Stdout: out, Stderr: errOut})
	var exitErr utilexec.ExitError
	if out.String() != "hi\n" || errOut.String() != "oops\n" || !errors.As(err, &exitErr) || exitErr.ExitStatus() != 3 {
		t.Fatalf("exec: out %q err %q error %v", out.String(), errOut.String(), err)
	}

	// stdin to the end, as kubectl cp sends a tar stream.
	// (Through sh: the test image links few applets; busybox's sh runs any.)
	out = &syncbuf.Buffer{}
	in := strings.Repeat("0123456789abcdef", 64<<10)
	err = spdyExec(t, srv.URL, "/exec/default/ex/c", url.Values{"command": sh("wc -c"), "stdin": {"true"}, "stdout": {"true"}, "stderr": {"true"}},
		remotecommand.StreamOptions{Stdin: strings.NewReader(in), Stdout: out, Stderr: errOut})
	if err != nil || strings.TrimSpace(out.String()) != "1048576" {
		t.Fatalf("exec with stdin: %q %v", out.String(), err)
	}

	// A terminal: stdout only, a resize stream, no stderr stream.
	out = &syncbuf.Buffer{}
	sizes := make(sizeQueue, 1)
	sizes <- remotecommand.TerminalSize{Width: 91, Height: 17}
	close(sizes)
	err = spdyExec(t, srv.URL, "/exec/default/ex/c", url.Values{"command": sh("sleep 1; stty size"), "stdin": {"true"}, "stdout": {"true"}, "tty": {"true"}},
		remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: out, Tty: true, TerminalSizeQueue: sizes})
	if err != nil || !strings.Contains(out.String(), "17 91") {
		t.Fatalf("exec with a terminal: %q %v", out.String(), err)
	}

	// A command that cannot start is reported, not hung.
	err = spdyExec(t, srv.URL, "/exec/default/ex/c", url.Values{"command": {"/no/such/binary"}, "stdout": {"true"}},
		remotecommand.StreamOptions{Stdout: out})
	if err == nil || !strings.Contains(err.Error(), "no/such/binary") {
		t.Fatalf("missing binary: %v", err)
	}
}

// sizeQueue hands out the terminal sizes sent on it; closed, it ends.
type sizeQueue chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

func TestNodeAPIAttachSPDY(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "att"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c",
			Command: sh("while read l; do echo got:$l; done"), Stdin: true, StdinOnce: true}}}})
	h.waitPod("default", "att", 30*time.Second, "Running", podRunningReady)
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	var out, errOut syncbuf.Buffer
	if err := spdyExec(t, srv.URL, "/attach/default/att/c", url.Values{"stdin": {"true"}, "stdout": {"true"}, "stderr": {"true"}},
		remotecommand.StreamOptions{Stdin: strings.NewReader("one\ntwo\n"), Stdout: &out, Stderr: &errOut}); err != nil {
		t.Fatalf("attach: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); out.String() != "got:one\ngot:two\n" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if out.String() != "got:one\ngot:two\n" {
		t.Fatalf("attach output %q", out.String())
	}
	h.waitPod("default", "att", 20*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
}
