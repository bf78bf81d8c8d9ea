package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

func TestJSONCacheRevisionsAndBound(t *testing.T) {
	c := newJSONCache(16 << 10)
	c.put("/a", 5, []byte(`{"v":5}`))
	if b := c.get("/a", 5); string(b) != `{"v":5}` {
		t.Fatalf("get = %q", b)
	}
	if b := c.get("/a", 6); b != nil {
		t.Fatalf("another revision hit: %q", b)
	}
	c.put("/a", 4, []byte(`{"v":4}`))
	if b := c.get("/a", 5); b == nil {
		t.Fatal("an older revision replaced a newer one")
	}
	c.put("/a", 7, []byte(`{"v":7}`))
	if c.get("/a", 5) != nil || string(c.get("/a", 7)) != `{"v":7}` {
		t.Fatal("a newer revision did not replace the entry")
	}
	c.drop("/a")
	if c.get("/a", 7) != nil || c.size != 0 || c.bytes() != 0 {
		t.Fatalf("dropped entry still there (size %d)", c.size)
	}
	item := bytes.Repeat([]byte("x"), 500)
	for i := 0; i < 1000; i++ {
		c.put(fmt.Sprintf("/k/%d", i), int64(i), item)
		if c.size > c.max {
			t.Fatalf("size %d over the bound %d", c.size, c.max)
		}
	}
	if n := c.len(); n == 0 || n*500 > c.max {
		t.Fatalf("%d entries", n)
	}
	c.put("/big", 1, make([]byte, c.max))
	if c.get("/big", 1) != nil {
		t.Fatal("an entry larger than a sixteenth of the bound was kept")
	}
}

// serializerJSON is what the JSON serializer writes for obj.
func serializerJSON(t *testing.T, s *Server, obj runtime.Object) string {
	t.Helper()
	var buf bytes.Buffer
	if err := s.jsonInfo().Serializer.Encode(obj, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func getJSON(t *testing.T, s *Server, path string) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Accept", "application/json")
	req = req.WithContext(WithUser(req.Context(), &User{Name: "t", Groups: []string{GroupMasters}}))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, w.Code, w.Body.String())
	}
	if w.Header().Get("Content-Length") != fmt.Sprint(w.Body.Len()) {
		t.Fatalf("GET %s: Content-Length %s for %d bytes", path, w.Header().Get("Content-Length"), w.Body.Len())
	}
	return w.Body.String()
}

