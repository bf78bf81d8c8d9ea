// Package discover maps the API's resources for the controllers that work
// across kinds (garbage collector, namespace deletion).
package discover

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Source reads the API's discovery documents: the methods of client-go's
// discovery.DiscoveryInterface that Load uses (its fake serves tests),
// implemented for the server by Client.
type Source interface {
	ServerGroupsAndResources() ([]*metav1.APIGroup, []*metav1.APIResourceList, error)
	ServerPreferredResources() ([]*metav1.APIResourceList, error)
}

// Resource is one served resource.
type Resource struct {
	GVR        schema.GroupVersionResource
	Kind       string
	Namespaced bool
	Verbs      []string
}

// Has reports whether the resource supports every verb.
func (r Resource) Has(verbs ...string) bool {
	for _, v := range verbs {
		found := false
		for _, w := range r.Verbs {
			if w == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Map is the API's resources: the preferred version of each, and every
// served group-version-kind.
type Map struct {
	Preferred []Resource
	byGVK     map[schema.GroupVersionKind]Resource
	byGK      map[schema.GroupKind]Resource
}

// Load reads the API's discovery documents.
func Load(d Source) (*Map, error) {
	_, lists, err := d.ServerGroupsAndResources()
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	pref, err := d.ServerPreferredResources()
	if err != nil {
		return nil, fmt.Errorf("discovery of preferred resources: %w", err)
	}
	if len(pref) == 0 {
		// Servers (and fakes) that report no preferences: every group
		// version counts.
		pref = lists
	}
	m := &Map{byGVK: map[schema.GroupVersionKind]Resource{}, byGK: map[schema.GroupKind]Resource{}}
	each(lists, func(r Resource) { m.byGVK[r.GVR.GroupVersion().WithKind(r.Kind)] = r })
	each(pref, func(r Resource) {
		m.Preferred = append(m.Preferred, r)
		m.byGK[schema.GroupKind{Group: r.GVR.Group, Kind: r.Kind}] = r
	})
	return m, nil
}

func each(lists []*metav1.APIResourceList, fn func(Resource)) {
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") {
				continue
			}
			fn(Resource{GVR: gv.WithResource(r.Name), Kind: r.Kind, Namespaced: r.Namespaced, Verbs: r.Verbs})
		}
	}
}

// For finds the resource of an apiVersion and kind (as in an owner
// reference), falling back to the preferred version of the group.
func (m *Map) For(apiVersion, kind string) (Resource, bool) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return Resource{}, false
	}
	if r, ok := m.byGVK[gv.WithKind(kind)]; ok {
		return r, true
	}
	r, ok := m.byGK[schema.GroupKind{Group: gv.Group, Kind: kind}]
	return r, ok
}

// New builds a map from known resources (all of them preferred).
func New(resources []Resource) *Map {
	m := &Map{byGVK: map[schema.GroupVersionKind]Resource{}, byGK: map[schema.GroupKind]Resource{}}
	for _, r := range resources {
		m.Preferred = append(m.Preferred, r)
		m.byGVK[r.GVR.GroupVersion().WithKind(r.Kind)] = r
		m.byGK[schema.GroupKind{Group: r.GVR.Group, Kind: r.Kind}] = r
	}
	return m
}
