package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// Port-forward protocol names: kubectl dials the WebSocket tunnel first
// (SPDY framed inside binary WebSocket messages, feature
// PortForwardWebsockets) and falls back to a plain SPDY upgrade.
const (
	portForwardProtocolV1   = "portforward.k8s.io"
	spdyOverWebSocketPrefix = "SPDY/3.1+"
)

// Port-forward timeouts, as the kubelet's defaults.
const (
	pfDialTimeout = 10 * time.Second
	pfPairTimeout = 30 * time.Second
	pfIdleTimeout = 4 * time.Hour
)

// servePortForward serves portForward/<ns>/<pod>: a SPDY (or SPDY over
// WebSocket) connection on which each forwarded TCP connection is a pair of
// streams, and each pair is copied to the stream's port on the pod's
// localhost, dialed inside the pod's network namespace as the kubelet's
// runtimes do (so servers bound to 127.0.0.1 in the pod are reachable too).
func (a *Agent) servePortForward(w http.ResponseWriter, r *http.Request, ns, name string) {
	pod, err := a.pods.Pods(ns).Get(name)
	if err != nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, name, a.cfg.NodeName), http.StatusNotFound)
		return
	}
	uid := pod.UID
	pf := &portForwarder{
		log: a.log.With("pod", ns+"/"+name), pod: ns + "/" + name, uid: uid,
		dial: func(ctx context.Context, port uint16) (net.Conn, error) {
			return a.dialPod(ctx, uid, port, pfDialTimeout)
		},
		pairTimeout: pfPairTimeout, idleTimeout: pfIdleTimeout,
	}
	pf.ServeHTTP(w, r)
}

// dialPod connects to port on the pod's localhost: inside its network
// namespace, or on the node for host-network pods.
func (a *Agent) dialPod(ctx context.Context, uid types.UID, port uint16, timeout time.Duration) (net.Conn, error) {
	a.mu.Lock()
	wk := a.workers[uid]
	a.mu.Unlock()
	hasIP := false
	if wk != nil {
		wk.mu.Lock()
		hasIP = len(wk.podIPs) > 0
		wk.mu.Unlock()
	}
	if !hasIP {
		return nil, errors.New("pod has no IP address: its network is not set up on this node")
	}
	sb, err := a.rt.Sandbox(string(uid))
	if err != nil {
		return nil, fmt.Errorf("pod sandbox: %w", err)
	}
	d := net.Dialer{Timeout: timeout}
	dial := func(addr string) (net.Conn, error) {
		if sb.NetNS == "" {
			return d.DialContext(ctx, "tcp", addr)
		}
		return dialInNetNS(ctx, sb.NetNS, &d, addr)
	}
	c, err := dial(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		// A server may listen on IPv6 localhost only.
		if c6, err6 := dial(net.JoinHostPort("::1", strconv.Itoa(int(port)))); err6 == nil {
			return c6, nil
		}
		return nil, err
	}
	return c, nil
}

// dialInNetNS connects to addr from the network namespace pinned at
// nsPath. The socket is made on a thread switched into the namespace; the
// thread goes back to its own namespace before it is released, or, when it
// cannot, exits with the goroutine.
func dialInNetNS(ctx context.Context, nsPath string, d *net.Dialer, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		c, back, err := func() (net.Conn, bool, error) {
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return nil, true, fmt.Errorf("own network namespace: %w", err)
			}
			defer orig.Close()
			target, err := os.Open(nsPath)
			if err != nil {
				return nil, true, fmt.Errorf("pod network namespace: %w", err)
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, true, fmt.Errorf("enter pod network namespace: %w", err)
			}
			c, err := d.DialContext(ctx, "tcp", addr)
			if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
				if c != nil {
					_ = c.Close()
				}
				return nil, false, fmt.Errorf("leave pod network namespace: %w", serr)
			}
			return c, true, err
		}()
		if back {
			goruntime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// portForwarder serves the port-forward protocol for one pod.
type portForwarder struct {
	log *slog.Logger
	// pod and uid name the pod in error messages.
	pod string
	uid types.UID
	// dial connects to a port of the pod; it is called for each forwarded
	// connection, so a pod whose network comes up late works.
	dial func(ctx context.Context, port uint16) (net.Conn, error)
	// pairTimeout bounds waiting for the second stream of a pair,
	// idleTimeout a connection without traffic.
	pairTimeout, idleTimeout time.Duration
}

// ServeHTTP upgrades r to SPDY or to SPDY over WebSocket and serves the
// forwarded connections until the client goes away.
func (pf *portForwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if wsstream.IsWebSocketRequest(r) {
		pf.serveWebSocket(w, r)
		return
	}
	if _, err := httpstream.Handshake(r, w, []string{portForwardProtocolV1}); err != nil {
		return // Handshake wrote the error.
	}
	s := pf.newSession()
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, s.newStream)
	if conn == nil {
		s.abort()
		pf.log.Warn("port-forward: SPDY upgrade failed")
		return
	}
	s.run(conn)
}

