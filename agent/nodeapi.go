package agent

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/orch-dev/orch/runtime"
)

// NodeAPI returns the handler of the kubelet-style paths the API server
// forwards for `kubectl logs` and friends:
//
//	GET containerLogs/<ns>/<pod>/<container>?follow&tailLines&sinceSeconds&sinceTime&timestamps&previous&limitBytes
//
//	GET exec/<ns>/<pod>/<container>?command=...&stdin&stdout&stderr&tty   (WebSocket v5/v4.channel.k8s.io)
//	GET attach/<ns>/<pod>/<container>?stdin&stdout&stderr&tty             (same protocol)
//
//	GET|POST portForward/<ns>/<pod>   (SPDY portforward.k8s.io, or SPDY over WebSocket SPDY/3.1+portforward.k8s.io)
//
// Paths may carry a leading "/".
func (a *Agent) NodeAPI() http.Handler {
	return http.HandlerFunc(a.serveNode)
}

func (a *Agent) serveNode(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	parts := strings.Split(p, "/")
	switch parts[0] {
	case "containerLogs":
		if len(parts) != 4 || r.Method != http.MethodGet {
			http.Error(w, "expected GET containerLogs/<namespace>/<pod>/<container>", http.StatusBadRequest)
			return
		}
		a.serveLogs(w, r, parts[1], parts[2], parts[3])
	case "exec", "attach":
		if len(parts) != 4 {
			http.Error(w, "expected "+parts[0]+"/<namespace>/<pod>/<container>", http.StatusBadRequest)
			return
		}
		a.serveExec(w, r, parts[1], parts[2], parts[3], parts[0] == "attach")
	case "portForward":
		if len(parts) != 3 {
			http.Error(w, "expected portForward/<namespace>/<pod>", http.StatusBadRequest)
			return
		}
		a.servePortForward(w, r, parts[1], parts[2])
	default:
		http.NotFound(w, r)
	}
}

// limitWriter stops after n bytes.
type limitWriter struct {
	w http.ResponseWriter
	n int64
}

var errLimit = errors.New("limitBytes reached")

func (l *limitWriter) Write(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	cut := false
	if int64(len(b)) > l.n {
		b, cut = b[:l.n], true
	}
	n, err := l.w.Write(b)
	l.n -= int64(n)
	if f, ok := l.w.(http.Flusher); ok {
		f.Flush()
	}
	if err == nil && cut {
		err = errLimit
	}
	return n, err
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request, ns, name, container string) {
	pod, err := a.pods.Pods(ns).Get(name)
	if err != nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, name, a.cfg.NodeName), http.StatusNotFound)
		return
	}
	if findContainer(pod, container) == nil {
		http.Error(w, fmt.Sprintf("container %s is not valid for pod %s", container, name), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	opts := runtime.LogOptions{Tail: -1}
	boolQ := func(k string) bool { v := q.Get(k); return v == "true" || v == "1" }
	opts.Follow, opts.Timestamps = boolQ("follow"), boolQ("timestamps")
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "tailLines must be a non-negative integer", http.StatusBadRequest)
			return
		}
		opts.Tail = n
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			http.Error(w, "sinceSeconds must be a positive integer", http.StatusBadRequest)
			return
		}
		opts.Since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			http.Error(w, "sinceTime must be RFC3339", http.StatusBadRequest)
			return
		}
		opts.Since = t
	}
	a.mu.Lock()
	wk := a.workers[pod.UID]
	a.mu.Unlock()
	id := ""
	if wk != nil {
		wk.mu.Lock()
		if rec, ok := wk.ctrs[container]; ok {
			id = rec.id
			if boolQ("previous") {
				id = rec.lastID
			}
		}
		wk.mu.Unlock()
	}
	if id == "" {
		msg := fmt.Sprintf("container %q in pod %q is waiting to start", container, name)
		if boolQ("previous") {
			msg = fmt.Sprintf("previous terminated container %q in pod %q not found", container, name)
		}
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	var out io.Writer = flushWriter{w}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			http.Error(w, "limitBytes must be a positive integer", http.StatusBadRequest)
			return
		}
		out = &limitWriter{w: w, n: n}
	}
	w.Header().Set("Content-Type", "text/plain")
	cw := &countWriter{w: out}
	err = a.rt.Logs(r.Context(), id, opts, cw)
	switch {
	case err == nil, errors.Is(err, errLimit), r.Context().Err() != nil:
	case cw.n == 0:
		// Nothing sent yet: the client gets the error, not an empty log
		// (the container was removed since it was looked up, say).
		code := http.StatusInternalServerError
		if errors.Is(err, runtime.ErrNotFound) {
			code = http.StatusNotFound
		}
		http.Error(w, fmt.Sprintf("logs of container %q in pod %q: %v", container, name, err), code)
	default:
		a.log.Warn("serve container logs", "pod", ns+"/"+name, "container", container, "err", err)
	}
}

// countWriter counts what reaches w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
