package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ClientConfig says how an agent reaches the server.
type ClientConfig struct {
	// Server is the API server's URL (https://host:port).
	Server string
	// TLS carries the node's client certificate and the cluster CA.
	TLS *tls.Config
	// Dial opens a raw connection to the server (default: TLS with TLS).
	Dial func(ctx context.Context) (net.Conn, error)
	// HTTPClient makes the control request (default: one built on TLS).
	HTTPClient *http.Client
}

// Client is the agent's half: it keeps the control stream open and serves
// each dial-back connection with the node API handler.
type Client struct {
	cfg     ClientConfig
	handler http.Handler
	log     *slog.Logger
	host    string
}

// NewClient returns an agent tunnel serving handler.
func NewClient(cfg ClientConfig, handler http.Handler, log *slog.Logger) (*Client, error) {
	u, err := url.Parse(cfg.Server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("tunnel: server URL %q: invalid", cfg.Server)
	}
	c := &Client{cfg: cfg, handler: handler, log: log, host: u.Host}
	if c.cfg.Dial == nil {
		d := &tls.Dialer{Config: cfg.TLS}
		c.cfg.Dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", u.Host) }
	}
	if c.cfg.HTTPClient == nil {
		c.cfg.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.TLS, ForceAttemptHTTP2: false}}
	}
	return c, nil
}

// maxBackoff caps the wait between reconnection attempts (one cheap HTTPS
// request each).
const maxBackoff = 5 * time.Second

// Run keeps the control stream up, reconnecting with back-off, until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		start := time.Now()
		err := c.control(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		c.log.Warn("node tunnel lost, reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		// At most maxBackoff between tries: once the server is back, logs,
		// exec and port-forward to this node work again within seconds.
		backoff = min(2*backoff, maxBackoff)
	}
}

func (c *Client) control(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.cfg.Server, "/")+ControlPath, nil)
	if err != nil {
		return err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control stream: %s", resp.Status)
	}
	c.log.Info("node tunnel connected", "server", c.cfg.Server)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "open "); ok {
			go c.dialBack(ctx, id)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errClosed
}

// dialBack opens the connection the server asked for and serves the one
// request it carries.
func (c *Client) dialBack(ctx context.Context, id string) {
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		c.log.Warn("node tunnel dial-back", "err", err)
		return
	}
	fmt.Fprintf(conn, "GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", DialBackPath, id, c.host, upgradeProto)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		c.log.Warn("node tunnel dial-back refused", "err", err)
		conn.Close()
		return
	}
	srv := &http.Server{Handler: c.handler, ReadHeaderTimeout: 30 * time.Second}
	_ = srv.Serve(newOneConnListener(&bufferedConn{Conn: conn, r: br}))
}

// bufferedConn reads first what the response reader buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// oneConnListener hands out one connection, then blocks until it closes.
type oneConnListener struct {
	conn   net.Conn
	once   sync.Once
	closed chan struct{}
	addr   net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{}), addr: c.LocalAddr()}
	l.conn = &notifyConn{Conn: c, l: l}
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, errClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.addr }

type notifyConn struct {
	net.Conn
	l    *oneConnListener
	once sync.Once
}

func (n *notifyConn) Close() error {
	err := n.Conn.Close()
	n.once.Do(func() { close(n.l.closed) })
	return err
}
