// Command web-python is the deck's sample web application, as a small static
// Go program instead of the deck's Python: every request to / increments a
// visit counter in Redis and answers with the count, the app's version and
// the pod's hostname.
//
// Redis is found the way the deck shows: through the environment variables
// the cluster injects for the `redis` Service (REDIS_SERVICE_HOST and
// REDIS_SERVICE_PORT), or, for /?via=dns, through the cluster DNS name
// `redis` (REDIS_DNS_NAME overrides it). The version is set at build time
// (-ldflags "-X main.version=v2") or by $VERSION.
//
// On SIGTERM the app keeps serving for $DRAIN_SECONDS (default 3) while the
// Service's endpoints drop it, then finishes the requests in flight and
// exits, so rolling updates lose no request.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var version = "v1"

func main() {
	if v := os.Getenv("VERSION"); v != "" {
		version = v
	}
	addr := ":" + envOr("PORT", "5000")
	drain := 3 * time.Second
	if s := os.Getenv("DRAIN_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			log.Fatalf("DRAIN_SECONDS=%q: want a whole number of seconds", s)
		}
		drain = time.Duration(n) * time.Second
	}
	host, _ := os.Hostname()
	a := &app{host: host, dnsName: envOr("REDIS_DNS_NAME", "redis")}
	mux := http.NewServeMux()
	mux.HandleFunc("/", a.visit)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("web-python %s listening on %s", version, addr)
	select {
	case err := <-errc:
		log.Fatalf("serve: %v", err)
	case <-ctx.Done():
	}
	log.Printf("terminating: serving %s more while endpoints drop this pod", drain)
	time.Sleep(drain)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

type app struct {
	host    string
	dnsName string
}

func (a *app) visit(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	var target string
	if r.URL.Query().Get("via") == "dns" {
		port := envOr("REDIS_SERVICE_PORT", "6379")
		target = net.JoinHostPort(a.dnsName, port)
	} else {
		h, p := os.Getenv("REDIS_SERVICE_HOST"), os.Getenv("REDIS_SERVICE_PORT")
		if h == "" || p == "" {
			http.Error(w, "REDIS_SERVICE_HOST and REDIS_SERVICE_PORT are not set: is the redis Service there?", http.StatusServiceUnavailable)
			return
		}
		target = net.JoinHostPort(h, p)
	}
	n, err := incr(r.Context(), target, "hits")
	if err != nil {
		http.Error(w, fmt.Sprintf("web-python %s on %s: redis %s: %v", version, a.host, target, err), http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "Hello from web-python %s on %s: %d visits (redis %s)\n", version, a.host, n, target)
}

// incr runs INCR key on the Redis server at addr and returns the new value.
func incr(ctx context.Context, addr, key string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return 0, fmt.Errorf("send INCR: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("read reply: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, ":"):
		return strconv.ParseInt(line[1:], 10, 64)
	case strings.HasPrefix(line, "-"):
		return 0, errors.New("redis error: " + line[1:])
	default:
		return 0, fmt.Errorf("unexpected reply %q", line)
	}
}
