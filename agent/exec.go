package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"k8s.io/streaming/pkg/httpstream/wsstream"

	"github.com/orch-dev/orch/runtime"
)

// Remote command channels (k8s.io/client-go/tools/remotecommand).
const (
	chanStdin = iota
	chanStdout
	chanStderr
	chanError
	chanResize
)

// execProtocols are the WebSocket subprotocols exec is served with (what
// kubectl 1.29+ speaks; v5 adds closing stdin).
func execProtocols() map[string]wsstream.ChannelProtocolConfig {
	ch := []wsstream.ChannelType{wsstream.ReadChannel, wsstream.WriteChannel, wsstream.WriteChannel, wsstream.WriteChannel, wsstream.ReadChannel}
	return map[string]wsstream.ChannelProtocolConfig{
		"v5.channel.k8s.io": {Binary: true, Channels: ch},
		"v4.channel.k8s.io": {Binary: true, Channels: ch},
	}
}

// serveExec runs a command in a container (attach=false) or attaches to
// its main process (attach=true) over a WebSocket or SPDY remote command
// stream:
// exec/<ns>/<pod>/<container>?command=...&stdin&stdout&stderr&tty and
// attach/<ns>/<pod>/<container>?stdin&stdout&stderr&tty (the kubelet's
// input/output/error names are accepted too).
func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request, ns, name, container string, attach bool) {
	q := r.URL.Query()
	flag := func(names ...string) bool {
		for _, n := range names {
			if v := q.Get(n); v == "true" || v == "1" {
				return true
			}
		}
		return false
	}
	cmd := q["command"]
	if len(cmd) == 0 && !attach {
		http.Error(w, "you must specify at least one command for the container", http.StatusBadRequest)
		return
	}
	stdin, stdout, stderr, tty := flag("stdin", "input"), flag("stdout", "output"), flag("stderr", "error"), flag("tty")
	if !stdin && !stdout && !stderr {
		http.Error(w, "you must specify at least one of stdin, stdout, stderr", http.StatusBadRequest)
		return
	}
	id, status, msg := a.runningContainer(ns, name, container)
	if id == "" {
		http.Error(w, msg, status)
		return
	}
	switch {
	case wsstream.IsWebSocketRequest(r):
		a.serveExecWebSocket(w, r, id, cmd, attach, stdin, stdout, stderr, tty)
	case httpstream.IsUpgradeRequest(r):
		a.serveExecSPDY(w, r, id, cmd, attach, stdin, stdout, stderr, tty)
	default:
		what := "exec"
		if attach {
			what = "attach"
		}
		http.Error(w, what+" needs a WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) or SPDY (v5.channel.k8s.io, v4.channel.k8s.io) upgrade", http.StatusBadRequest)
	}
}

// remoteStreams are the client's ends of a remote command; nil ones were
// not requested.
type remoteStreams struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	resize         io.Reader
	status         io.Writer
}

// serveExecWebSocket serves exec/attach over a WebSocket channel protocol.
func (a *Agent) serveExecWebSocket(w http.ResponseWriter, r *http.Request, id string, cmd []string, attach, stdin, stdout, stderr, tty bool) {
	conn := wsstream.NewConn(execProtocols())
	conn.SetIdleTimeout(4 * time.Hour)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		a.log.Warn("exec: open stream", "container", id, "err", err)
		return
	}
	defer conn.Close()
	rs := remoteStreams{status: streams[chanError]}
	if stdin {
		rs.stdin = streams[chanStdin]
	}
	if stdout {
		rs.stdout = streams[chanStdout]
	}
	if stderr && !tty {
		rs.stderr = streams[chanStderr]
	}
	if tty {
		rs.resize = streams[chanResize]
	}
	a.runRemote(r.Context(), id, cmd, attach, tty, rs)
}

