package apiserver

import (
	"net/http"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// discoveryDocs are the discovery documents, built once.
type discoveryDocs struct {
	groups    metav1.APIGroupList
	byGroup   map[string]*metav1.APIGroup
	resources map[schema.GroupVersion]*metav1.APIResourceList
}

// preferred versions of groups served in several versions.
var preferredVersion = map[string]string{"apps": "v1"}

var allVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

func newDiscovery(reg *registry) *discoveryDocs {
	d := &discoveryDocs{byGroup: map[string]*metav1.APIGroup{}, resources: map[schema.GroupVersion]*metav1.APIResourceList{}}
	for _, gv := range reg.order {
		list := &metav1.APIResourceList{GroupVersion: gv.String()}
		list.Kind, list.APIVersion = "APIResourceList", "v1"
		names := make([]string, 0, len(reg.served[gv]))
		for name := range reg.served[gv] {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			sv := reg.served[gv][name]
			k := sv.k
			ar := metav1.APIResource{Name: name, SingularName: k.singular(), Namespaced: k.namespaced, Kind: k.gvk.Kind, Verbs: allVerbs}
			if !sv.legacy {
				// Old versions keep no short names or categories: `kubectl get
				// deploy` and `get all` mean the current version only.
				ar.ShortNames, ar.Categories = k.shortNames, k.categories
			}
			list.APIResources = append(list.APIResources, ar)
			subs := append([]string(nil), k.subresources...)
			if k.hasStatus {
				subs = append(subs, "status")
			}
			if k.scale {
				subs = append(subs, "scale")
			}
			sort.Strings(subs)
			for _, sub := range subs {
				ar := metav1.APIResource{Name: name + "/" + sub, Namespaced: k.namespaced, Kind: k.gvk.Kind}
				switch sub {
				case "status":
					ar.Verbs = metav1.Verbs{"get", "patch", "update"}
				case "scale":
					ar.Group, ar.Version, ar.Kind = "autoscaling", "v1", "Scale"
					ar.Verbs = metav1.Verbs{"get", "patch", "update"}
				case "binding":
					ar.Kind = "Binding"
					ar.Verbs = metav1.Verbs{"create"}
				case "eviction":
					ar.Group, ar.Version, ar.Kind = "policy", "v1", "Eviction"
					ar.Verbs = metav1.Verbs{"create"}
				case "finalize":
					ar.Verbs = metav1.Verbs{"update"}
				case "log":
					ar.Kind = "Pod"
					ar.Verbs = metav1.Verbs{"get"}
				case "exec", "attach", "portforward":
					ar.Kind = "PodExecOptions"
					if sub == "attach" {
						ar.Kind = "PodAttachOptions"
					}
					if sub == "portforward" {
						ar.Kind = "PodPortForwardOptions"
					}
					ar.Verbs = metav1.Verbs{"create", "get"}
				case "proxy":
					ar.Kind = k.gvk.Kind + "ProxyOptions"
					ar.Verbs = metav1.Verbs{"create", "delete", "get", "patch", "update"}
				case "ephemeralcontainers":
					ar.Verbs = metav1.Verbs{"get", "patch", "update"}
				}
				list.APIResources = append(list.APIResources, ar)
			}
		}
		d.resources[gv] = list
		if gv.Group == "" {
			continue
		}
		g, ok := d.byGroup[gv.Group]
		gvd := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
		if !ok {
			g = &metav1.APIGroup{Name: gv.Group}
			g.Kind, g.APIVersion = "APIGroup", "v1"
			d.byGroup[gv.Group] = g
		}
		g.Versions = append(g.Versions, gvd)
		if pv, has := preferredVersion[gv.Group]; (has && pv == gv.Version) || (!has && g.PreferredVersion.Version == "") {
			g.PreferredVersion = gvd
		}
	}
	groupNames := make([]string, 0, len(d.byGroup))
	for name := range d.byGroup {
		groupNames = append(groupNames, name)
	}
	sort.Strings(groupNames)
	d.groups.Kind, d.groups.APIVersion = "APIGroupList", "v1"
	for _, name := range groupNames {
		g := d.byGroup[name]
		// The preferred version is listed first, as upstream.
		sort.SliceStable(g.Versions, func(i, j int) bool { return g.Versions[i].Version == g.PreferredVersion.Version })
		d.groups.Groups = append(d.groups.Groups, *g)
	}
	return d
}

func (s *Server) serveDiscoveryRoot(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api" || r.URL.Path == "/api/" {
		s.writeJSON(w, http.StatusOK, &metav1.APIVersions{
			TypeMeta:                   metav1.TypeMeta{Kind: "APIVersions"},
			Versions:                   []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
		})
		return
	}
	s.writeJSON(w, http.StatusOK, &s.discovery.groups)
}

func (s *Server) serveGroup(w http.ResponseWriter, r *http.Request, group string) {
	g, ok := s.discovery.byGroup[group]
	if !ok {
		s.writeError(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
		return
	}
	s.writeJSON(w, http.StatusOK, g)
}

func (s *Server) serveResourceList(w http.ResponseWriter, r *http.Request, gv schema.GroupVersion) {
	l, ok := s.discovery.resources[gv]
	if !ok {
		s.writeError(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
		return
	}
	s.writeJSON(w, http.StatusOK, l)
}