// serveWebSocket accepts the SPDY/3.1+portforward.k8s.io subprotocol and
// runs a SPDY server connection over the WebSocket's binary messages.
func (pf *portForwarder) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if _, ok := w.(http.Hijacker); !ok {
		http.Error(w, "unable to upgrade: connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	want := spdyOverWebSocketPrefix + portForwardProtocolV1
	srv := websocket.Server{
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			for _, p := range cfg.Protocol {
				if strings.TrimSpace(p) == want {
					cfg.Protocol = []string{want}
					return nil
				}
			}
			return fmt.Errorf("unable to upgrade: client offers %v, server accepts %s", cfg.Protocol, want)
		},
		Handler: func(ws *websocket.Conn) {
			ws.PayloadType = websocket.BinaryFrame
			s := pf.newSession()
			conn, err := spdy.NewServerConnection(ws, s.newStream)
			if err != nil {
				s.abort()
				pf.log.Warn("port-forward: SPDY over WebSocket", "err", err)
				return
			}
			s.run(conn)
		},
	}
	srv.ServeHTTP(w, r)
}

// replyStream is a stream the client opened, with the channel that closes once
// the server's reply to it is sent (data may flow only after that).
type replyStream struct {
	httpstream.Stream
	replySent <-chan struct{}
}

// pfPair is one forwarded connection: its error and data streams.
type pfPair struct {
	id         string
	port       uint16
	data, errs *replyStream
	timer      *time.Timer
}

// pfSession is one client connection.
type pfSession struct {
	pf      *portForwarder
	streams chan *replyStream
	expired chan *pfPair
	done    chan struct{}
	once    sync.Once
}

func (pf *portForwarder) newSession() *pfSession {
	return &pfSession{pf: pf, streams: make(chan *replyStream), expired: make(chan *pfPair), done: make(chan struct{})}
}

// abort releases a session whose connection never started.
func (s *pfSession) abort() { s.once.Do(func() { close(s.done) }) }

// newStream accepts or rejects a stream the client opens; it runs on the
// connection's frame loop, so it only checks headers and hands the stream on.
func (s *pfSession) newStream(st httpstream.Stream, replySent <-chan struct{}) error {
	h := st.Headers()
	switch t := h.Get(corev1.StreamType); t {
	case corev1.StreamTypeError, corev1.StreamTypeData:
	default:
		return fmt.Errorf("invalid stream type %q", t)
	}
	if _, err := parsePort(h.Get(corev1.PortHeader)); err != nil {
		return err
	}
	select {
	case s.streams <- &replyStream{Stream: st, replySent: replySent}:
		return nil
	case <-s.done:
		return errors.New("port-forward connection is closing")
	}
}

func parsePort(v string) (uint16, error) {
	if v == "" {
		return 0, fmt.Errorf("%q header is required", corev1.PortHeader)
	}
	p, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: %w", v, err)
	}
	if p == 0 {
		return 0, fmt.Errorf("port %q must be > 0", v)
	}
	return uint16(p), nil
}

