package openapi

import (
	appsv1 "k8s.io/api/apps/v1"
	appsv1beta1 "k8s.io/api/apps/v1beta1"
	appsv1beta2 "k8s.io/api/apps/v1beta2"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	extensionsv1beta1 "k8s.io/api/extensions/v1beta1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var allVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}

// testResources is the resource set orch serves, as the API server lists it.
func testResources() []Resource {
	core := func(kind string) schema.GroupVersionKind { return corev1.SchemeGroupVersion.WithKind(kind) }
	apps := func(kind string) schema.GroupVersionKind { return appsv1.SchemeGroupVersion.WithKind(kind) }
	status := Subresource{Name: "status", Verbs: []string{"get", "update", "patch"}}
	scaleGVK := autoscalingv1.SchemeGroupVersion.WithKind("Scale")
	scale := Subresource{Name: "scale", Verbs: []string{"get", "update", "patch"}, GVK: scaleGVK, Object: &autoscalingv1.Scale{}}
	return []Resource{
		{GVK: core("Namespace"), Plural: "namespaces", Verbs: allVerbs[:7], Object: &corev1.Namespace{}, List: &corev1.NamespaceList{},
			Subresources: []Subresource{status, {Name: "finalize", Verbs: []string{"update"}}}},
		{GVK: core("Node"), Plural: "nodes", Verbs: allVerbs, Object: &corev1.Node{}, List: &corev1.NodeList{}, Subresources: []Subresource{status}},
		{GVK: core("Pod"), Plural: "pods", Namespaced: true, Verbs: allVerbs, Object: &corev1.Pod{}, List: &corev1.PodList{},
			Subresources: []Subresource{
				status,
				{Name: "binding", Verbs: []string{"create"}, GVK: core("Binding"), Object: &corev1.Binding{}},
				{Name: "eviction", Verbs: []string{"create"}, GVK: policyv1.SchemeGroupVersion.WithKind("Eviction"), Object: &policyv1.Eviction{}},
				{Name: "log", Verbs: []string{"get"}, Options: &corev1.PodLogOptions{}, Text: true},
				{Name: "exec", Verbs: []string{"connect"}, GVK: core("PodExecOptions"), Options: &corev1.PodExecOptions{}, Text: true},
			}},
		{GVK: core("Binding"), Plural: "bindings", Namespaced: true, Verbs: []string{"create"}, Object: &corev1.Binding{}},
		{GVK: core("Service"), Plural: "services", Namespaced: true, Verbs: allVerbs, Object: &corev1.Service{}, List: &corev1.ServiceList{}, Subresources: []Subresource{status}},
		{GVK: core("Endpoints"), Plural: "endpoints", Namespaced: true, Verbs: allVerbs, Object: &corev1.Endpoints{}, List: &corev1.EndpointsList{}},
		{GVK: core("ConfigMap"), Plural: "configmaps", Namespaced: true, Verbs: allVerbs, Object: &corev1.ConfigMap{}, List: &corev1.ConfigMapList{}},
		{GVK: core("Secret"), Plural: "secrets", Namespaced: true, Verbs: allVerbs, Object: &corev1.Secret{}, List: &corev1.SecretList{}},
		{GVK: core("Event"), Plural: "events", Namespaced: true, Verbs: allVerbs, Object: &corev1.Event{}, List: &corev1.EventList{}},
		{GVK: core("ServiceAccount"), Plural: "serviceaccounts", Namespaced: true, Verbs: allVerbs, Object: &corev1.ServiceAccount{}, List: &corev1.ServiceAccountList{}},
		{GVK: apps("Deployment"), Plural: "deployments", Namespaced: true, Verbs: allVerbs, Object: &appsv1.Deployment{}, List: &appsv1.DeploymentList{}, Subresources: []Subresource{status, scale}},
		{GVK: apps("ReplicaSet"), Plural: "replicasets", Namespaced: true, Verbs: allVerbs, Object: &appsv1.ReplicaSet{}, List: &appsv1.ReplicaSetList{}, Subresources: []Subresource{status, scale}},
		{GVK: apps("DaemonSet"), Plural: "daemonsets", Namespaced: true, Verbs: allVerbs, Object: &appsv1.DaemonSet{}, List: &appsv1.DaemonSetList{}, Subresources: []Subresource{status}},
		{GVK: extensionsv1beta1.SchemeGroupVersion.WithKind("Deployment"), Plural: "deployments", Namespaced: true, Verbs: allVerbs,
			Object: &extensionsv1beta1.Deployment{}, List: &extensionsv1beta1.DeploymentList{}, Subresources: []Subresource{status}},
		{GVK: appsv1beta1.SchemeGroupVersion.WithKind("Deployment"), Plural: "deployments", Namespaced: true, Verbs: allVerbs,
			Object: &appsv1beta1.Deployment{}, List: &appsv1beta1.DeploymentList{}, Subresources: []Subresource{status}},
		{GVK: appsv1beta2.SchemeGroupVersion.WithKind("Deployment"), Plural: "deployments", Namespaced: true, Verbs: allVerbs,
			Object: &appsv1beta2.Deployment{}, List: &appsv1beta2.DeploymentList{}, Subresources: []Subresource{status}},
		{GVK: discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), Plural: "endpointslices", Namespaced: true, Verbs: allVerbs,
			Object: &discoveryv1.EndpointSlice{}, List: &discoveryv1.EndpointSliceList{}},
		{GVK: coordinationv1.SchemeGroupVersion.WithKind("Lease"), Plural: "leases", Namespaced: true, Verbs: allVerbs,
			Object: &coordinationv1.Lease{}, List: &coordinationv1.LeaseList{}},
		{GVK: eventsv1.SchemeGroupVersion.WithKind("Event"), Plural: "events", Namespaced: true, Verbs: allVerbs,
			Object: &eventsv1.Event{}, List: &eventsv1.EventList{}},
	}
}