// TestJSONCacheResponses checks that GETs and LISTs served from the JSON
// cache are byte for byte what the serializer writes, before and after the
// objects change.
func TestJSONCacheResponses(t *testing.T) {
	ts := newTestServer(t)
	s := ts.srv
	ctx := context.Background()
	pods := ts.client.CoreV1().Pods("default")
	for i := 0; i < 300; i++ {
		p := testPod(fmt.Sprintf("p%03d", i))
		p.Annotations = map[string]string{"html": "<&>"}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	check := func() {
		t.Helper()
		for round := 0; round < 2; round++ { // a miss, then a hit
			obj, err := s.objs.get(ctx, s.reg.kindFor(corev1.Resource("pods")), "default", "p007")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := getJSON(t, s, "/api/v1/namespaces/default/pods/p007"), serializerJSON(t, s, obj); got != want {
				t.Fatalf("GET round %d:\n got %s\nwant %s", round, got, want)
			}
			res, err := s.list(ctx, s.reg.kindFor(corev1.Resource("pods")), "default", filter{labels: labels.Everything(), fields: fields.Everything()}, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			sv := s.reg.lookup(corev1.SchemeGroupVersion, "pods")
			l, err := s.newServedList(sv, res.items)
			if err != nil {
				t.Fatal(err)
			}
			l.(*corev1.PodList).ResourceVersion = fmt.Sprint(res.rv)
			if got, want := getJSON(t, s, "/api/v1/namespaces/default/pods"), serializerJSON(t, s, l); got != want {
				t.Fatalf("LIST round %d differs (%d and %d bytes)", round, len(got), len(want))
			}
		}
	}
	check()
	// The LIST filled the cache: CacheBytes counts every pod's encoding.
	if got, min := s.CacheBytes(), uint64(300*len(getJSON(t, s, "/api/v1/namespaces/default/pods/p000"))/2); got < min {
		t.Fatalf("CacheBytes %d after a LIST of 300 pods, want at least %d", got, min)
	}
	p, err := pods.Get(ctx, "p007", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels["changed"] = "yes"
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "p008", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check()
	if got := getJSON(t, s, "/api/v1/namespaces/default/pods/p007"); !strings.Contains(got, `"changed":"yes"`) {
		t.Fatalf("GET after update: %s", got)
	}
	// Pages of cached items (and of some evicted from the cache) add up
	// to the whole list.
	full := getJSON(t, s, "/api/v1/namespaces/default/pods")
	for key := range s.objs.json.items {
		if strings.HasSuffix(key, "5") {
			s.objs.json.drop(key)
		}
	}
	var whole, paged corev1.PodList
	if err := json.Unmarshal([]byte(full), &whole); err != nil {
		t.Fatal(err)
	}
	for cont := ""; ; {
		var page corev1.PodList
		if err := json.Unmarshal([]byte(getJSON(t, s, "/api/v1/namespaces/default/pods?limit=70&continue="+url.QueryEscape(cont))), &page); err != nil {
			t.Fatal(err)
		}
		paged.Items = append(paged.Items, page.Items...)
		if cont = page.Continue; cont == "" {
			break
		}
	}
	if !apiequality.Semantic.DeepEqual(whole.Items, paged.Items) {
		t.Fatalf("paged list (%d items) differs from the whole (%d)", len(paged.Items), len(whole.Items))
	}
	// Secrets are not cached.
	if _, err := ts.client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = getJSON(t, s, "/api/v1/namespaces/default/secrets/s")
	_ = getJSON(t, s, "/api/v1/namespaces/default/secrets")
	for key := range s.objs.json.items {
		if strings.HasPrefix(key, "/registry/core/secrets/") {
			t.Fatalf("secret %s cached", key)
		}
	}
}

// TestJSONCacheWatch checks watch events served from the cache against the
// serializer.
func TestJSONCacheWatch(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cms := ts.client.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Data: map[string]string{"k": "<1>"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Warm the cache with a LIST.
	_ = getJSON(t, ts.srv, "/api/v1/namespaces/default/configmaps")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.http.URL+"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cm, err := cms.Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["k"] = "2"
	cm2, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	dec := newLineReader(resp.Body)
	for i, want := range []watch.EventType{watch.Added, watch.Modified, watch.Deleted} {
		line := dec()
		var ev struct {
			Type   string
			Object map[string]interface{}
		}
		if err := json.Unmarshal(line, &ev); err != nil || ev.Type != string(want) {
			t.Fatalf("event %d: %v %s", i, err, line)
		}
		if ev.Object["kind"] != "ConfigMap" || ev.Object["apiVersion"] != "v1" {
			t.Fatalf("event %d: %s", i, line)
		}
		if i == 1 {
			cm2.Kind, cm2.APIVersion = "ConfigMap", "v1"
			want := `{"type":"MODIFIED","object":` + strings.TrimSuffix(serializerJSON(t, ts.srv, cm2), "\n") + "}\n"
			if string(line) != want {
				t.Fatalf("event:\n got %s\nwant %s", line, want)
			}
		}
	}
}

func newLineReader(r io.Reader) func() []byte {
	var buf []byte
	tmp := make([]byte, 4096)
	return func() []byte {
		for {
			if i := bytes.IndexByte(buf, '\n'); i >= 0 {
				line := append([]byte(nil), buf[:i+1]...)
				buf = buf[i+1:]
				return line
			}
			n, err := r.Read(tmp)
			buf = append(buf, tmp[:n]...)
			if err != nil {
				return buf
			}
		}
	}
}