// runRemote runs the command (or attaches) with the client's streams and
// reports the end on the status stream.
func (a *Agent) runRemote(ctx context.Context, id string, cmd []string, attach, tty bool, rs remoteStreams) {
	opts := runtime.ExecOptions{Cmd: cmd, TTY: tty, Stdin: rs.stdin, Stdout: rs.stdout, Stderr: rs.stderr}
	var resize chan runtime.TermSize
	if tty && rs.resize != nil {
		resize = make(chan runtime.TermSize, 1)
		opts.Resize = resize
		go func() {
			defer close(resize)
			dec := json.NewDecoder(rs.resize)
			for {
				var sz struct{ Width, Height uint16 }
				if err := dec.Decode(&sz); err != nil {
					return
				}
				select {
				case resize <- runtime.TermSize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	if attach {
		err := a.rt.Attach(ctx, id, runtime.AttachStreams{Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, Resize: resize})
		writeExecStatus(rs.status, 0, err)
		return
	}
	code, err := a.rt.Exec(ctx, id, opts)
	writeExecStatus(rs.status, code, err)
}

// spdyExecProtocols are the SPDY remote command versions served; v5 is v4
// on SPDY (its stdin close signal exists on WebSocket only).
var spdyExecProtocols = []string{"v5.channel.k8s.io", "v4.channel.k8s.io"}

// serveExecSPDY serves exec/attach over SPDY, the protocol of clients
// without WebSocket support (client-go's NewSPDYExecutor, kubectl with
// KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false): the client opens one stream per
// channel, named by its streamType header.
func (a *Agent) serveExecSPDY(w http.ResponseWriter, r *http.Request, id string, cmd []string, attach, stdin, stdout, stderr, tty bool) {
	if _, err := httpstream.Handshake(r, w, spdyExecProtocols); err != nil {
		return // Handshake wrote the error.
	}
	want := map[string]bool{corev1.StreamTypeError: true, corev1.StreamTypeStdin: stdin, corev1.StreamTypeStdout: stdout,
		corev1.StreamTypeStderr: stderr && !tty, corev1.StreamTypeResize: tty}
	expected := 0
	for _, ok := range want {
		if ok {
			expected++
		}
	}
	// The handler runs on the connection's frame loop: it must not block.
	arrived := make(chan *replyStream, len(want))
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(st httpstream.Stream, replySent <-chan struct{}) error {
		if t := st.Headers().Get(corev1.StreamType); !want[t] {
			return fmt.Errorf("unexpected stream type %q", t)
		}
		select {
		case arrived <- &replyStream{Stream: st, replySent: replySent}:
			return nil
		default:
			return errors.New("too many streams")
		}
	})
	if conn == nil {
		a.log.Warn("exec: SPDY upgrade failed", "container", id)
		return
	}
	defer conn.Close()
	conn.SetIdleTimeout(4 * time.Hour)
	streams := map[string]*replyStream{}
	timeout := time.NewTimer(execStreamTimeout)
	defer timeout.Stop()
	for len(streams) < expected {
		select {
		case st := <-arrived:
			t := st.Headers().Get(corev1.StreamType)
			if streams[t] != nil {
				_ = st.Reset()
				continue
			}
			streams[t] = st
		case <-timeout.C:
			if st := streams[corev1.StreamTypeError]; st != nil {
				<-st.replySent
				writeExecStatus(st, 0, errors.New("timed out waiting for the client to create streams"))
			}
			a.log.Warn("exec: SPDY streams missing", "container", id, "got", len(streams), "want", expected)
			return
		case <-conn.CloseChan():
			return
		}
	}
	for _, st := range streams {
		<-st.replySent
	}
	// The client going away ends the command, as the connection's streams
	// can no longer carry its input or output.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-conn.CloseChan():
			cancel()
		case <-ctx.Done():
		}
	}()
	rs := remoteStreams{status: streams[corev1.StreamTypeError]}
	if st := streams[corev1.StreamTypeStdin]; st != nil {
		rs.stdin = st
	}
	if st := streams[corev1.StreamTypeStdout]; st != nil {
		rs.stdout = st
	}
	if st := streams[corev1.StreamTypeStderr]; st != nil {
		rs.stderr = st
	}
	if st := streams[corev1.StreamTypeResize]; st != nil {
		rs.resize = st
	}
	a.runRemote(ctx, id, cmd, attach, tty, rs)
	// Output ends before the status, and the status before the
	// connection: the client reads each stream to its end.
	for _, t := range []string{corev1.StreamTypeStdout, corev1.StreamTypeStderr, corev1.StreamTypeError} {
		if st := streams[t]; st != nil {
			_ = st.Close()
		}
	}
}

// execStreamTimeout bounds waiting for the client's SPDY streams.
const execStreamTimeout = 30 * time.Second

// writeExecStatus reports the command's end on the error channel as a
// metav1.Status, as the kubelet does.
func writeExecStatus(w io.Writer, code int, err error) {
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess}
	switch {
	case err != nil:
		st = apierrors.NewInternalError(err).ErrStatus
		st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	case code != 0:
		st.Status, st.Reason = metav1.StatusFailure, "NonZeroExitCode"
		st.Message = fmt.Sprintf("command terminated with non-zero exit code: %d", code)
		st.Details = &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: strconv.Itoa(code)}}}
	}
	b, _ := json.Marshal(st)
	_, _ = w.Write(b)
}

// runningContainer returns the runtime ID of a pod's running container,
// or an HTTP status and message saying why there is none.
func (a *Agent) runningContainer(ns, name, container string) (string, int, string) {
	pod, err := a.pods.Pods(ns).Get(name)
	if err != nil {
		return "", http.StatusNotFound, fmt.Sprintf("pod %s/%s not found on node %s", ns, name, a.cfg.NodeName)
	}
	if findContainer(pod, container) == nil {
		return "", http.StatusBadRequest, fmt.Sprintf("container %s is not valid for pod %s", container, name)
	}
	a.mu.Lock()
	wk := a.workers[pod.UID]
	a.mu.Unlock()
	id := ""
	if wk != nil {
		wk.mu.Lock()
		if rec, ok := wk.ctrs[container]; ok {
			id = rec.id
		}
		wk.mu.Unlock()
	}
	if id != "" {
		if st, err := a.rt.ContainerStatus(id); err == nil && st.State == runtime.StateRunning {
			return id, 0, ""
		}
	}
	return "", http.StatusBadRequest, fmt.Sprintf("container %s is not running", container)
}
