package apiserver

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzCreateBody sends arbitrary bodies in every content type to the create
// path: the server must answer with a status, never panic, and store only
// valid objects.
func FuzzCreateBody(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}`), uint8(0))
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n"), uint8(1))
	f.Add([]byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret"), uint8(2))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`), uint8(0))
	f.Add([]byte(`[{"op":"add"}]`), uint8(3))
	ts := newTestServer(f)
	types := []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/json-patch+json"}
	f.Fuzz(func(t *testing.T, body []byte, ct uint8) {
		for _, res := range []string{"configmaps", "pods", "services"} {
			req := httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/default/"+res, bytes.NewReader(body))
			req.Header.Set("Content-Type", types[int(ct)%len(types)])
			req = req.WithContext(WithUser(req.Context(), &User{Name: "fuzz", Groups: []string{GroupMasters}}))
			w := httptest.NewRecorder()
			ts.srv.ServeHTTP(w, req)
			if w.Code == 0 || (w.Code >= 500 && w.Code != 503) {
				t.Fatalf("%s: status %d: %s", res, w.Code, w.Body.String())
			}
		}
		// Whatever was stored reads back.
		if _, err := ts.client.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Fatalf("list after fuzzed create: %v", err)
		}
	})
}
