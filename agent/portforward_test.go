package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// echoListener is the "pod": a TCP echo server on loopback that echoes
// until the client half-closes, then closes.
func echoListener(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

// pfServer serves a portForwarder over httptest and counts the sessions
// still being served, so tests can check that every connection ends.
type pfServer struct {
	*httptest.Server
	active atomic.Int32
	target atomic.Value // string: the host connections dial; "" = no IP
}

func newPFServer(t *testing.T) *pfServer {
	t.Helper()
	s := &pfServer{}
	s.target.Store("127.0.0.1")
	pf := &portForwarder{log: discardLog(), pod: "default/web", uid: "uid-1",
		dial: func(ctx context.Context, port uint16) (net.Conn, error) {
			h := s.target.Load().(string)
			if h == "" {
				return nil, errors.New("pod has no IP address")
			}
			d := net.Dialer{Timeout: 2 * time.Second}
			return d.DialContext(ctx, "tcp", net.JoinHostPort(h, strconv.Itoa(int(port))))
		},
		pairTimeout: 2 * time.Second, idleTimeout: time.Minute}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.active.Add(1)
		defer s.active.Add(-1)
		pf.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.Close()
		s.waitIdle(t)
		noForwarderGoroutines(t)
	})
	return s
}

// noForwarderGoroutines fails if a goroutine of the port-forward server is
// still running (the tests of this file do not run in parallel).
func noForwarderGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "agent.(*portForwarder)") || strings.Contains(g, "agent.(*pfSession)") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d port-forward goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitIdle fails unless every served session has returned.
func (s *pfServer) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("%d port-forward sessions still being served", s.active.Load())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type dialerKind int

const (
	viaSPDY dialerKind = iota
	viaWebSocket
	viaFallback // what kubectl does: WebSocket first, SPDY if the upgrade fails
)

func (k dialerKind) String() string { return [...]string{"spdy", "websocket", "fallback"}[k] }

func (s *pfServer) dialer(t *testing.T, k dialerKind) httpstream.Dialer {
	t.Helper()
	return s.dialerB(t, k)
}

