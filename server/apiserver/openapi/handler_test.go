package openapi

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	openapi_v3 "github.com/google/gnostic-models/openapiv3"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/openapi3"
	"k8s.io/client-go/rest"
	explainv2 "k8s.io/kubectl/pkg/explain/v2"
	kubectlopenapi "k8s.io/kubectl/pkg/util/openapi"
)

func newTestServer(t *testing.T) (*Handler, *httptest.Server) {
	t.Helper()
	h, err := NewHandler(testResources(), testInfo, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h) // 127.0.0.1
	t.Cleanup(srv.Close)
	return h, srv
}

func testConfig(srv *httptest.Server) *rest.Config {
	return &rest.Config{Host: srv.URL, QPS: -1}
}

// TestClients has client-go, kubectl and cli-runtime read the documents
// over HTTP, as kubectl apply and kubectl explain do.
func TestClients(t *testing.T) {
	_, srv := newTestServer(t)
	cfg := testConfig(srv)
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// v2: client-go fetches protobuf and parses it; kubectl reads it.
	v2doc, err := dc.OpenAPISchema()
	if err != nil {
		t.Fatalf("OpenAPISchema: %v", err)
	}
	res, err := kubectlopenapi.NewOpenAPIData(v2doc)
	if err != nil {
		t.Fatal(err)
	}
	if res.LookupResource(schema.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"}) == nil {
		t.Error("v2 over HTTP: no Lease schema")
	}

	// v3: the index, every document parsed by client-go into spec3.
	client := dc.OpenAPIV3()
	paths, err := client.Paths()
	if err != nil {
		t.Fatalf("openapi v3 paths: %v", err)
	}
	if _, ok := paths["apis/apps/v1"]; !ok || len(paths) != 8 {
		t.Errorf("v3 paths = %v", paths)
	}
	root := openapi3.NewRoot(client)
	gvs, err := root.GroupVersions()
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range gvs {
		spec, err := root.GVSpec(gv)
		if err != nil {
			t.Fatalf("GVSpec(%s): %v", gv, err)
		}
		if spec.Components == nil || len(spec.Components.Schemas) == 0 || spec.Paths == nil || len(spec.Paths.Paths) == 0 {
			t.Errorf("%s: empty document", gv)
		}
	}

	// kubectl's strategic-merge lookup on v3, as in its apply patcher.
	core, err := root.GVSpec(schema.GroupVersion{Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	pod, ok := core.Components.Schemas["io.k8s.api.core.v1.Pod"]
	if !ok {
		t.Fatal("no Pod schema in api/v1")
	}
	meta := strategicpatch.PatchMetaFromOpenAPIV3{Schema: pod, SchemaList: core.Components.Schemas}
	spec, _, err := meta.LookupPatchMetadataForStruct("spec")
	if err != nil {
		t.Fatal(err)
	}
	_, pm, err := spec.LookupPatchMetadataForSlice("containers")
	if err != nil {
		t.Fatal(err)
	}
	if pm.GetPatchMergeKey() != "name" || fmt.Sprint(pm.GetPatchStrategies()) != "[merge]" {
		t.Errorf("v3 containers patch meta = %q %v", pm.GetPatchMergeKey(), pm.GetPatchStrategies())
	}
	checkThreeWay(t, meta)

	// cli-runtime: does the server support fieldValidation (kubectl apply)?
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	verifier := resource.NewQueryParamVerifierV3(dyn, client, resource.QueryParamFieldValidation)
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "Pod"}, {Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "extensions", Version: "v1beta1", Kind: "Deployment"}, {Group: "events.k8s.io", Version: "v1", Kind: "Event"},
	} {
		if err := verifier.HasSupport(gvk); err != nil {
			t.Errorf("fieldValidation for %v: %v", gvk, err)
		}
	}
	if err := verifier.HasSupport(schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}); !resource.IsParamUnsupportedError(err) {
		t.Errorf("fieldValidation for an unserved kind: %v, want unsupported", err)
	}

	// The same over v2, kubectl's fallback when a server has no v3.
	verifierV2 := resource.NewQueryParamVerifier(dyn, dc, resource.QueryParamFieldValidation)
	for _, gvk := range []schema.GroupVersionKind{{Version: "v1", Kind: "Pod"}, {Group: "apps", Version: "v1", Kind: "Deployment"}} {
		if err := verifierV2.HasSupport(gvk); err != nil {
			t.Errorf("v2 fieldValidation for %v: %v", gvk, err)
		}
	}
	if err := verifierV2.HasSupport(schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}); err == nil {
		t.Error("v2 fieldValidation for an unserved kind: supported")
	}

	// kubectl explain pods.spec.containers.
	var out bytes.Buffer
	if err := explainv2.PrintModelDescription([]string{"spec", "containers"}, &out, client,
		schema.GroupVersionResource{Version: "v1", Resource: "pods"}, false, 0, "plaintext"); err != nil {
		t.Fatalf("explain: %v", err)
	}
	for _, want := range []string{"KIND:       Pod", "FIELD: containers <[]Container>", "List of containers belonging to the pod", "image\t<string>"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
}

