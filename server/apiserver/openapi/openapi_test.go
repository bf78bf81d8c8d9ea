package openapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	kubectlopenapi "k8s.io/kubectl/pkg/util/openapi"
)

var testInfo = Info{Version: "v1.37.2"}

// obj is a decoded JSON object.
type obj = map[string]any

func decode(t testing.TB, b []byte) obj {
	t.Helper()
	var m obj
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("document is not JSON: %v", err)
	}
	return m
}

// at walks a decoded document by keys.
func at(t testing.TB, m any, keys ...string) any {
	t.Helper()
	for i, k := range keys {
		o, ok := m.(obj)
		if !ok {
			t.Fatalf("%s: not an object", strings.Join(keys[:i], "."))
		}
		if m, ok = o[k]; !ok {
			t.Fatalf("%s: missing", strings.Join(keys[:i+1], "."))
		}
	}
	return m
}

// checkRefs fails on any $ref that does not name an entry of the table
// its prefix selects.
func checkRefs(t *testing.T, doc any, tables map[string]obj) int {
	t.Helper()
	n := 0
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case obj:
			if r, ok := v["$ref"].(string); ok {
				n++
				found := false
				for prefix, defs := range tables {
					if name, ok := strings.CutPrefix(r, prefix); ok {
						_, found = defs[name]
					}
				}
				if !found {
					t.Errorf("%s: $ref %s does not resolve", where, r)
				}
			}
			for k, c := range v {
				walk(c, where+"."+k)
			}
		case []any:
			for i, c := range v {
				walk(c, fmt.Sprintf("%s[%d]", where, i))
			}
		}
	}
	walk(doc, "")
	return n
}

func gvkList(t *testing.T, def any) []GVK {
	t.Helper()
	raw, err := json.Marshal(at(t, def, groupVersionKindExt))
	if err != nil {
		t.Fatal(err)
	}
	var out []GVK
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s is not a list of GVKs: %v", groupVersionKindExt, err)
	}
	return out
}

func hasGVK(l []GVK, g, v, k string) bool {
	for _, x := range l {
		if x == (GVK{Group: g, Version: v, Kind: k}) {
			return true
		}
	}
	return false
}

