package kube

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Interface is the clientset: one typed client per API group version.
type Interface interface {
	CoreV1() CoreV1Interface
	AppsV1() AppsV1Interface
	CoordinationV1() CoordinationV1Interface
	DiscoveryV1() DiscoveryV1Interface
}

// Resource is a typed client of one resource without a status subresource:
// the verbs client-go's typed clients have, with their signatures.
type Resource[T runtime.Object, L runtime.Object] interface {
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

// StatusResource is a typed client of a resource with a status subresource.
type StatusResource[T runtime.Object, L runtime.Object] interface {
	Resource[T, L]
	UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// The typed clients, named as client-go names them.
type (
	PodInterface interface {
		StatusResource[*corev1.Pod, *corev1.PodList]
		// Bind assigns the pod to a node (pods/binding).
		Bind(ctx context.Context, binding *corev1.Binding, opts metav1.CreateOptions) error
	}
	NamespaceInterface interface {
		StatusResource[*corev1.Namespace, *corev1.NamespaceList]
		// Finalize replaces the namespace's spec.finalizers (namespaces/finalize).
		Finalize(ctx context.Context, ns *corev1.Namespace, opts metav1.UpdateOptions) (*corev1.Namespace, error)
	}
	NodeInterface               = StatusResource[*corev1.Node, *corev1.NodeList]
	ServiceInterface            = StatusResource[*corev1.Service, *corev1.ServiceList]
	EndpointsInterface          = Resource[*corev1.Endpoints, *corev1.EndpointsList]
	ConfigMapInterface          = Resource[*corev1.ConfigMap, *corev1.ConfigMapList]
	SecretInterface             = Resource[*corev1.Secret, *corev1.SecretList]
	ServiceAccountInterface     = Resource[*corev1.ServiceAccount, *corev1.ServiceAccountList]
	EventInterface              = Resource[*corev1.Event, *corev1.EventList]
	DeploymentInterface         = StatusResource[*appsv1.Deployment, *appsv1.DeploymentList]
	ReplicaSetInterface         = StatusResource[*appsv1.ReplicaSet, *appsv1.ReplicaSetList]
	DaemonSetInterface          = StatusResource[*appsv1.DaemonSet, *appsv1.DaemonSetList]
	ControllerRevisionInterface = Resource[*appsv1.ControllerRevision, *appsv1.ControllerRevisionList]
	LeaseInterface              = Resource[*coordinationv1.Lease, *coordinationv1.LeaseList]
	EndpointSliceInterface      = Resource[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList]
)

// CoreV1Interface is the core/v1 client.
type CoreV1Interface interface {
	Pods(namespace string) PodInterface
	Nodes() NodeInterface
	Namespaces() NamespaceInterface
	Services(namespace string) ServiceInterface
	Endpoints(namespace string) EndpointsInterface
	ConfigMaps(namespace string) ConfigMapInterface
	Secrets(namespace string) SecretInterface
	ServiceAccounts(namespace string) ServiceAccountInterface
	Events(namespace string) EventInterface
}

// AppsV1Interface is the apps/v1 client.
type AppsV1Interface interface {
	Deployments(namespace string) DeploymentInterface
	ReplicaSets(namespace string) ReplicaSetInterface
	DaemonSets(namespace string) DaemonSetInterface
	ControllerRevisions(namespace string) ControllerRevisionInterface
}

// CoordinationV1Interface is the coordination.k8s.io/v1 client.
type CoordinationV1Interface interface {
	Leases(namespace string) LeaseInterface
}

// DiscoveryV1Interface is the discovery.k8s.io/v1 client.
type DiscoveryV1Interface interface {
	EndpointSlices(namespace string) EndpointSliceInterface
}

// Clientset is the Interface over REST.
type Clientset struct {
	core, apps, coordination, discovery *rest.RESTClient
	params                              runtime.ParameterCodec
}

var _ Interface = (*Clientset)(nil)

// NewForConfig returns a clientset for c. As client-go's: the groups share
// one HTTP client and, when c sets QPS without a RateLimiter, one token
// bucket.
func NewForConfig(c *rest.Config) (*Clientset, error) {
	cfg := *c
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if cfg.ContentType == "" {
		// Protobuf, as the kubelet and controller-manager talk: several
		// times cheaper than JSON to encode and decode on both ends (every
		// watch event the informers get), and smaller on the wire.
		cfg.ContentType = runtime.ContentTypeProtobuf
		cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	}
	sc := sharedCodecs()
	if sc.err != nil {
		return nil, sc.err
	}
	hc, err := rest.HTTPClientFor(&cfg)
	if err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		if cfg.Burst <= 0 {
			return nil, fmt.Errorf("kube client: burst must be > 0 when QPS is set without a RateLimiter")
		}
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	cs := &Clientset{params: sc.params}
	for _, g := range []struct {
		gv   schema.GroupVersion
		path string
		dst  **rest.RESTClient
	}{
		{corev1.SchemeGroupVersion, "/api", &cs.core},
		{appsv1.SchemeGroupVersion, "/apis", &cs.apps},
		{coordinationv1.SchemeGroupVersion, "/apis", &cs.coordination},
		{discoveryv1.SchemeGroupVersion, "/apis", &cs.discovery},
	} {
		gcfg := cfg
		gv := g.gv
		gcfg.GroupVersion = &gv
		gcfg.APIPath = g.path
		gcfg.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(sc.scheme, sc.codecs).WithoutConversion()
		rc, err := rest.RESTClientForConfigAndClient(&gcfg, hc)
		if err != nil {
			return nil, fmt.Errorf("kube client for %s: %w", gv, err)
		}
		*g.dst = rc
	}
	return cs, nil
}

// CoreV1 is the core/v1 client.
func (c *Clientset) CoreV1() CoreV1Interface { return coreV1{c} }

// AppsV1 is the apps/v1 client.
func (c *Clientset) AppsV1() AppsV1Interface { return appsV1{c} }

// CoordinationV1 is the coordination.k8s.io/v1 client.
func (c *Clientset) CoordinationV1() CoordinationV1Interface { return coordinationV1{c} }

// DiscoveryV1 is the discovery.k8s.io/v1 client.
func (c *Clientset) DiscoveryV1() DiscoveryV1Interface { return discoveryV1{c} }

// typed is gentype's client for one resource of rc in namespace ns; P and
// LP are the object's and the list's struct types.
func typed[T interface {
	*P
	runtime.Object
	metav1.Object
}, L interface {
	*LP
	runtime.Object
}, P, LP any](rc *rest.RESTClient, params runtime.ParameterCodec, resource, ns string) *gentype.ClientWithList[T, L] {
	return gentype.NewClientWithList[T, L](resource, rc, params, ns,
		func() T { return T(new(P)) }, func() L { return L(new(LP)) }, gentype.PrefersProtobuf[T]())
}

type coreV1 struct{ c *Clientset }

func (g coreV1) Pods(ns string) PodInterface {
	return pods{typed[*corev1.Pod, *corev1.PodList](g.c.core, g.c.params, "pods", ns)}
}
func (g coreV1) Namespaces() NamespaceInterface {
	return namespaces{typed[*corev1.Namespace, *corev1.NamespaceList](g.c.core, g.c.params, "namespaces", "")}
}
func (g coreV1) Nodes() NodeInterface {
	return typed[*corev1.Node, *corev1.NodeList](g.c.core, g.c.params, "nodes", "")
}
func (g coreV1) Services(ns string) ServiceInterface {
	return typed[*corev1.Service, *corev1.ServiceList](g.c.core, g.c.params, "services", ns)
}
func (g coreV1) Endpoints(ns string) EndpointsInterface {
	return typed[*corev1.Endpoints, *corev1.EndpointsList](g.c.core, g.c.params, "endpoints", ns)
}
func (g coreV1) ConfigMaps(ns string) ConfigMapInterface {
	return typed[*corev1.ConfigMap, *corev1.ConfigMapList](g.c.core, g.c.params, "configmaps", ns)
}
func (g coreV1) Secrets(ns string) SecretInterface {
	return typed[*corev1.Secret, *corev1.SecretList](g.c.core, g.c.params, "secrets", ns)
}
func (g coreV1) ServiceAccounts(ns string) ServiceAccountInterface {
	return typed[*corev1.ServiceAccount, *corev1.ServiceAccountList](g.c.core, g.c.params, "serviceaccounts", ns)
}
func (g coreV1) Events(ns string) EventInterface {
	return typed[*corev1.Event, *corev1.EventList](g.c.core, g.c.params, "events", ns)
}

type appsV1 struct{ c *Clientset }

func (g appsV1) Deployments(ns string) DeploymentInterface {
	return typed[*appsv1.Deployment, *appsv1.DeploymentList](g.c.apps, g.c.params, "deployments", ns)
}
func (g appsV1) ReplicaSets(ns string) ReplicaSetInterface {
	return typed[*appsv1.ReplicaSet, *appsv1.ReplicaSetList](g.c.apps, g.c.params, "replicasets", ns)
}
func (g appsV1) DaemonSets(ns string) DaemonSetInterface {
	return typed[*appsv1.DaemonSet, *appsv1.DaemonSetList](g.c.apps, g.c.params, "daemonsets", ns)
}
func (g appsV1) ControllerRevisions(ns string) ControllerRevisionInterface {
	return typed[*appsv1.ControllerRevision, *appsv1.ControllerRevisionList](g.c.apps, g.c.params, "controllerrevisions", ns)
}

type coordinationV1 struct{ c *Clientset }

func (g coordinationV1) Leases(ns string) LeaseInterface {
	return typed[*coordinationv1.Lease, *coordinationv1.LeaseList](g.c.coordination, g.c.params, "leases", ns)
}

type discoveryV1 struct{ c *Clientset }

func (g discoveryV1) EndpointSlices(ns string) EndpointSliceInterface {
	return typed[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList](g.c.discovery, g.c.params, "endpointslices", ns)
}

type pods struct {
	*gentype.ClientWithList[*corev1.Pod, *corev1.PodList]
}

func (p pods) Bind(ctx context.Context, b *corev1.Binding, opts metav1.CreateOptions) error {
	return p.GetClient().Post().Namespace(p.GetNamespace()).Resource("pods").Name(b.Name).
		VersionedParams(&opts, sharedCodecs().params).SubResource("binding").Body(b).Do(ctx).Error()
}

type namespaces struct {
	*gentype.ClientWithList[*corev1.Namespace, *corev1.NamespaceList]
}

func (n namespaces) Finalize(ctx context.Context, ns *corev1.Namespace, opts metav1.UpdateOptions) (*corev1.Namespace, error) {
	out := &corev1.Namespace{}
	err := n.GetClient().Put().Resource("namespaces").Name(ns.Name).
		VersionedParams(&opts, sharedCodecs().params).SubResource("finalize").Body(ns).Do(ctx).Into(out)
	return out, err
}
