package kube_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/internal/kube"
)

// TestProtobufOnTheWire: orch's clients send and ask for protobuf (JSON
// accepted as well), unless the configuration names a content type.
func TestProtobufOnTheWire(t *testing.T) {
	var mu sync.Mutex
	var accept, ctype string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		accept, ctype = r.Header.Get("Accept"), r.Header.Get("Content-Type")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name             string
		cfg              rest.Config
		wantAccept, want string
	}{
		{"default", rest.Config{Host: srv.URL}, "application/vnd.kubernetes.protobuf,application/json", "application/vnd.kubernetes.protobuf"},
		{"json", rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}}, "application/json, */*", "application/json"},
	} {
		c, err := kube.NewForConfig(&tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.CoreV1().Pods("default").Create(context.Background(), pod("a"), metav1.CreateOptions{})
		if err == nil {
			t.Fatalf("%s: create against a 404 server succeeded", tc.name)
		}
		mu.Lock()
		if accept != tc.wantAccept || ctype != tc.want {
			t.Errorf("%s: Accept %q Content-Type %q, want %q and %q", tc.name, accept, ctype, tc.wantAccept, tc.want)
		}
		mu.Unlock()
	}
}
