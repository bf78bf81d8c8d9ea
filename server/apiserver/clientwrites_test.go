package apiserver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestClientWrites counts a client's create while it is being served and
// not after; an in-process write does not count.
func TestClientWrites(t *testing.T) {
	ts := newTestServer(t)
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, ts.http.URL+"/api/v1/namespaces/default/configmaps", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	code := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			code <- 0
			return
		}
		resp.Body.Close()
		code <- resp.StatusCode
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.ClientWrites() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("client writes %d while a create waits for its body", ts.srv.ClientWrites())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := pw.Write([]byte(`{"metadata":{"name":"c"}}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if c := <-code; c != http.StatusCreated {
		t.Fatalf("create: %d", c)
	}
	if n := ts.srv.ClientWrites(); n != 0 {
		t.Fatalf("client writes %d after the create", n)
	}

	// The server's own components are authenticated in-process.
	in := httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/default/configmaps", &blockingBody{r: []byte(`{"metadata":{"name":"d"}}`), ts: ts, t: t})
	in.Header.Set("Content-Type", "application/json")
	in = in.WithContext(WithUser(context.Background(), &User{Name: "system:orch-server", Groups: []string{GroupMasters}}))
	w := httptest.NewRecorder()
	ts.srv.ServeHTTP(w, in)
	if w.Code != http.StatusCreated {
		t.Fatalf("in-process create: %d %s", w.Code, w.Body)
	}
	if _, err := ts.client.CoreV1().ConfigMaps("default").Get(context.Background(), "d", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

// blockingBody checks, when the server reads it, that the request is not
// counted as a client's write.
type blockingBody struct {
	r    []byte
	ts   *testServer
	t    *testing.T
	read bool
}

func (b *blockingBody) Read(p []byte) (int, error) {
	if !b.read {
		b.read = true
		if n := b.ts.srv.ClientWrites(); n != 0 {
			b.t.Errorf("in-process create counted: client writes %d", n)
		}
	}
	if len(b.r) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.r)
	b.r = b.r[n:]
	return n, nil
}

func TestIsClientWrite(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/api/v1/namespaces/default/pods", true},
		{"PUT", "/apis/apps/v1/namespaces/default/deployments/d", true},
		{"PATCH", "/api/v1/namespaces/default/pods/p/status", true},
		{"DELETE", "/api/v1/namespaces/default/pods/p", true},
		{"GET", "/api/v1/namespaces/default/pods", false},
		{"POST", "/api/v1/namespaces/default/pods/p/exec", false},
		{"POST", "/api/v1/namespaces/default/pods/p/attach", false},
		{"POST", "/api/v1/namespaces/default/pods/p/portforward", false},
		{"POST", "/api/v1/namespaces/default/pods/p/proxy/x", false},
		{"POST", "/apis", false},
		{"POST", "/version", false},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if got := isClientWrite(r); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}
