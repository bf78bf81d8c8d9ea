// Package inproc is an http.RoundTripper that calls an http.Handler
// directly, so the server's own components use client-go against the API
// server without a socket, TLS or serialization through the kernel. Responses
// stream (watches work): the handler runs in its own goroutine and writes
// into a pipe that is the response body.
package inproc

import (
	"context"
	"io"
	"net/http"
	"sync"
)

// Transport serves requests with Handler. Prepare, if set, adjusts each
// request's context before it reaches the handler (for example to mark the
// caller as authenticated).
type Transport struct {
	Handler http.Handler
	Prepare func(ctx context.Context) context.Context
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	if t.Prepare != nil {
		ctx = t.Prepare(ctx)
	}
	r := req.Clone(ctx)
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if r.RemoteAddr == "" {
		r.RemoteAddr = "inproc"
	}
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	r.RequestURI = req.URL.RequestURI()
	pr, pw := io.Pipe()
	w := &writer{header: http.Header{}, body: pw, ready: make(chan struct{}), req: req}
	go func() {
		defer func() {
			w.finish()
			_ = pw.Close()
		}()
		t.Handler.ServeHTTP(w, r)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		cancel()
		_ = pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	return &http.Response{
		Status:        http.StatusText(w.code),
		StatusCode:    w.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &body{PipeReader: pr, cancel: cancel},
		ContentLength: -1,
		Request:       req,
	}, nil
}

// body cancels the handler's context when the client closes the response.
type body struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (b *body) Close() error {
	b.cancel()
	return b.PipeReader.Close()
}

// writer is the handler's ResponseWriter: the status line and headers are
// handed to RoundTrip at the first write, the body streams through a pipe.
type writer struct {
	header http.Header
	sent   http.Header
	body   *io.PipeWriter
	code   int
	once   sync.Once
	ready  chan struct{}
	req    *http.Request
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) WriteHeader(code int) {
	w.once.Do(func() {
		w.code = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *writer) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush is a no-op: every Write reaches the reader at once.
func (w *writer) Flush() { w.WriteHeader(http.StatusOK) }

func (w *writer) finish() { w.WriteHeader(http.StatusOK) }
