// Package tunnel carries the node API (logs, exec, attach, port-forward) over
// connections the agent opens to the server, so nodes behind NAT need no
// inbound port. The agent keeps a control stream open to the server; when a
// request for its node arrives, the server asks it, over that stream, to dial
// back a fresh connection, and proxies the request through it — plain
// responses are streamed, upgraded ones (SPDY, WebSocket) piped byte for
// byte.
package tunnel

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Paths the agent uses.
const (
	ControlPath  = "/v1-orch/tunnel"
	DialBackPath = "/v1-orch/tunnel/"
	upgradeProto = "orch-tunnel"
)

// Identify returns the node an agent's request authenticates as.
type Identify func(r *http.Request) (node string, ok bool)

// Broker is the server's half: it keeps the agents' control streams and
// implements the API server's NodeConnector.
type Broker struct {
	identify Identify
	log      *slog.Logger
	timeout  time.Duration

	mu       sync.Mutex
	sessions map[string]*session
	pending  map[string]chan net.Conn
	local    map[string]http.Handler
}

type session struct {
	node  string
	opens chan string
}

// NewBroker returns a broker that authenticates agents with identify.
func NewBroker(identify Identify, log *slog.Logger) *Broker {
	return &Broker{identify: identify, log: log, timeout: 10 * time.Second,
		sessions: map[string]*session{}, pending: map[string]chan net.Conn{}, local: map[string]http.Handler{}}
}

// RegisterLocal serves a node's API in-process (the agent inside `orch
// server`), without a tunnel.
func (b *Broker) RegisterLocal(node string, h http.Handler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.local[node] = h
}

// ServeControl is an agent's long-lived control stream: one line per
// requested dial-back ("open <id>"), and "ping" lines to keep it alive.
func (b *Broker) ServeControl(w http.ResponseWriter, r *http.Request) {
	node, ok := b.identify(r)
	if !ok {
		http.Error(w, "node credentials required", http.StatusUnauthorized)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	s := &session{node: node, opens: make(chan string, 16)}
	b.mu.Lock()
	b.sessions[node] = s
	b.mu.Unlock()
	b.log.Info("node tunnel connected", "node", node, "remote", r.RemoteAddr)
	defer func() {
		b.mu.Lock()
		if b.sessions[node] == s {
			delete(b.sessions, node)
		}
		b.mu.Unlock()
		b.log.Info("node tunnel disconnected", "node", node)
	}()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		var line string
		select {
		case <-r.Context().Done():
			return
		case id := <-s.opens:
			line = "open " + id + "\n"
		case <-ping.C:
			line = "ping\n"
		}
		if _, err := io.WriteString(w, line); err != nil {
			return
		}
		flusher.Flush()
	}
}

// ServeDialBack takes over a connection an agent dialed back for request id.
func (b *Broker) ServeDialBack(w http.ResponseWriter, r *http.Request) {
	node, ok := b.identify(r)
	if !ok {
		http.Error(w, "node credentials required", http.StatusUnauthorized)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, DialBackPath)
	b.mu.Lock()
	ch, ok := b.pending[id]
	if ok && !strings.HasPrefix(id, node+".") {
		ok = false
	}
	if ok {
		delete(b.pending, id)
	}
	b.mu.Unlock()
	if !ok || !strings.EqualFold(r.Header.Get("Upgrade"), upgradeProto) {
		http.Error(w, "unknown tunnel request", http.StatusNotFound)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "hijack unsupported", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeProto + "\r\n\r\n"); err != nil || rw.Flush() != nil {
		conn.Close()
		return
	}
	ch <- conn
}

// ServeNode proxies r to node's API at path rest (kubelet-style, e.g.
// "containerLogs/ns/pod/container").
func (b *Broker) ServeNode(w http.ResponseWriter, r *http.Request, node, rest string) {
	out := r.Clone(r.Context())
	out.URL.Path = "/" + rest
	out.URL.RawPath = ""
	out.RequestURI = ""
	out.Header.Del("Authorization")
	b.mu.Lock()
	h := b.local[node]
	b.mu.Unlock()
	if h != nil {
		out.RequestURI = out.URL.RequestURI()
		h.ServeHTTP(w, out)
		return
	}
	conn, err := b.dial(r.Context(), node)
	if err != nil {
		writeStatus(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer conn.Close()
	out.URL.Scheme, out.URL.Host, out.Host = "", "", node
	if isUpgrade(r) {
		b.pipeUpgrade(w, out, conn)
		return
	}
	out.Header.Set("Connection", "close")
	if err := out.Write(conn); err != nil {
		writeStatus(w, http.StatusBadGateway, "write to node: "+err.Error())
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), out)
	if err != nil {
		writeStatus(w, http.StatusBadGateway, "read from node: "+err.Error())
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// pipeUpgrade forwards an upgrade request and then copies bytes both ways
// between the client and the node.
func (b *Broker) pipeUpgrade(w http.ResponseWriter, out *http.Request, node net.Conn) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeStatus(w, http.StatusInternalServerError, "connection cannot be upgraded")
		return
	}
	if err := out.Write(node); err != nil {
		writeStatus(w, http.StatusBadGateway, "write to node: "+err.Error())
		return
	}
	client, crw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the client sent after its request are buffered in crw.
		if n := crw.Reader.Buffered(); n > 0 {
			pending, _ := crw.Reader.Peek(n)
			_, _ = node.Write(pending)
		}
		_, _ = io.Copy(node, client)
		closeWrite(node)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, node)
		closeWrite(client)
		done <- struct{}{}
	}()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// dial asks node's agent for a connection and waits for it.
func (b *Broker) dial(ctx context.Context, node string) (net.Conn, error) {
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	id := node + "." + hex.EncodeToString(raw[:])
	ch := make(chan net.Conn, 1)
	b.mu.Lock()
	s := b.sessions[node]
	if s != nil {
		b.pending[id] = ch
	}
	b.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("node %q is not connected", node)
	}
	defer func() {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
	}()
	select {
	case s.opens <- id:
	default:
		return nil, fmt.Errorf("node %q: too many requests in flight", node)
	}
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case c := <-ch:
		return c, nil
	case <-t.C:
		return nil, fmt.Errorf("node %q did not open a tunnel connection within %s", node, b.timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

func writeStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"code":%d}`, msg, code)
}

var errClosed = errors.New("tunnel: closed")