func get(t *testing.T, url string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// No transparent gzip: the test sees what the server sends.
	c := &http.Client{
		Transport:     &http.Transport{DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func body(t *testing.T, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandler(t *testing.T) {
	_, srv := newTestServer(t)
	v3, err := BuildV3(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	doc := v3.Docs["apis/apps/v1"]

	// v2: JSON by default, protobuf when asked, 406 otherwise, ETag.
	r := get(t, srv.URL+"/openapi/v2")
	b := body(t, r)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != mediaJSON || !json.Valid(b) {
		t.Fatalf("v2 JSON: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if r := get(t, srv.URL+"/openapi/v2", "If-None-Match", r.Header.Get("ETag")); r.StatusCode != http.StatusNotModified {
		t.Errorf("v2 If-None-Match: %d", r.StatusCode)
	}
	for _, accept := range []string{ContentTypeV2Protobuf, contentTypeV2ProtobufDot, "application/json;q=0.5, " + ContentTypeV2Protobuf} {
		r := get(t, srv.URL+"/openapi/v2", "Accept", accept)
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != contentTypeV2ProtobufDot || json.Valid(body(t, r)) {
			t.Errorf("v2 Accept %s: %d %s", accept, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	if r := get(t, srv.URL+"/openapi/v2", "Accept", "application/json, */*"); r.Header.Get("Content-Type") != mediaJSON {
		t.Errorf("v2 Accept json,*/*: %s", r.Header.Get("Content-Type"))
	}
	if r := get(t, srv.URL+"/openapi/v2", "Accept", "text/html"); r.StatusCode != http.StatusNotAcceptable {
		t.Errorf("v2 text/html: %d", r.StatusCode)
	}

	// v3 index and documents.
	r = get(t, srv.URL+"/openapi/v3")
	if r.StatusCode != 200 || !bytes.Equal(body(t, r), v3.Index) {
		t.Errorf("v3 index: %d", r.StatusCode)
	}
	r = get(t, srv.URL+"/openapi/v3/apis/apps/v1?hash="+doc.Hash)
	if r.StatusCode != 200 || !bytes.Equal(body(t, r), doc.JSON) || r.Header.Get("Cache-Control") != "public, immutable" || r.Header.Get("ETag") != `"`+doc.Hash+`"` {
		t.Errorf("v3 apps/v1: %d %v", r.StatusCode, r.Header)
	}
	// Compressed when the client accepts gzip, with its own ETag.
	r = get(t, srv.URL+"/openapi/v3/apis/apps/v1", "Accept-Encoding", "gzip")
	if r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("ETag") != `"`+doc.Hash+`-gzip"` {
		t.Errorf("v3 gzip: %v", r.Header)
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if unzipped, err := io.ReadAll(zr); err != nil || !bytes.Equal(unzipped, doc.JSON) {
		t.Errorf("v3 gzip body: %v", err)
	}
	if r := get(t, srv.URL+"/openapi/v3/apis/apps/v1", "Accept-Encoding", "gzip", "If-None-Match", `"`+doc.Hash+`-gzip"`); r.StatusCode != http.StatusNotModified {
		t.Errorf("v3 gzip If-None-Match: %d", r.StatusCode)
	}
	if r := get(t, srv.URL+"/openapi/v3/apis/apps/v1", "Accept-Encoding", "gzip;q=0, identity"); r.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 got Content-Encoding %q", r.Header.Get("Content-Encoding"))
	}
	req, err := http.NewRequest(http.MethodHead, srv.URL+"/openapi/v3/api/v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := io.Copy(io.Discard, resp.Body); resp.StatusCode != 200 || n != 0 || resp.ContentLength != int64(len(v3.Docs["api/v1"].JSON)) {
		t.Errorf("HEAD: %d, %d body bytes, Content-Length %d", resp.StatusCode, n, resp.ContentLength)
	}
	resp.Body.Close()

	r = get(t, srv.URL+"/openapi/v3/apis/apps/v1?hash=0BAD")
	if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "/openapi/v3/apis/apps/v1?hash="+doc.Hash {
		t.Errorf("v3 stale hash: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if r := get(t, srv.URL+"/openapi/v3/apis/apps/v1", "If-None-Match", `"`+doc.Hash+`"`); r.StatusCode != http.StatusNotModified {
		t.Errorf("v3 If-None-Match: %d", r.StatusCode)
	}
	r = get(t, srv.URL+"/openapi/v3/apis/apps/v1", "Accept", ContentTypeV3Protobuf)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != contentTypeV3ProtobufDot {
		t.Fatalf("v3 protobuf: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	var pb openapi_v3.Document
	if err := proto.Unmarshal(body(t, r), &pb); err != nil {
		t.Fatalf("v3 protobuf: %v", err)
	}
	if pb.GetOpenapi() != "3.0.0" || len(pb.GetComponents().GetSchemas().GetAdditionalProperties()) == 0 {
		t.Errorf("v3 protobuf document: openapi %q", pb.GetOpenapi())
	}
	for url, code := range map[string]int{
		"/openapi/v3/apis/batch/v1": http.StatusNotFound,
		"/openapi/v4":               http.StatusNotFound,
	} {
		if r := get(t, srv.URL+url); r.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", url, r.StatusCode, code)
		}
	}
	if r := get(t, srv.URL+"/openapi/v3/api/v1", "Accept", "application/xml"); r.StatusCode != http.StatusNotAcceptable {
		t.Errorf("v3 xml: %d", r.StatusCode)
	}
	resp, err = http.Post(srv.URL+"/openapi/v2", mediaJSON, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func TestNewHandlerRejectsBadResources(t *testing.T) {
	rs := testResources()
	rs[0].Verbs = []string{"frob"}
	if _, err := NewHandler(rs, testInfo, slog.Default()); err == nil || !strings.Contains(err.Error(), "frob") {
		t.Errorf("NewHandler: %v", err)
	}
}

func TestNegotiate(t *testing.T) {
	offers := []string{mediaJSON, ContentTypeV2Protobuf}
	for accept, want := range map[string]string{
		"":                    mediaJSON,
		"*/*":                 mediaJSON,
		"application/*":       mediaJSON,
		ContentTypeV2Protobuf: ContentTypeV2Protobuf,
		"application/json;q=0.1, " + ContentTypeV2Protobuf: ContentTypeV2Protobuf,
		ContentTypeV2Protobuf + ";q=0, application/json":   mediaJSON,
		"text/plain":             "",
		"application/json;q=bad": "",
	} {
		if got := negotiate(accept, offers...); got != want {
			t.Errorf("negotiate(%q) = %q, want %q", accept, got, want)
		}
	}
}

func TestHeaderHelpers(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false, "*": true, "br": false, "GZIP": true, "gzip;q=x": false,
	} {
		if acceptsGzip(h) != want {
			t.Errorf("acceptsGzip(%q) = %v", h, !want)
		}
	}
	for h, want := range map[string]bool{
		`"A"`: true, `W/"A"`: true, `"B", "A"`: true, `*`: true, `"B"`: false, ``: false, `A`: false,
	} {
		if etagMatches(h, "A") != want {
			t.Errorf("etagMatches(%q, A) = %v", h, !want)
		}
	}
}
