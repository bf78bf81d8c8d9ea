package kube

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	appslisters "k8s.io/client-go/listers/apps/v1"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// SharedInformerFactory hands out one shared informer per resource type,
// as client-go's factory does: f.Core().V1().Pods().Informer() and
// .Lister(); Start runs those asked for so far.
type SharedInformerFactory struct {
	client    Interface
	resync    time.Duration
	tweak     func(*metav1.ListOptions)
	transform cache.TransformFunc

	mu           sync.Mutex
	informers    map[reflect.Type]cache.SharedIndexInformer
	started      map[reflect.Type]bool
	shuttingDown bool
	wg           sync.WaitGroup
}

// FactoryOption configures a SharedInformerFactory.
type FactoryOption func(*SharedInformerFactory)

// WithTweakListOptions changes the options of every list and watch (a
// label or field selector, say).
func WithTweakListOptions(tweak func(*metav1.ListOptions)) FactoryOption {
	return func(f *SharedInformerFactory) { f.tweak = tweak }
}

// WithTransform sets every informer's transform (applied before objects
// are stored).
func WithTransform(t cache.TransformFunc) FactoryOption {
	return func(f *SharedInformerFactory) { f.transform = t }
}

// NewSharedInformerFactory returns a factory over client; resync is every
// informer's resync period (0: none).
func NewSharedInformerFactory(client Interface, resync time.Duration, opts ...FactoryOption) *SharedInformerFactory {
	f := &SharedInformerFactory{
		client:    client,
		resync:    resync,
		informers: map[reflect.Type]cache.SharedIndexInformer{},
		started:   map[reflect.Type]bool{},
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Start runs every informer asked for and not yet started until stop closes.
func (f *SharedInformerFactory) Start(stop <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shuttingDown {
		return
	}
	for t, inf := range f.informers {
		if f.started[t] {
			continue
		}
		f.started[t] = true
		f.wg.Go(func() { inf.Run(stop) })
	}
}

// WaitForCacheSync waits until every started informer has synced or stop
// closes, and reports each one's state.
func (f *SharedInformerFactory) WaitForCacheSync(stop <-chan struct{}) map[reflect.Type]bool {
	f.mu.Lock()
	started := map[reflect.Type]cache.SharedIndexInformer{}
	for t, inf := range f.informers {
		if f.started[t] {
			started[t] = inf
		}
	}
	f.mu.Unlock()
	res := make(map[reflect.Type]bool, len(started))
	for t, inf := range started {
		res[t] = cache.WaitForCacheSync(stop, inf.HasSynced)
	}
	return res
}

// Shutdown waits for the started informers to stop (their stop channel must
// be closed) and makes Start a no-op.
func (f *SharedInformerFactory) Shutdown() {
	f.mu.Lock()
	f.shuttingDown = true
	f.mu.Unlock()
	f.wg.Wait()
}

// listWatcher is the part of a typed client an informer needs.
type listWatcher[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// Informer is a shared informer of one resource and its typed lister.
type Informer[Lister any] struct {
	inf    cache.SharedIndexInformer
	lister func(cache.Indexer) Lister
}

// Informer is the shared informer.
func (i Informer[Lister]) Informer() cache.SharedIndexInformer { return i.inf }

// Lister lists from the informer's cache.
func (i Informer[Lister]) Lister() Lister { return i.lister(i.inf.GetIndexer()) }

// informerFor returns the factory's informer of obj's type, made with a
// list-watch over c on first use.
func informerFor[L runtime.Object, Lister any](f *SharedInformerFactory, obj runtime.Object, c listWatcher[L], lister func(cache.Indexer) Lister) Informer[Lister] {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := reflect.TypeOf(obj)
	inf, ok := f.informers[t]
	if !ok {
		tweak := f.tweak
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				if tweak != nil {
					tweak(&o)
				}
				return c.List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				if tweak != nil {
					tweak(&o)
				}
				return c.Watch(ctx, o)
			},
		}
		inf = cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, f.client), obj,
			cache.SharedIndexInformerOptions{
				ResyncPeriod: f.resync,
				Indexers:     cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			})
		if f.transform != nil {
			// Only fails once the informer runs; it has not started.
			_ = inf.SetTransform(f.transform)
		}
		f.informers[t] = inf
	}
	return Informer[Lister]{inf: inf, lister: lister}
}

