package inproc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

func TestRoundTripAndStreaming(t *testing.T) {
	type key struct{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(key{}) != "yes" {
			http.Error(w, "not prepared", http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusOK)
			for i := 0; ; i++ {
				select {
				case <-r.Context().Done():
					return
				default:
				}
				fmt.Fprintf(w, "line %d\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(time.Millisecond)
			}
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", "1")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(b)
	})
	c := &http.Client{Transport: &Transport{Handler: h, Prepare: func(ctx context.Context) context.Context {
		return context.WithValue(ctx, key{}, "yes")
	}}}
	resp, err := c.Post("http://inproc/echo", "text/plain", stringsReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || string(b) != "hello" || resp.Header.Get("X-Echo") != "1" {
		t.Fatalf("got %d %q %v", resp.StatusCode, b, resp.Header)
	}
	resp, err = c.Get("http://inproc/stream")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for i := 0; i < 3; i++ {
		if !sc.Scan() || sc.Text() != fmt.Sprintf("line %d", i) {
			t.Fatalf("stream line %d: %q", i, sc.Text())
		}
	}
	resp.Body.Close() // ends the handler through its context
}

type sr struct {
	s string
	i int
}

func (r *sr) Read(p []byte) (int, error) {
	if r.i >= len(r.s) {
		return 0, io.EOF
	}
	n := copy(p, r.s[r.i:])
	r.i += n
	return n, nil
}

func stringsReader(s string) io.Reader { return &sr{s: s} }