func (s *pfServer) dialerB(t testing.TB, k dialerKind) httpstream.Dialer {
	t.Helper()
	cfg := &rest.Config{Host: s.URL}
	u, _ := url.Parse(s.URL + "/portForward/default/web")
	rt, up, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp := spdy.NewDialer(up, &http.Client{Transport: rt}, http.MethodPost, u)
	if k == viaSPDY {
		return sp
	}
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if k == viaWebSocket {
		return ws
	}
	return portforward.NewFallbackDialer(ws, sp, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// forward runs client-go's port forwarder for remote port and returns the
// local port and a stop function that waits for ForwardPorts to return.
func forward(t *testing.T, d httpstream.Dialer, remote int) (int, func() error) {
	t.Helper()
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(d, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(remote)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("ForwardPorts: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("port forwarder not ready")
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var ferr error
	return int(ports[0].Local), func() error {
		once.Do(func() {
			close(stop)
			select {
			case ferr = <-done:
			case <-time.After(10 * time.Second):
				ferr = errors.New("ForwardPorts did not return")
			}
		})
		return ferr
	}
}

// echoThrough sends payload through the local port, half-closes, and returns
// everything that comes back.
func echoThrough(port int, payload []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err := <-werr; err != nil {
		return got, err
	}
	return got, err
}

func TestPortForwardEcho(t *testing.T) {
	pod := echoListener(t)
	for _, k := range []dialerKind{viaSPDY, viaWebSocket, viaFallback} {
		t.Run(k.String(), func(t *testing.T) {
			s := newPFServer(t)
			local, stop := forward(t, s.dialer(t, k), pod)
			// Several connections at once, one of them large.
			payloads := [][]byte{[]byte("hello"), make([]byte, 1<<20), []byte("third")}
			_, _ = rand.Read(payloads[1])
			var wg sync.WaitGroup
			for i, p := range payloads {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got, err := echoThrough(local, p)
					if err != nil || !bytes.Equal(got, p) {
						t.Errorf("connection %d: %d of %d bytes back, err %v", i, len(got), len(p), err)
					}
				}()
			}
			wg.Wait()
			if err := stop(); err != nil {
				t.Errorf("ForwardPorts: %v", err)
			}
			s.waitIdle(t)
		})
	}
}

// streamPair opens one forwarded connection's streams by hand, as the
// client does, and returns them.
func streamPair(t *testing.T, conn httpstream.Connection, port, id string) (errS, dataS httpstream.Stream) {
	t.Helper()
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, port)
	h.Set(corev1.PortForwardRequestIDHeader, id)
	errS, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	_ = errS.Close()
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	dataS, err = conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	return errS, dataS
}

func readErrorStream(t *testing.T, s httpstream.Stream) string {
	t.Helper()
	done := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(s); done <- b }()
	select {
	case b := <-done:
		return string(b)
	case <-time.After(10 * time.Second):
		t.Fatal("error stream not closed")
		return ""
	}
}

func TestPortForwardErrors(t *testing.T) {
	pod := echoListener(t)
	for _, k := range []dialerKind{viaSPDY, viaWebSocket} {
		t.Run(k.String(), func(t *testing.T) {
			s := newPFServer(t)
			conn, proto, err := s.dialer(t, k).Dial(portForwardProtocolV1)
			if err != nil || proto != portForwardProtocolV1 {
				t.Fatalf("dial: %q %v", proto, err)
			}
			defer conn.Close()

			// A closed port: the dial error comes on the error stream and
			// the data stream ends.
			errS, dataS := streamPair(t, conn, strconv.Itoa(closedPort(t)), "1")
			if msg := readErrorStream(t, errS); !strings.Contains(msg, "error forwarding port") || !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "default/web") {
				t.Errorf("closed port: error stream %q", msg)
			}
			if b, _ := io.ReadAll(dataS); len(b) != 0 {
				t.Errorf("closed port: data %q", b)
			}
			_ = dataS.Reset()

			// A pod without an IP.
			s.target.Store("")
			errS, dataS = streamPair(t, conn, strconv.Itoa(pod), "2")
			if msg := readErrorStream(t, errS); !strings.Contains(msg, "no IP address") {
				t.Errorf("no IP: error stream %q", msg)
			}
			_ = dataS.Reset()
			s.target.Store("127.0.0.1")

			// Bad headers are refused when the stream is opened.
			for _, h := range []http.Header{
				{corev1.StreamType: {corev1.StreamTypeData}, corev1.PortHeader: {"http"}, corev1.PortForwardRequestIDHeader: {"3"}},
				{corev1.StreamType: {corev1.StreamTypeData}, corev1.PortHeader: {"0"}, corev1.PortForwardRequestIDHeader: {"3"}},
				{corev1.StreamType: {corev1.StreamTypeData}, corev1.PortForwardRequestIDHeader: {"3"}},
				{corev1.StreamType: {"bogus"}, corev1.PortHeader: {"80"}, corev1.PortForwardRequestIDHeader: {"3"}},
			} {
				if st, err := conn.CreateStream(h); err == nil {
					t.Errorf("stream with headers %v accepted", h)
					_ = st.Reset()
				}
			}

			// An error stream whose data stream never comes times out.
			h := http.Header{}
			h.Set(corev1.StreamType, corev1.StreamTypeError)
			h.Set(corev1.PortHeader, strconv.Itoa(pod))
			h.Set(corev1.PortForwardRequestIDHeader, "4")
			lone, err := conn.CreateStream(h)
			if err != nil {
				t.Fatal(err)
			}
			_ = lone.Close()
			if msg := readErrorStream(t, lone); !strings.Contains(msg, "timed out") {
				t.Errorf("lone error stream: %q", msg)
			}

			// The same connection still forwards.
			errS, dataS = streamPair(t, conn, strconv.Itoa(pod), "5")
			if _, err := dataS.Write([]byte("still works")); err != nil {
				t.Fatal(err)
			}
			_ = dataS.Close()
			got, _ := io.ReadAll(dataS)
			if string(got) != "still works" {
				t.Errorf("after errors: %q", got)
			}
			_ = dataS.Reset()
			if msg := readErrorStream(t, errS); msg != "" {
				t.Errorf("after errors: error stream %q", msg)
			}
			conn.Close()
			s.waitIdle(t)
		})
	}
}