// requestID pairs streams: the requestID header, or for clients that send
// none, the stream numbering (a data stream follows its error stream).
func requestID(st httpstream.Stream) string {
	h := st.Headers()
	if id := h.Get(corev1.PortForwardRequestIDHeader); id != "" {
		return id
	}
	n := int(st.Identifier())
	if h.Get(corev1.StreamType) == corev1.StreamTypeData {
		n -= 2
	}
	return strconv.Itoa(n)
}

// run pairs streams and forwards each pair until the connection closes, and
// returns when every forwarded connection has ended.
func (s *pfSession) run(conn httpstream.Connection) {
	conn.SetIdleTimeout(s.pf.idleTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	pairs := map[string]*pfPair{}
	var wg sync.WaitGroup
	defer func() {
		s.once.Do(func() { close(s.done) })
		for _, p := range pairs {
			p.timer.Stop()
			p.reset()
		}
		cancel()
		_ = conn.Close()
		wg.Wait()
	}()
	for {
		select {
		case <-conn.CloseChan():
			return
		case p := <-s.expired:
			if pairs[p.id] != p {
				continue // completed meanwhile
			}
			id := p.id
			delete(pairs, id)
			if p.errs != nil {
				<-p.errs.replySent
				fmt.Fprintf(p.errs, "timed out waiting for the data stream of request %s", id)
			}
			p.reset()
		case st := <-s.streams:
			id := requestID(st)
			p, ok := pairs[id]
			if !ok {
				port, _ := parsePort(st.Headers().Get(corev1.PortHeader))
				p = &pfPair{id: id, port: port}
				p.timer = time.AfterFunc(s.pf.pairTimeout, func() {
					select {
					case s.expired <- p:
					case <-s.done:
					}
				})
				pairs[id] = p
			}
			slot := &p.data
			if st.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
				slot = &p.errs
			}
			if *slot != nil {
				s.pf.log.Warn("port-forward: duplicate stream", "request", id, "type", st.Headers().Get(corev1.StreamType))
				_ = st.Reset()
				continue
			}
			*slot = st
			if p.data == nil || p.errs == nil {
				continue
			}
			p.timer.Stop()
			delete(pairs, id)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.RemoveStreams(p.data.Stream, p.errs.Stream)
				s.pf.forward(ctx, p)
			}()
		}
	}
}

// reset tears down the streams of an incomplete pair.
func (p *pfPair) reset() {
	for _, st := range []*replyStream{p.data, p.errs} {
		if st != nil {
			_ = st.Reset()
		}
	}
}

// forward copies one pair's data stream to and from the pod's port. Errors
// reaching the pod are written to the error stream, as the kubelet does;
// closing the error stream tells the client the connection is over.
func (pf *portForwarder) forward(ctx context.Context, p *pfPair) {
	<-p.data.replySent
	<-p.errs.replySent
	defer p.errs.Close()
	fail := func(err error) {
		msg := fmt.Sprintf("error forwarding port %d to pod %s, uid %v: %v", p.port, pf.pod, pf.uid, err)
		pf.log.Info("port-forward", "port", p.port, "err", err)
		_, _ = io.WriteString(p.errs, msg)
		_ = p.data.Close()
	}
	c, err := pf.dial(ctx, p.port)
	if err != nil {
		fail(err)
		return
	}
	defer c.Close()
	// The session ending (client gone, idle timeout) ends the copies.
	stop := context.AfterFunc(ctx, func() { _ = c.Close(); _ = p.data.Reset() })
	defer stop()
	fromClient := make(chan struct{})
	go func() {
		defer close(fromClient)
		if _, err := io.Copy(c, p.data); err != nil {
			pf.log.Debug("port-forward: client to pod", "port", p.port, "err", err)
		}
		// The client closed its side (or reset the stream): pass the
		// half-close on so the pod sees EOF and can finish its answer.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	if _, err := io.Copy(p.data, c); err != nil {
		pf.log.Debug("port-forward: pod to client", "port", p.port, "err", err)
	}
	_ = p.data.Close()
	// The client resets the data stream once it has read the pod's side to
	// the end, which ends the other copy.
	<-fromClient
}
