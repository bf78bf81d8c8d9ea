package apiserver

import (
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/orch-dev/orch/server/apiserver/openapi"
)

// openAPIResources describes every served resource for the OpenAPI
// documents kubectl reads (apply's field validation and patch strategies,
// explain).
func (s *Server) openAPIResources() []openapi.Resource {
	var out []openapi.Resource
	for _, gv := range s.reg.order {
		for plural, sv := range s.reg.served[gv] {
			k := sv.k
			list, err := s.scheme.New(gv.WithKind(k.gvk.Kind + "List"))
			if err != nil {
				continue
			}
			r := openapi.Resource{
				GVK: sv.gvk(), Plural: plural, Namespaced: k.namespaced,
				Verbs:  []string(allVerbs),
				Object: sv.newObj(), List: list,
			}
			rw := []string{"get", "update", "patch"}
			if k.hasStatus {
				r.Subresources = append(r.Subresources, openapi.Subresource{Name: "status", Verbs: rw})
			}
			if k.scale && !sv.legacy {
				r.Subresources = append(r.Subresources, openapi.Subresource{Name: "scale", Verbs: rw,
					GVK: autoscalingv1.SchemeGroupVersion.WithKind("Scale"), Object: &autoscalingv1.Scale{}})
			}
			for _, sub := range k.subresources {
				switch sub {
				case "binding":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"create"},
						GVK: corev1.SchemeGroupVersion.WithKind("Binding"), Object: &corev1.Binding{}})
				case "eviction":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"create"},
						GVK: policyv1.SchemeGroupVersion.WithKind("Eviction"), Object: &policyv1.Eviction{}})
				case "log":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"get"},
						Options: &corev1.PodLogOptions{}, Text: true})
				case "exec":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"connect"},
						GVK: corev1.SchemeGroupVersion.WithKind("PodExecOptions"), Options: &corev1.PodExecOptions{}, Text: true})
				case "attach":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"connect"},
						GVK: corev1.SchemeGroupVersion.WithKind("PodAttachOptions"), Options: &corev1.PodAttachOptions{}, Text: true})
				case "portforward":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"connect"},
						GVK: corev1.SchemeGroupVersion.WithKind("PodPortForwardOptions"), Text: true})
				case "finalize":
					r.Subresources = append(r.Subresources, openapi.Subresource{Name: sub, Verbs: []string{"update"}})
				}
			}
			out = append(out, r)
		}
	}
	return out
}
