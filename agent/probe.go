package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/orch-dev/orch/internal/syncbuf"
	"github.com/orch-dev/orch/runtime"
)

// probeKind is liveness, readiness or startup.
type probeKind int

const (
	liveness probeKind = iota
	readiness
	startup
)

func (k probeKind) String() string {
	return [...]string{"Liveness", "Readiness", "Startup"}[k]
}

// resolvePort turns a named or numbered probe port into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil && n > 0 && n <= 65535 {
		return n, nil
	}
	return 0, fmt.Errorf("no port named %q in container %s", p.StrVal, c.Name)
}

// handlerTarget is where network handlers connect by default: the pod IP.
func (w *podWorker) handlerHost(pod *corev1.Pod) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.podIPs) > 0 {
		return w.podIPs[0]
	}
	return "127.0.0.1"
}

// runHandler runs a lifecycle hook (exec, httpGet, sleep).
func (w *podWorker) runHandler(ctx context.Context, pod *corev1.Pod, id string, h *corev1.LifecycleHandler) error {
	c := w.containerByID(pod, id)
	switch {
	case h.Exec != nil:
		var out syncbuf.Buffer
		code, err := w.a.rt.Exec(ctx, id, runtime.ExecOptions{Cmd: h.Exec.Command, Stdout: &out, Stderr: &out})
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("command %q exited with %d: %s", h.Exec.Command, code, strings.TrimSpace(out.String()))
		}
		return nil
	case h.HTTPGet != nil:
		ok, msg, err := httpProbe(ctx, h.HTTPGet, c, w.handlerHost(pod))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New(msg)
		}
		return nil
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-ctx.Done():
		}
		return nil
	case h.TCPSocket != nil:
		return errors.New("tcpSocket lifecycle handlers are deprecated and not supported")
	}
	return errors.New("lifecycle handler has no action")
}

func (w *podWorker) containerByID(pod *corev1.Pod, id string) *corev1.Container {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, r := range w.ctrs {
		if r.id == id {
			return findContainer(pod, name)
		}
	}
	return &corev1.Container{}
}

// httpProbe does one HTTP GET: 200..399 succeeds.
func httpProbe(ctx context.Context, g *corev1.HTTPGetAction, c *corev1.Container, defHost string) (bool, string, error) {
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return false, "", err
	}
	host := g.Host
	if host == "" {
		host = defHost
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, "", err
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
		} else {
			req.Header.Add(h.Name, h.Value)
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} //nolint:gosec // probes do not verify, as upstream
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Sprintf("Get %q: %v", url, err), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, "", nil
	}
	return false, fmt.Sprintf("HTTP probe failed with statuscode: %d: %s", resp.StatusCode, strings.TrimSpace(string(body))), nil
}

// probeOnce runs one probe attempt.
func (w *podWorker) probeOnce(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, p *corev1.Probe) (bool, string) {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.Exec != nil:
		var out syncbuf.Buffer
		code, err := w.a.rt.Exec(ctx, id, runtime.ExecOptions{Cmd: p.Exec.Command, Stdout: &out, Stderr: &out})
		if ctx.Err() != nil {
			return false, fmt.Sprintf("command %q timed out", p.Exec.Command)
		}
		if err != nil {
			return false, err.Error()
		}
		if code != 0 {
			return false, strings.TrimSpace(out.String())
		}
		return true, ""
	case p.HTTPGet != nil:
		ok, msg, err := httpProbe(ctx, p.HTTPGet, c, w.handlerHost(pod))
		if err != nil {
			return false, err.Error()
		}
		return ok, msg
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = w.handlerHost(pod)
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, fmt.Sprintf("dial tcp %s: %v", net.JoinHostPort(host, strconv.Itoa(port)), err)
		}
		_ = conn.Close()
		return true, ""
	case p.GRPC != nil:
		return false, "grpc probes are not supported by orch"
	}
	return false, "probe has no action"
}

// startProbes runs the container's probes until it is replaced.
func (w *podWorker) startProbes(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rec *containerRec, id string) {
	if c.LivenessProbe == nil && c.ReadinessProbe == nil && c.StartupProbe == nil {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	rec.probeStop = cancel
	w.mu.Unlock()
	startedCh := make(chan struct{})
	if c.StartupProbe == nil {
		close(startedCh)
	} else {
		go w.probeLoop(pctx, pod, c, rec, id, startup, c.StartupProbe, nil, startedCh)
	}
	if c.LivenessProbe != nil {
		go w.probeLoop(pctx, pod, c, rec, id, liveness, c.LivenessProbe, startedCh, nil)
	}
	if c.ReadinessProbe != nil {
		go w.probeLoop(pctx, pod, c, rec, id, readiness, c.ReadinessProbe, startedCh, nil)
	}
}

func (w *podWorker) probeLoop(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rec *containerRec, id string,
	kind probeKind, p *corev1.Probe, wait <-chan struct{}, started chan struct{}) {
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return
		}
	}
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	success, failure := int(max(p.SuccessThreshold, 1)), int(max(p.FailureThreshold, 1))
	if kind != readiness {
		success = 1
	}
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !sleep(time.Duration(p.InitialDelaySeconds) * time.Second) {
		return
	}
	var okRun, failRun int
	for {
		ok, msg := w.probeOnce(ctx, pod, c, id, p)
		if ctx.Err() != nil {
			return
		}
		if ok {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
			w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", kind, msg)
		}
		changed := false
		w.mu.Lock()
		switch kind {
		case startup:
			if okRun >= success && !rec.started {
				rec.started, changed = true, true
			}
			if failRun >= failure {
				rec.livenessFailed, changed = true, true
			}
		case liveness:
			if failRun >= failure {
				rec.livenessFailed, changed = true, true
				failRun = 0
			}
		case readiness:
			if okRun >= success && !rec.ready {
				rec.ready, changed = true, true
			}
			if failRun >= failure && rec.ready {
				rec.ready, changed = false, true
			}
		}
		w.mu.Unlock()
		if changed {
			w.poke()
		}
		if kind == startup && okRun >= success {
			close(started)
			return // startup probes stop once they succeed
		}
		if kind == startup && failRun >= failure {
			return
		}
		if !sleep(period) {
			return
		}
	}
}
