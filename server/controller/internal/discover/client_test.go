package discover

import (
	"sort"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"

	"github.com/orch-dev/orch/internal/apitest"
)

// flat lists "groupVersion resource" of every resource in lists.
func flat(lists []*metav1.APIResourceList) []string {
	var out []string
	for _, l := range lists {
		for _, r := range l.APIResources {
			out = append(out, l.GroupVersion+" "+r.Name)
		}
	}
	sort.Strings(out)
	return out
}

// TestClientMatchesClientGo: the client reads the same groups, resources
// and preferred resources from a real API server as client-go's discovery
// client, and Load builds a usable map from them.
func TestClientMatchesClientGo(t *testing.T) {
	s := apitest.Start(t)
	c, err := NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := discovery.NewDiscoveryClientForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	groups, lists, err := c.ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	wantGroups, wantLists, err := ref.ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != len(wantGroups) {
		t.Fatalf("%d groups, client-go %d", len(groups), len(wantGroups))
	}
	for i := range groups {
		if groups[i].Name != wantGroups[i].Name || groups[i].PreferredVersion != wantGroups[i].PreferredVersion {
			t.Errorf("group %d: %s %v, client-go %s %v", i, groups[i].Name, groups[i].PreferredVersion, wantGroups[i].Name, wantGroups[i].PreferredVersion)
		}
	}
	if got, want := flat(lists), flat(wantLists); len(got) == 0 || len(got) != len(want) {
		t.Fatalf("resources %v, client-go %v", got, want)
	} else {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("resource %d: %s, client-go %s", i, got[i], want[i])
			}
		}
	}
	pref, err := c.ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	wantPref, err := ref.ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	got, want := flat(pref), flat(wantPref)
	if len(got) != len(want) {
		t.Fatalf("preferred %v, client-go %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("preferred %d: %s, client-go %s", i, got[i], want[i])
		}
	}

	m, err := Load(c)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := m.For("apps/v1beta2", "Deployment"); !ok || r.GVR.Version != "v1beta2" || !r.Namespaced || !r.Has("list", "delete") {
		t.Errorf("apps/v1beta2 Deployment: %+v %v", r, ok)
	}
	if r, ok := m.For("v1", "Node"); !ok || r.GVR.Resource != "nodes" || r.Namespaced {
		t.Errorf("v1 Node: %+v %v", r, ok)
	}
	if _, ok := m.For("example.com/v1", "Gadget"); ok {
		t.Error("an unserved kind was found")
	}
}

// TestClientError: an unreachable server is an error, not an empty map.
func TestClientError(t *testing.T) {
	s := apitest.Start(t)
	cfg := *s.Config
	s.HTTP.Close()
	c, err := NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(c); err == nil {
		t.Fatal("discovery of a stopped server succeeded")
	}
}
