package apiserver

import (
	"sort"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// RESTMapper maps the kinds the server serves to their resources, in every
// served version (the legacy extensions/v1beta1, apps/v1beta1 and
// apps/v1beta2 Deployments included); a kind asked for without a version
// maps to its group's preferred version. It is what discovery of this
// server would give an in-process client, without a round trip or
// client-go's discovery package. Kinds the server does not serve give a
// meta.NoKindMatchError.
func (s *Server) RESTMapper() meta.RESTMapper {
	return s.reg.restMapper()
}

func (r *registry) restMapper() meta.RESTMapper {
	// A versionless lookup tries the versions in this order: each group's
	// preferred version (as discovery reports it) first.
	order := append([]schema.GroupVersion(nil), r.order...)
	first := map[string]string{}
	for _, gv := range order {
		if _, ok := first[gv.Group]; !ok {
			first[gv.Group] = gv.Version
		}
	}
	preferred := func(gv schema.GroupVersion) bool {
		if pv, ok := preferredVersion[gv.Group]; ok {
			return pv == gv.Version
		}
		return first[gv.Group] == gv.Version
	}
	sort.SliceStable(order, func(i, j int) bool { return preferred(order[i]) && !preferred(order[j]) })
	m := meta.NewDefaultRESTMapper(order)
	for _, gv := range r.order {
		for name, sv := range r.served[gv] {
			scope := meta.RESTScopeRoot
			if sv.k.namespaced {
				scope = meta.RESTScopeNamespace
			}
			m.AddSpecific(sv.gvk(), gv.WithResource(name), gv.WithResource(sv.k.singular()), scope)
		}
	}
	// A partial name served by several groups (deployments: apps and
	// extensions) resolves to the first in that order, as with discovery.
	p := meta.PriorityRESTMapper{Delegate: m}
	for _, gv := range order {
		p.ResourcePriority = append(p.ResourcePriority, gv.WithResource(meta.AnyResource))
		p.KindPriority = append(p.KindPriority, gv.WithKind(meta.AnyKind))
	}
	return p
}
