package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Groups with a meaning to the authorizer.
const (
	GroupMasters = "system:masters"
	GroupNodes   = "system:nodes"
	nodePrefix   = "system:node:"
)

// verbOf names the Kubernetes verb of a request.
func verbOf(r *http.Request, ri requestInfo, isWatch bool) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case isWatch:
			return "watch"
		case ri.name == "":
			return "list"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		if ri.name == "" {
			return "deletecollection"
		}
		return "delete"
	}
	return strings.ToLower(r.Method)
}

// authorize allows cluster administrators everything and nodes what the
// node authorizer of upstream allows them: reading the cluster, and writing
// only their own Node and Lease, the pods bound to them, and events. Other
// users are refused until RBAC exists.
func (s *Server) authorize(ctx context.Context, u *User, verb string, sv *served, ri requestInfo) error {
	node := ""
	for _, g := range u.Groups {
		if g == GroupMasters {
			return nil
		}
		if g == GroupNodes && strings.HasPrefix(u.Name, nodePrefix) {
			node = strings.TrimPrefix(u.Name, nodePrefix)
		}
	}
	forbidden := func(why string) error {
		return apierrors.NewForbidden(schema.GroupResource{Group: sv.k.gr.Group, Resource: sv.k.gr.Resource}, ri.name,
			fmt.Errorf("User %q cannot %s resource %q in API group %q: %s", u.Name, verb, sv.k.gr.Resource, sv.k.gr.Group, why))
	}
	if node == "" {
		return forbidden("no RBAC policy matched")
	}
	switch verb {
	case "get", "list", "watch":
		return nil
	}
	switch sv.k.gr {
	case schema.GroupResource{Resource: "events"}, schema.GroupResource{Group: "events.k8s.io", Resource: "events"}:
		return nil
	case schema.GroupResource{Resource: "nodes"}:
		if ri.name == node && verb != "delete" && verb != "deletecollection" {
			return nil
		}
		if verb == "create" {
			// The name is in the body: checked when the object is decoded.
			return nil
		}
		return forbidden("node " + node + " can only modify its own Node object")
	case schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}:
		if ri.namespace == corev1.NamespaceNodeLease && (ri.name == node || verb == "create") {
			return nil
		}
		return forbidden("node " + node + " can only modify its own Lease")
	case schema.GroupResource{Resource: "pods"}:
		if ri.name == "" {
			return forbidden("node " + node + " cannot create or delete collections of pods")
		}
		if ri.subresource != "" && ri.subresource != "status" {
			return forbidden("node " + node + " cannot use pods/" + ri.subresource)
		}
		if verb == "create" {
			return forbidden("node " + node + " cannot create pods")
		}
		obj, err := s.objs.get(ctx, sv.k, ri.namespace, ri.name)
		if err != nil {
			return err
		}
		if obj.(*corev1.Pod).Spec.NodeName != node {
			return forbidden("pod is not bound to node " + node)
		}
		return nil
	}
	return forbidden("nodes may not modify this resource")
}

// nodeMayCreate checks the name of a Node or Lease a node creates: its own.
func nodeMayCreate(ctx context.Context, k *kind, obj runtime.Object) error {
	u, ok := UserFrom(ctx)
	if !ok || (k.gr != schema.GroupResource{Resource: "nodes"} && k.gr != schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}) {
		return nil
	}
	node := ""
	for _, g := range u.Groups {
		if g == GroupMasters {
			return nil
		}
		if g == GroupNodes {
			node = strings.TrimPrefix(u.Name, nodePrefix)
		}
	}
	if node == "" {
		return nil
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	if m.GetName() != node {
		return apierrors.NewForbidden(k.gr, m.GetName(), fmt.Errorf("node %q can only create its own %s", node, k.gvk.Kind))
	}
	return nil
}