func TestV2Document(t *testing.T) {
	b, err := BuildV2(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	doc := decode(t, b)
	if at(t, doc, "swagger") != "2.0" || at(t, doc, "info", "version") != "v1.37.2" {
		t.Errorf("header: swagger %v info %v", doc["swagger"], doc["info"])
	}
	defs := at(t, doc, "definitions").(obj)
	shared := at(t, doc, "parameters").(obj)
	if n := checkRefs(t, doc, map[string]obj{"#/definitions/": defs, "#/parameters/": shared}); n < 100 {
		t.Errorf("only %d references", n)
	}
	containers := at(t, defs, "io.k8s.api.core.v1.PodSpec", "properties", "containers").(obj)
	if containers["x-kubernetes-patch-merge-key"] != "name" || containers["x-kubernetes-patch-strategy"] != "merge" || containers["type"] != "array" {
		t.Errorf("PodSpec.containers = %v", containers)
	}
	if r := at(t, containers, "items", "$ref"); r != "#/definitions/io.k8s.api.core.v1.Container" {
		t.Errorf("containers items = %v", r)
	}
	if v := at(t, defs, "io.k8s.api.core.v1.PodSpec", "properties", "volumes", "x-kubernetes-patch-strategy"); v != "merge,retainKeys" {
		t.Errorf("volumes strategy = %v", v)
	}
	labels := at(t, defs, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "properties", "labels").(obj)
	if labels["type"] != "object" || at(t, labels, "additionalProperties", "type") != "string" || labels["description"] == "" {
		t.Errorf("ObjectMeta.labels = %v", labels)
	}
	for name, want := range map[string][2]string{
		"io.k8s.apimachinery.pkg.api.resource.Quantity":      {"string", ""},
		"io.k8s.apimachinery.pkg.util.intstr.IntOrString":    {"string", "int-or-string"},
		"io.k8s.apimachinery.pkg.apis.meta.v1.Time":          {"string", "date-time"},
		"io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime":     {"string", "date-time"},
		"io.k8s.apimachinery.pkg.runtime.RawExtension":       {"object", ""},
		"io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1":      {"object", ""},
		"io.k8s.apimachinery.pkg.apis.meta.v1.Patch":         {"object", ""},
		"io.k8s.api.core.v1.Pod":                             {"object", ""},
		"io.k8s.api.apps.v1.Deployment":                      {"object", ""},
		"io.k8s.api.extensions.v1beta1.Deployment":           {"object", ""},
		"io.k8s.api.discovery.v1.EndpointSlice":              {"object", ""},
		"io.k8s.api.autoscaling.v1.Scale":                    {"object", ""},
		"io.k8s.api.policy.v1.Eviction":                      {"object", ""},
		"io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": {"object", ""},
	} {
		d := at(t, defs, name).(obj)
		f, _ := d["format"].(string)
		if d["type"] != want[0] || f != want[1] {
			t.Errorf("%s: type %v format %q, want %v", name, d["type"], f, want)
		}
	}
	// Field schemas: primitives, references with descriptions, required.
	pod := at(t, defs, "io.k8s.api.core.v1.Pod").(obj)
	if at(t, pod, "properties", "spec", "$ref") != "#/definitions/io.k8s.api.core.v1.PodSpec" || at(t, pod, "properties", "spec", "description") == "" {
		t.Errorf("Pod.spec = %v", at(t, pod, "properties", "spec"))
	}
	if at(t, pod, "properties", "kind", "type") != "string" || !strings.HasPrefix(at(t, pod, "properties", "kind", "description").(string), "Kind is a string value") {
		t.Errorf("Pod.kind (inlined TypeMeta) = %v", at(t, pod, "properties", "kind"))
	}
	if _, ok := pod["required"]; ok {
		t.Errorf("Pod has required fields %v", pod["required"])
	}
	if !strings.HasPrefix(pod["description"].(string), "Pod is a collection of containers") {
		t.Errorf("Pod description = %q", pod["description"])
	}
	port := at(t, defs, "io.k8s.api.core.v1.ContainerPort").(obj)
	if at(t, port, "properties", "containerPort", "format") != "int32" || fmt.Sprint(port["required"]) != "[containerPort]" {
		t.Errorf("ContainerPort = %v", port)
	}
	if fmt.Sprint(at(t, defs, "io.k8s.api.apps.v1.DeploymentSpec", "required")) != "[selector template]" {
		t.Errorf("DeploymentSpec.required = %v", at(t, defs, "io.k8s.api.apps.v1.DeploymentSpec", "required"))
	}
	if d := at(t, defs, "io.k8s.api.core.v1.Secret", "properties", "data", "additionalProperties").(obj); d["type"] != "string" || d["format"] != "byte" {
		t.Errorf("Secret.data values = %v", d)
	}
	if _, ok := at(t, defs, "io.k8s.api.core.v1.ObjectReference", "properties").(obj)["fieldPath"]; !ok {
		t.Error("ObjectReference lacks fieldPath")
	}
	// GVK extensions on the kinds, their lists and the meta kinds.
	for _, c := range []struct{ def, g, v, k string }{
		{"io.k8s.api.core.v1.Pod", "", "v1", "Pod"},
		{"io.k8s.api.core.v1.PodList", "", "v1", "PodList"},
		{"io.k8s.api.apps.v1.Deployment", "apps", "v1", "Deployment"},
		{"io.k8s.api.apps.v1beta2.DeploymentList", "apps", "v1beta2", "DeploymentList"},
		{"io.k8s.api.extensions.v1beta1.Deployment", "extensions", "v1beta1", "Deployment"},
		{"io.k8s.api.autoscaling.v1.Scale", "autoscaling", "v1", "Scale"},
		{"io.k8s.api.policy.v1.Eviction", "policy", "v1", "Eviction"},
		{"io.k8s.api.events.v1.Event", "events.k8s.io", "v1", "Event"},
		{"io.k8s.api.coordination.v1.Lease", "coordination.k8s.io", "v1", "Lease"},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.Status", "", "v1", "Status"},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "", "v1", "DeleteOptions"},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "apps", "v1", "DeleteOptions"},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent", "discovery.k8s.io", "v1", "WatchEvent"},
	} {
		if l := gvkList(t, defs[c.def]); !hasGVK(l, c.g, c.v, c.k) {
			t.Errorf("%s: %s = %v, want %s/%s %s", c.def, groupVersionKindExt, l, c.g, c.v, c.k)
		}
	}
	// Operations.
	patch := at(t, doc, "paths", "/api/v1/namespaces/{namespace}/pods/{name}", "patch").(obj)
	if patch["operationId"] != "patchCoreV1NamespacedPod" || patch["x-kubernetes-action"] != "patch" {
		t.Errorf("pod patch = %v %v", patch["operationId"], patch["x-kubernetes-action"])
	}
	if g := at(t, patch, groupVersionKindExt).(obj); g["kind"] != "Pod" || g["version"] != "v1" || g["group"] != "" {
		t.Errorf("pod patch GVK = %v", g)
	}
	consumes := fmt.Sprint(patch["consumes"])
	for _, c := range []string{mediaApplyPatch, mediaStrategicMerge, mediaMergePatch, mediaJSONPatch} {
		if !strings.Contains(consumes, c) {
			t.Errorf("pod patch consumes %s, lacks %s", consumes, c)
		}
	}
	wantParams(t, shared, patch, "body", "dryRun", "fieldManager", "fieldValidation", "force")
	wantParams(t, shared, at(t, doc, "paths", "/apis/apps/v1/namespaces/{namespace}/deployments").(obj)["get"].(obj),
		"labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch", "timeoutSeconds", "allowWatchBookmarks")
	wantParams(t, shared, at(t, doc, "paths", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "delete").(obj),
		"body", "propagationPolicy", "gracePeriodSeconds", "dryRun")
	wantParams(t, shared, at(t, doc, "paths", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}").(obj), "name", "namespace", "pretty")
	ops := map[string]string{}
	for path, item := range at(t, doc, "paths").(obj) {
		for method, o := range item.(obj) {
			if method == "parameters" {
				continue
			}
			id := at(t, o, "operationId").(string)
			if prev, dup := ops[id]; dup {
				t.Errorf("operationId %s on %s and %s %s", id, prev, method, path)
			}
			ops[id] = method + " " + path
		}
	}
	for id, where := range map[string]string{
		"listCoreV1NamespacedPod":                    "get /api/v1/namespaces/{namespace}/pods",
		"listCoreV1PodForAllNamespaces":              "get /api/v1/pods",
		"createCoreV1NamespacedPod":                  "post /api/v1/namespaces/{namespace}/pods",
		"deleteCoreV1CollectionNamespacedPod":        "delete /api/v1/namespaces/{namespace}/pods",
		"readCoreV1NamespacedPod":                    "get /api/v1/namespaces/{namespace}/pods/{name}",
		"replaceCoreV1NamespacedPod":                 "put /api/v1/namespaces/{namespace}/pods/{name}",
		"deleteCoreV1NamespacedPod":                  "delete /api/v1/namespaces/{namespace}/pods/{name}",
		"watchCoreV1NamespacedPodList":               "get /api/v1/watch/namespaces/{namespace}/pods",
		"watchCoreV1NamespacedPod":                   "get /api/v1/watch/namespaces/{namespace}/pods/{name}",
		"watchCoreV1PodListForAllNamespaces":         "get /api/v1/watch/pods",
		"patchCoreV1NamespacedPodStatus":             "patch /api/v1/namespaces/{namespace}/pods/{name}/status",
		"createCoreV1NamespacedPodBinding":           "post /api/v1/namespaces/{namespace}/pods/{name}/binding",
		"createCoreV1NamespacedPodEviction":          "post /api/v1/namespaces/{namespace}/pods/{name}/eviction",
		"readCoreV1NamespacedPodLog":                 "get /api/v1/namespaces/{namespace}/pods/{name}/log",
		"connectCoreV1PostNamespacedPodExec":         "post /api/v1/namespaces/{namespace}/pods/{name}/exec",
		"createCoreV1NamespacedBinding":              "post /api/v1/namespaces/{namespace}/bindings",
		"listCoreV1Namespace":                        "get /api/v1/namespaces",
		"watchCoreV1NamespaceList":                   "get /api/v1/watch/namespaces",
		"replaceCoreV1NamespaceFinalize":             "put /api/v1/namespaces/{name}/finalize",
		"readCoreV1NodeStatus":                       "get /api/v1/nodes/{name}/status",
		"deleteCoreV1CollectionNode":                 "delete /api/v1/nodes",
		"replaceAppsV1NamespacedDeploymentScale":     "put /apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
		"patchExtensionsV1beta1NamespacedDeployment": "patch /apis/extensions/v1beta1/namespaces/{namespace}/deployments/{name}",
		"listDiscoveryV1NamespacedEndpointSlice":     "get /apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
		"readCoordinationV1NamespacedLease":          "get /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
		"listEventsV1EventForAllNamespaces":          "get /apis/events.k8s.io/v1/events",
	} {
		if ops[id] != where {
			t.Errorf("operation %s is at %q, want %q", id, ops[id], where)
		}
	}
	if _, ok := ops["deleteCoreV1Namespace"]; !ok || ops["deleteCoreV1CollectionNamespace"] != "" {
		t.Error("namespaces: want delete and no deletecollection, as listed")
	}
	scale := at(t, doc, "paths", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "get").(obj)
	if g := at(t, scale, groupVersionKindExt).(obj); g["group"] != "autoscaling" || g["kind"] != "Scale" {
		t.Errorf("scale GVK = %v", g)
	}
	if r := at(t, scale, "responses", "200", "schema", "$ref"); r != "#/definitions/io.k8s.api.autoscaling.v1.Scale" {
		t.Errorf("scale response = %v", r)
	}
	logOp := at(t, doc, "paths", "/api/v1/namespaces/{namespace}/pods/{name}/log", "get").(obj)
	wantParams(t, shared, logOp, "container", "follow", "previous", "tailLines", "sinceSeconds", "timestamps")
	if at(t, logOp, "responses", "200", "schema", "type") != "string" {
		t.Errorf("log response = %v", at(t, logOp, "responses", "200"))
	}
}

// wantParams checks that op has the named parameters, with descriptions;
// shared holds the v2 document's shared parameters (nil for v3).
func wantParams(t *testing.T, shared obj, op obj, names ...string) {
	t.Helper()
	have := map[string]obj{}
	for _, p := range at(t, op, "parameters").([]any) {
		p := p.(obj)
		if r, ok := p["$ref"].(string); ok {
			p = at(t, shared, strings.TrimPrefix(r, "#/parameters/")).(obj)
		}
		have[p["name"].(string)] = p
	}
	for _, n := range names {
		p, ok := have[n]
		if !ok {
			t.Errorf("%v: no parameter %s (have %v)", op["operationId"], n, have)
			continue
		}
		if n != "body" && p["description"] == "" {
			t.Errorf("%v: parameter %s has no description", op["operationId"], n)
		}
	}
}

// TestV2Kubectl reads the protobuf v2 document as kubectl does: gnostic
// document, kubectl's Resources, and strategic-merge patch metadata.
func TestV2Kubectl(t *testing.T) {
	j, err := BuildV2(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := V2Protobuf(j)
	if err != nil {
		t.Fatal(err)
	}
	var doc openapi_v2.Document
	if err := proto.Unmarshal(pb, &doc); err != nil {
		t.Fatalf("protobuf document: %v", err)
	}
	res, err := kubectlopenapi.NewOpenAPIData(&doc)
	if err != nil {
		t.Fatalf("kubectl cannot read the document: %v", err)
	}
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "Pod"}, {Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "extensions", Version: "v1beta1", Kind: "Deployment"}, {Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice"},
	} {
		if res.LookupResource(gvk) == nil {
			t.Errorf("kubectl finds no schema for %v", gvk)
		}
	}
	if c := fmt.Sprint(res.GetConsumes(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, "PATCH")); !strings.Contains(c, mediaStrategicMerge) {
		t.Errorf("Pod PATCH consumes %s", c)
	}
	pod := res.LookupResource(schema.GroupVersionKind{Version: "v1", Kind: "Pod"})
	meta := strategicpatch.NewPatchMetaFromOpenAPI(pod)
	spec, _, err := meta.LookupPatchMetadataForStruct("spec")
	if err != nil {
		t.Fatal(err)
	}
	_, pm, err := spec.LookupPatchMetadataForSlice("containers")
	if err != nil {
		t.Fatal(err)
	}
	if pm.GetPatchMergeKey() != "name" || fmt.Sprint(pm.GetPatchStrategies()) != "[merge]" {
		t.Errorf("containers patch meta = %q %v", pm.GetPatchMergeKey(), pm.GetPatchStrategies())
	}
	checkThreeWay(t, meta)
}

// checkThreeWay computes the patch kubectl apply sends when a container is
// added next to an existing one: with the merge key, the patch names only
// the new container instead of replacing the list.
func checkThreeWay(t *testing.T, meta strategicpatch.LookupPatchMeta) {
	t.Helper()
	mk := func(names ...string) []byte {
		p := corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		for _, n := range names {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: n + ":1"})
		}
		b, err := json.Marshal(&p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	patch, err := strategicpatch.CreateThreeWayMergePatch(mk("a"), mk("a", "b"), mk("a", "sidecar"), meta, false)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Spec struct {
			Containers []map[string]any `json:"containers"`
			Order      []any            `json:"$setElementOrder/containers"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0]["name"] != "b" || len(p.Spec.Order) != 2 {
		t.Errorf("three-way patch = %s, want only container b merged by name", patch)
	}
}

func TestV3Documents(t *testing.T) {
	v3, err := BuildV3(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"api/v1", "apis/apps/v1", "apis/apps/v1beta1", "apis/apps/v1beta2", "apis/coordination.k8s.io/v1",
		"apis/discovery.k8s.io/v1", "apis/events.k8s.io/v1", "apis/extensions/v1beta1"}
	if got := v3.Paths(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("documents %v, want %v", got, want)
	}
	index := decode(t, v3.Index)
	for path, d := range v3.Docs {
		u := at(t, index, "paths", path, "serverRelativeURL")
		if u != "/openapi/v3/"+path+"?hash="+d.Hash || len(d.Hash) != 128 || strings.ToUpper(d.Hash) != d.Hash {
			t.Errorf("%s: index URL %v, hash %s", path, u, d.Hash)
		}
		if d.Hash != etag(d.JSON) {
			t.Errorf("%s: hash is not the SHA-512 of the document", path)
		}
		doc := decode(t, d.JSON)
		if at(t, doc, "openapi") != "3.0.0" {
			t.Errorf("%s: openapi = %v", path, doc["openapi"])
		}
		schemas := at(t, doc, "components", "schemas").(obj)
		checkRefs(t, doc, map[string]obj{"#/components/schemas/": schemas})
		if _, ok := schemas["io.k8s.api.core.v1.Pod"]; ok != (path == "api/v1") {
			t.Errorf("%s: Pod schema present = %v", path, ok)
		}
		for p := range at(t, doc, "paths").(obj) {
			if !strings.HasPrefix(p, "/"+path+"/") {
				t.Errorf("%s: foreign path %s", path, p)
			}
		}
	}
	core := decode(t, v3.Docs["api/v1"].JSON)
	schemas := at(t, core, "components", "schemas").(obj)
	ios := at(t, schemas, "io.k8s.apimachinery.pkg.util.intstr.IntOrString").(obj)
	if ios["format"] != "int-or-string" || fmt.Sprint(ios["oneOf"]) != "[map[type:integer] map[type:string]]" {
		t.Errorf("IntOrString = %v", ios)
	}
	if q := at(t, schemas, "io.k8s.apimachinery.pkg.api.resource.Quantity", "oneOf"); fmt.Sprint(q) != "[map[type:string] map[type:number]]" {
		t.Errorf("Quantity oneOf = %v", q)
	}
	spec := at(t, schemas, "io.k8s.api.core.v1.Pod", "properties", "spec").(obj)
	if at(t, spec, "allOf").([]any)[0].(obj)["$ref"] != "#/components/schemas/io.k8s.api.core.v1.PodSpec" || spec["description"] == "" {
		t.Errorf("v3 Pod.spec = %v", spec)
	}
	if l := gvkList(t, schemas["io.k8s.api.core.v1.Pod"]); !hasGVK(l, "", "v1", "Pod") {
		t.Errorf("v3 Pod GVK = %v", l)
	}
	patch := at(t, core, "paths", "/api/v1/namespaces/{namespace}/pods/{name}", "patch").(obj)
	if _, ok := at(t, patch, "requestBody", "content").(obj)[mediaStrategicMerge]; !ok {
		t.Errorf("v3 pod patch request body = %v", patch["requestBody"])
	}
	wantParams(t, nil, patch, "fieldValidation", "fieldManager", "dryRun", "force")
}

// TestDeterministic: the same input gives the same bytes, so hashes and
// ETags are stable across restarts.
func TestDeterministic(t *testing.T) {
	a, err := BuildV3(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildV3(testResources(), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Index, b.Index) {
		t.Error("v3 index differs between builds")
	}
	x, _ := BuildV2(testResources(), testInfo)
	y, _ := BuildV2(testResources(), testInfo)
	if !bytes.Equal(x, y) {
		t.Error("v2 document differs between builds")
	}
}

// badKind is an object whose fields have no JSON schema.
type badKind struct {
	metav1.TypeMeta `json:",inline"`
	Ch              chan int `json:"ch"`
}

func (b *badKind) DeepCopyObject() runtime.Object { return &badKind{TypeMeta: b.TypeMeta} }

type badMapKind struct {
	metav1.TypeMeta `json:",inline"`
	M               map[struct{ A int }]string `json:"m"`
}

func (b *badMapKind) DeepCopyObject() runtime.Object { return &badMapKind{TypeMeta: b.TypeMeta} }

func TestBadInput(t *testing.T) {
	pod := func() Resource {
		return Resource{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, Plural: "pods", Namespaced: true,
			Verbs: []string{"get", "list"}, Object: &corev1.Pod{}, List: &corev1.PodList{}}
	}
	for name, c := range map[string]struct {
		edit func(*Resource)
		want string
	}{
		"no kind":      {func(r *Resource) { r.GVK.Kind = "" }, "needs a version and a kind"},
		"bad plural":   {func(r *Resource) { r.Plural = "Pods" }, "not a lowercase DNS label"},
		"no object":    {func(r *Resource) { r.Object = nil }, "Object: missing prototype"},
		"no list":      {func(r *Resource) { r.List = nil }, "verb list needs List"},
		"unknown verb": {func(r *Resource) { r.Verbs = append(r.Verbs, "frob") }, `unknown verb "frob"`},
		"sub verb":     {func(r *Resource) { r.Subresources = []Subresource{{Name: "status", Verbs: []string{"list"}}} }, `unknown verb "list"`},
		"sub no verbs": {func(r *Resource) { r.Subresources = []Subresource{{Name: "status"}} }, "has no verbs"},
		"sub twice": {func(r *Resource) {
			s := Subresource{Name: "status", Verbs: []string{"get"}}
			r.Subresources = []Subresource{s, s}
		}, "listed twice"},
		"sub without gvk": {func(r *Resource) {
			r.Subresources = []Subresource{{Name: "x", Verbs: []string{"get"}, Object: &corev1.Binding{}}}
		}, "without its GVK"},
		"text sub update": {func(r *Resource) {
			r.Subresources = []Subresource{{Name: "log", Verbs: []string{"update"}, Text: true}}
		}, "needs a body Object"},
		"chan field": {func(r *Resource) { r.Object = &badKind{} }, "chan int has no JSON form"},
		"map key":    {func(r *Resource) { r.Object = &badMapKind{} }, "cannot be a JSON object key"},
		"get and connect": {func(r *Resource) {
			r.Subresources = []Subresource{{Name: "exec", Verbs: []string{"get", "connect"}, Text: true}}
		}, "two GET operations"},
		"bad options type": {func(r *Resource) {
			r.Subresources = []Subresource{{Name: "x", Verbs: []string{"get"}, Options: &badKind{}}}
		}, "no scalar fields"},
	} {
		t.Run(name, func(t *testing.T) {
			r := pod()
			c.edit(&r)
			_, err := BuildV2([]Resource{r}, testInfo)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("BuildV2: error %v, want one containing %q", err, c.want)
			}
			_, err = BuildV3([]Resource{r}, testInfo)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("BuildV3: error %v, want one containing %q", err, c.want)
			}
		})
	}
	r := pod()
	if _, err := BuildV2([]Resource{r, r}, testInfo); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate resource: %v", err)
	}
	if _, err := V2Protobuf([]byte("{not json")); err == nil {
		t.Error("V2Protobuf accepted bad JSON")
	}
	if _, err := V3Protobuf([]byte("[1")); err == nil {
		t.Error("V3Protobuf accepted bad JSON")
	}
}

func TestDefinitionName(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{corev1.Pod{}, "io.k8s.api.core.v1.Pod"},
		{metav1.ObjectMeta{}, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
		{runtime.RawExtension{}, "io.k8s.apimachinery.pkg.runtime.RawExtension"},
		{Resource{}, "com.github.orch-dev.orch.server.apiserver.openapi.Resource"},
	} {
		got, err := DefinitionName(reflectType(c.v))
		if err != nil || got != c.want {
			t.Errorf("DefinitionName(%T) = %q, %v; want %q", c.v, got, err, c.want)
		}
	}
	if _, err := DefinitionName(reflectType(0)); err == nil {
		t.Error("DefinitionName(int) succeeded")
	}
}

func reflectType(v any) reflect.Type { return reflect.TypeOf(v) }