// ForResource is the shared informer of a resource the factory serves,
// named by its group, version and resource (for controllers that work
// across kinds, as client-go's ForResource but without a generic lister).
func (f *SharedInformerFactory) ForResource(gvr schema.GroupVersionResource) (cache.SharedIndexInformer, error) {
	core, apps := f.Core().V1(), f.Apps().V1()
	byGVR := map[schema.GroupVersionResource]func() cache.SharedIndexInformer{
		corev1.SchemeGroupVersion.WithResource("pods"):                func() cache.SharedIndexInformer { return core.Pods().Informer() },
		corev1.SchemeGroupVersion.WithResource("nodes"):               func() cache.SharedIndexInformer { return core.Nodes().Informer() },
		corev1.SchemeGroupVersion.WithResource("namespaces"):          func() cache.SharedIndexInformer { return core.Namespaces().Informer() },
		corev1.SchemeGroupVersion.WithResource("services"):            func() cache.SharedIndexInformer { return core.Services().Informer() },
		corev1.SchemeGroupVersion.WithResource("endpoints"):           func() cache.SharedIndexInformer { return core.Endpoints().Informer() },
		corev1.SchemeGroupVersion.WithResource("configmaps"):          func() cache.SharedIndexInformer { return core.ConfigMaps().Informer() },
		corev1.SchemeGroupVersion.WithResource("secrets"):             func() cache.SharedIndexInformer { return core.Secrets().Informer() },
		corev1.SchemeGroupVersion.WithResource("serviceaccounts"):     func() cache.SharedIndexInformer { return core.ServiceAccounts().Informer() },
		appsv1.SchemeGroupVersion.WithResource("deployments"):         func() cache.SharedIndexInformer { return apps.Deployments().Informer() },
		appsv1.SchemeGroupVersion.WithResource("replicasets"):         func() cache.SharedIndexInformer { return apps.ReplicaSets().Informer() },
		appsv1.SchemeGroupVersion.WithResource("daemonsets"):          func() cache.SharedIndexInformer { return apps.DaemonSets().Informer() },
		appsv1.SchemeGroupVersion.WithResource("controllerrevisions"): func() cache.SharedIndexInformer { return apps.ControllerRevisions().Informer() },
		coordinationv1.SchemeGroupVersion.WithResource("leases"):      func() cache.SharedIndexInformer { return f.Coordination().V1().Leases().Informer() },
		discoveryv1.SchemeGroupVersion.WithResource("endpointslices"): func() cache.SharedIndexInformer { return f.Discovery().V1().EndpointSlices().Informer() },
	}
	mk, ok := byGVR[gvr]
	if !ok {
		return nil, fmt.Errorf("no informer for %s", gvr)
	}
	return mk(), nil
}

// The informers, named as client-go names them.
type (
	PodInformer                = Informer[corelisters.PodLister]
	NodeInformer               = Informer[corelisters.NodeLister]
	NamespaceInformer          = Informer[corelisters.NamespaceLister]
	ServiceInformer            = Informer[corelisters.ServiceLister]
	EndpointsInformer          = Informer[corelisters.EndpointsLister]
	ConfigMapInformer          = Informer[corelisters.ConfigMapLister]
	SecretInformer             = Informer[corelisters.SecretLister]
	ServiceAccountInformer     = Informer[corelisters.ServiceAccountLister]
	DeploymentInformer         = Informer[appslisters.DeploymentLister]
	ReplicaSetInformer         = Informer[appslisters.ReplicaSetLister]
	DaemonSetInformer          = Informer[appslisters.DaemonSetLister]
	ControllerRevisionInformer = Informer[appslisters.ControllerRevisionLister]
	LeaseInformer              = Informer[coordinationlisters.LeaseLister]
	EndpointSliceInformer      = Informer[discoverylisters.EndpointSliceLister]
)

// Core is the core group's informers: Core().V1().
func (f *SharedInformerFactory) Core() CoreInformers { return CoreInformers{f} }

// Apps is the apps group's informers: Apps().V1().
func (f *SharedInformerFactory) Apps() AppsInformers { return AppsInformers{f} }

// Coordination is the coordination.k8s.io group's informers.
func (f *SharedInformerFactory) Coordination() CoordinationInformers { return CoordinationInformers{f} }

// Discovery is the discovery.k8s.io group's informers.
func (f *SharedInformerFactory) Discovery() DiscoveryInformers { return DiscoveryInformers{f} }

// CoreInformers selects the core group's version.
type CoreInformers struct{ f *SharedInformerFactory }

// V1 is core/v1.
func (g CoreInformers) V1() CoreV1Informers { return CoreV1Informers(g) }

