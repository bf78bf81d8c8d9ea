package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// its main process (attach=true) over a WebSocket remote command stream:
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
	if !wsstream.IsWebSocketRequest(r) {
		http.Error(w, "exec is served over WebSocket (v5.channel.k8s.io/v4.channel.k8s.io); SPDY is not supported", http.StatusBadRequest)
		return
	}
	conn := wsstream.NewConn(execProtocols())
	conn.SetIdleTimeout(4 * time.Hour)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		a.log.Warn("exec: open stream", "pod", ns+"/"+name, "err", err)
		return
	}
	defer conn.Close()
	opts := runtime.ExecOptions{Cmd: cmd, TTY: tty}
	if stdin {
		opts.Stdin = streams[chanStdin]
	}
	if stdout {
		opts.Stdout = streams[chanStdout]
	}
	if stderr && !tty {
		opts.Stderr = streams[chanStderr]
	}
	var resize chan runtime.TermSize
	if tty {
		resize = make(chan runtime.TermSize, 1)
		opts.Resize = resize
		go func() {
			defer close(resize)
			dec := json.NewDecoder(streams[chanResize])
			for {
				var sz struct{ Width, Height uint16 }
				if err := dec.Decode(&sz); err != nil {
					return
				}
				select {
				case resize <- runtime.TermSize{Width: sz.Width, Height: sz.Height}:
				case <-r.Context().Done():
					return
				}
			}
		}()
	}
	if attach {
		err := a.rt.Attach(r.Context(), id, runtime.AttachStreams{Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, Resize: resize})
		writeExecStatus(streams[chanError], 0, err)
		return
	}
	code, err := a.rt.Exec(r.Context(), id, opts)
	writeExecStatus(streams[chanError], code, err)
}

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
