package apiserver

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestRESTMapper: the mapper knows every resource discovery lists, in every
// served version, with its scope; versionless lookups get the preferred
// version and unknown kinds a no-match error.
func TestRESTMapper(t *testing.T) {
	ts := newTestServer(t)
	m := ts.srv.RESTMapper()
	n := 0
	for gv, list := range ts.srv.discovery.resources {
		for _, r := range list.APIResources {
			if r.Group != "" || r.Version != "" || len(r.Kind) == 0 || containsSlash(r.Name) {
				continue
			}
			n++
			got, err := m.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: r.Kind}, gv.Version)
			if err != nil {
				t.Errorf("%s %s: %v", gv, r.Kind, err)
				continue
			}
			if got.Resource != gv.WithResource(r.Name) || (got.Scope.Name() == meta.RESTScopeNameNamespace) != r.Namespaced {
				t.Errorf("%s %s: mapped to %s scope %s, discovery says %s namespaced=%v", gv, r.Kind, got.Resource, got.Scope.Name(), r.Name, r.Namespaced)
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d resources checked", n)
	}
	for _, c := range []struct {
		gk      schema.GroupKind
		version string
		want    schema.GroupVersionResource
		scope   meta.RESTScopeName
	}{
		{schema.GroupKind{Group: "extensions", Kind: "Deployment"}, "v1beta1", schema.GroupVersionResource{Group: "extensions", Version: "v1beta1", Resource: "deployments"}, meta.RESTScopeNameNamespace},
		{schema.GroupKind{Group: "apps", Kind: "Deployment"}, "v1beta2", schema.GroupVersionResource{Group: "apps", Version: "v1beta2", Resource: "deployments"}, meta.RESTScopeNameNamespace},
		{schema.GroupKind{Group: "apps", Kind: "Deployment"}, "", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, meta.RESTScopeNameNamespace},
		{schema.GroupKind{Kind: "Node"}, "v1", schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, meta.RESTScopeNameRoot},
		{schema.GroupKind{Group: "events.k8s.io", Kind: "Event"}, "v1", schema.GroupVersionResource{Group: "events.k8s.io", Version: "v1", Resource: "events"}, meta.RESTScopeNameNamespace},
	} {
		var versions []string
		if c.version != "" {
			versions = []string{c.version}
		}
		got, err := m.RESTMapping(c.gk, versions...)
		if err != nil || got.Resource != c.want || got.Scope.Name() != c.scope {
			t.Errorf("%s %q: %v %+v", c.gk, c.version, err, got)
		}
	}
	if gvr, err := m.ResourceFor(schema.GroupVersionResource{Resource: "deployment"}); err != nil || gvr.Version != "v1" || gvr.Group != "apps" {
		t.Errorf("singular deployment: %v %v", gvr, err)
	}
	for _, c := range []struct {
		gk      schema.GroupKind
		version string
	}{
		{schema.GroupKind{Group: "example.com", Kind: "Gadget"}, "v1"},
		{schema.GroupKind{Group: "apps", Kind: "Deployment"}, "v9"},
		{schema.GroupKind{Group: "batch", Kind: "Job"}, "v1"},
	} {
		if _, err := m.RESTMapping(c.gk, c.version); !meta.IsNoMatchError(err) {
			t.Errorf("%s %s: want a no-match error, got %v", c.gk, c.version, err)
		}
	}
}

func containsSlash(s string) bool {
	for i := range s {
		if s[i] == '/' {
			return true
		}
	}
	return false
}