// CoreV1Informers are the core/v1 informers.
type CoreV1Informers struct{ f *SharedInformerFactory }

func (g CoreV1Informers) Pods() PodInformer {
	return informerFor(g.f, &corev1.Pod{}, g.f.client.CoreV1().Pods(""), corelisters.NewPodLister)
}
func (g CoreV1Informers) Nodes() NodeInformer {
	return informerFor(g.f, &corev1.Node{}, g.f.client.CoreV1().Nodes(), corelisters.NewNodeLister)
}
func (g CoreV1Informers) Namespaces() NamespaceInformer {
	return informerFor(g.f, &corev1.Namespace{}, g.f.client.CoreV1().Namespaces(), corelisters.NewNamespaceLister)
}
func (g CoreV1Informers) Services() ServiceInformer {
	return informerFor(g.f, &corev1.Service{}, g.f.client.CoreV1().Services(""), corelisters.NewServiceLister)
}
func (g CoreV1Informers) Endpoints() EndpointsInformer {
	return informerFor(g.f, &corev1.Endpoints{}, g.f.client.CoreV1().Endpoints(""), corelisters.NewEndpointsLister)
}
func (g CoreV1Informers) ConfigMaps() ConfigMapInformer {
	return informerFor(g.f, &corev1.ConfigMap{}, g.f.client.CoreV1().ConfigMaps(""), corelisters.NewConfigMapLister)
}
func (g CoreV1Informers) Secrets() SecretInformer {
	return informerFor(g.f, &corev1.Secret{}, g.f.client.CoreV1().Secrets(""), corelisters.NewSecretLister)
}
func (g CoreV1Informers) ServiceAccounts() ServiceAccountInformer {
	return informerFor(g.f, &corev1.ServiceAccount{}, g.f.client.CoreV1().ServiceAccounts(""), corelisters.NewServiceAccountLister)
}

// AppsInformers selects the apps group's version.
type AppsInformers struct{ f *SharedInformerFactory }

// V1 is apps/v1.
func (g AppsInformers) V1() AppsV1Informers { return AppsV1Informers(g) }

// AppsV1Informers are the apps/v1 informers.
type AppsV1Informers struct{ f *SharedInformerFactory }

func (g AppsV1Informers) Deployments() DeploymentInformer {
	return informerFor(g.f, &appsv1.Deployment{}, g.f.client.AppsV1().Deployments(""), appslisters.NewDeploymentLister)
}
func (g AppsV1Informers) ReplicaSets() ReplicaSetInformer {
	return informerFor(g.f, &appsv1.ReplicaSet{}, g.f.client.AppsV1().ReplicaSets(""), appslisters.NewReplicaSetLister)
}
func (g AppsV1Informers) DaemonSets() DaemonSetInformer {
	return informerFor(g.f, &appsv1.DaemonSet{}, g.f.client.AppsV1().DaemonSets(""), appslisters.NewDaemonSetLister)
}
func (g AppsV1Informers) ControllerRevisions() ControllerRevisionInformer {
	return informerFor(g.f, &appsv1.ControllerRevision{}, g.f.client.AppsV1().ControllerRevisions(""), appslisters.NewControllerRevisionLister)
}

// CoordinationInformers selects the coordination.k8s.io group's version.
type CoordinationInformers struct{ f *SharedInformerFactory }

// V1 is coordination.k8s.io/v1.
func (g CoordinationInformers) V1() CoordinationV1Informers { return CoordinationV1Informers(g) }

// CoordinationV1Informers are the coordination.k8s.io/v1 informers.
type CoordinationV1Informers struct{ f *SharedInformerFactory }

func (g CoordinationV1Informers) Leases() LeaseInformer {
	return informerFor(g.f, &coordinationv1.Lease{}, g.f.client.CoordinationV1().Leases(""), coordinationlisters.NewLeaseLister)
}

// DiscoveryInformers selects the discovery.k8s.io group's version.
type DiscoveryInformers struct{ f *SharedInformerFactory }

// V1 is discovery.k8s.io/v1.
func (g DiscoveryInformers) V1() DiscoveryV1Informers { return DiscoveryV1Informers(g) }

// DiscoveryV1Informers are the discovery.k8s.io/v1 informers.
type DiscoveryV1Informers struct{ f *SharedInformerFactory }

func (g DiscoveryV1Informers) EndpointSlices() EndpointSliceInformer {
	return informerFor(g.f, &discoveryv1.EndpointSlice{}, g.f.client.DiscoveryV1().EndpointSlices(""), discoverylisters.NewEndpointSliceLister)
}
