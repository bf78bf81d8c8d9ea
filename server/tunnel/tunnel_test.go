package tunnel

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// nodeAPI is a stand-in for the agent's node API: a streamed log and an
// upgraded echo connection.
func nodeAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/containerLogs/ns/pod/c", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "line1 "+r.URL.Query().Get("tailLines")+"\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "line2\n")
	})
	mux.HandleFunc("/exec/ns/pod/c", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = rw.Flush()
		line, _ := rw.ReadString('\n')
		_, _ = rw.WriteString("echo: " + line)
		_ = rw.Flush()
	})
	return mux
}

func TestTunnel(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := NewBroker(func(r *http.Request) (string, bool) { return "n1", r.Header.Get("X-Test-Deny") == "" }, log)
	mux := http.NewServeMux()
	mux.HandleFunc(ControlPath, b.ServeControl)
	mux.HandleFunc(DialBackPath, b.ServeDialBack)
	mux.HandleFunc("/api/logs", func(w http.ResponseWriter, r *http.Request) { b.ServeNode(w, r, "n1", "containerLogs/ns/pod/c") })
	mux.HandleFunc("/api/exec", func(w http.ResponseWriter, r *http.Request) { b.ServeNode(w, r, "n1", "exec/ns/pod/c") })
	mux.HandleFunc("/api/other", func(w http.ResponseWriter, r *http.Request) { b.ServeNode(w, r, "n2", "containerLogs/ns/pod/c") })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	addr := strings.TrimPrefix(srv.URL, "http://")
	c, err := NewClient(ClientConfig{Server: srv.URL, HTTPClient: srv.Client(),
		Dial: func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) }}, nodeAPI(), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		up := b.sessions["n1"] != nil
		b.mu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}

	resp, err := http.Get(srv.URL + "/api/logs?tailLines=5")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "line1 5\nline2\n" {
		t.Fatalf("logs through the tunnel: %d %q", resp.StatusCode, body)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /api/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello\n")
	br := bufio.NewReader(conn)
	up, err := http.ReadResponse(br, nil)
	if err != nil || up.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", err, up)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "echo: hello\n" {
		t.Fatalf("upgraded echo: %q %v", line, err)
	}

	resp, err = http.Get(srv.URL + "/api/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("unconnected node: %d", resp.StatusCode)
	}
	// A dial-back for an unknown request is refused.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+DialBackPath+"n1.bogus", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", upgradeProto)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bogus dial-back: %d", resp.StatusCode)
	}
}