// TestPortForwardClientGoesAway checks that a client dropping the
// connection mid-transfer ends the session and its pod connections.
func TestPortForwardClientGoesAway(t *testing.T) {
	// A "pod" that greets, reads to the end and then neither talks nor
	// closes: only the server closing its side ends the forwarded
	// connection.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := c.Write([]byte("hi")); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		<-release
	}()
	s := newPFServer(t)
	conn, _, err := s.dialer(t, viaWebSocket).Dial(portForwardProtocolV1)
	if err != nil {
		t.Fatal(err)
	}
	_, dataS := streamPair(t, conn, strconv.Itoa(l.Addr().(*net.TCPAddr).Port), "1")
	buf := make([]byte, 2)
	if _, err := io.ReadFull(dataS, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("greeting %q %v", buf, err)
	}
	conn.Close()
	s.waitIdle(t)
	noForwarderGoroutines(t)
}

func TestPortForwardRefusesOtherProtocols(t *testing.T) {
	s := newPFServer(t)
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/portForward/default/web", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	req.Header.Set("X-Stream-Protocol-Version", "portforward.k8s.io.v99")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("unknown protocol: %d", resp.StatusCode)
	}
	resp, err = http.Get(s.URL + "/portForward/default/web")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET: %d", resp.StatusCode)
	}
}

// TestNodeAPIPortForward forwards to a real pod whose server listens on the
// pod's localhost only, through the node API.
func TestNodeAPIPortForward(t *testing.T) {
	h := newHarness(t, nil)
	h.createPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pf"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c",
			Command: sh("mkdir -p /www && echo pod-says-hi > /www/index.html && exec httpd -f -h /www -p 127.0.0.1:8080"),
			// Ready once httpd listens: a forwarded connection refused by
			// the pod ends client-go's port-forward.
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: []string{"wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"}}}},
		}}}})
	h.waitPod("default", "pf", 30*time.Second, "Running and ready", podRunningReady)
	srv := httptest.NewServer(h.agent.NodeAPI())
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/portForward/default/pf")
	cfg := &rest.Config{Host: srv.URL}
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt, up, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]httpstream.Dialer{"websocket": ws, "spdy": spdy.NewDialer(up, &http.Client{Transport: rt}, http.MethodPost, u)} {
		local, stop := forward(t, d, 8080)
		var body []byte
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(local) + "/index.html")
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GET through port-forward: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if string(body) != "pod-says-hi\n" {
			t.Errorf("%s: body %q", name, body)
		}
		if err := stop(); err != nil {
			t.Errorf("%s: ForwardPorts: %v", name, err)
		}
	}

	// A port nothing listens on: the error comes back on the error stream.
	conn, _, err := ws.Dial(portForwardProtocolV1)
	if err != nil {
		t.Fatal(err)
	}
	errS, dataS := streamPair(t, conn, "9", "1")
	if msg := readErrorStream(t, errS); !strings.Contains(msg, "connection refused") {
		t.Errorf("closed port: %q", msg)
	}
	_ = dataS.Reset()
	conn.Close()

	resp, err := http.Get(srv.URL + "/portForward/default/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown pod: %d", resp.StatusCode)
	}
}

// BenchmarkPortForward measures one forwarded connection's throughput
// (client to pod and back, through the echo "pod") over each protocol.
func BenchmarkPortForward(b *testing.B) {
	for _, k := range []dialerKind{viaSPDY, viaWebSocket} {
		b.Run(k.String(), func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
				}
			}()
			pf := &portForwarder{log: discardLog(), pod: "default/bench", uid: "uid-b",
				dial: func(ctx context.Context, port uint16) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
				},
				pairTimeout: time.Minute, idleTimeout: time.Minute}
			srv := httptest.NewServer(pf)
			defer srv.Close()
			s := &pfServer{Server: srv}
			conn, _, err := s.dialerB(b, k).Dial(portForwardProtocolV1)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			h := http.Header{}
			h.Set(corev1.StreamType, corev1.StreamTypeError)
			h.Set(corev1.PortHeader, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
			h.Set(corev1.PortForwardRequestIDHeader, "1")
			errS, err := conn.CreateStream(h)
			if err != nil {
				b.Fatal(err)
			}
			_ = errS.Close()
			h.Set(corev1.StreamType, corev1.StreamTypeData)
			data, err := conn.CreateStream(h)
			if err != nil {
				b.Fatal(err)
			}
			chunk := make([]byte, 32<<10)
			back := make([]byte, len(chunk))
			b.SetBytes(int64(2 * len(chunk)))
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					if _, err := data.Write(chunk); err != nil {
						return
					}
				}
			}()
			for i := 0; i < b.N; i++ {
				if _, err := io.ReadFull(data, back); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_ = data.Reset()
		})
	}
}
