package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube"
)

// ServiceOf converts a Service into its DNS view.
func ServiceOf(svc *corev1.Service) Service {
	s := Service{Namespace: svc.Namespace, Name: svc.Name}
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		s.ExternalName = strings.TrimSuffix(svc.Spec.ExternalName, ".")
		return s
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		s.Headless = true
	default:
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.ClusterIPs = append(s.ClusterIPs, a.Unmap())
			}
		}
	}
	for _, p := range svc.Spec.Ports {
		s.Ports = append(s.Ports, Port{Name: portLabel(p.Name), Proto: protoLabel(p.Protocol), Port: uint16(p.Port)})
	}
	return s
}

// SliceOf converts an EndpointSlice into its DNS view: ready endpoints only
// (a nil Ready condition counts as ready, as the API documents).
func SliceOf(es *discoveryv1.EndpointSlice) Slice {
	sl := Slice{Namespace: es.Namespace, Name: es.Name, Service: es.Labels[discoveryv1.LabelServiceName]}
	for _, p := range es.Ports {
		if p.Port == nil {
			continue
		}
		name := ""
		if p.Name != nil {
			name = portLabel(*p.Name)
		}
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		sl.Ports = append(sl.Ports, Port{Name: name, Proto: protoLabel(proto), Port: uint16(*p.Port)})
	}
	for _, e := range es.Endpoints {
		if e.Conditions.Ready != nil && !*e.Conditions.Ready {
			continue
		}
		host := ""
		if e.Hostname != nil {
			host = portLabel(*e.Hostname)
		}
		for _, ip := range e.Addresses {
			if a, err := netip.ParseAddr(ip); err == nil {
				sl.Endpoints = append(sl.Endpoints, Endpoint{Addr: a.Unmap(), Hostname: host})
			}
		}
	}
	return sl
}

// NodeAddrs returns a Node's InternalIP addresses.
func NodeAddrs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

func protoLabel(p corev1.Protocol) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(string(p))
}

// Feed keeps an Index in step with the API: one reflector (list, then
// watch, relist on expiry) each for Services, EndpointSlices and Nodes,
// writing straight into the index. No informer cache holds the objects: the
// index, with only the fields DNS reads, is the only copy.
type Feed struct {
	client kube.Interface
	index  *Index
	log    *slog.Logger
}

// NewFeed returns a feed of client's objects into index.
func NewFeed(client kube.Interface, index *Index, log *slog.Logger) *Feed {
	return &Feed{client: client, index: index, log: log}
}

// Run watches until ctx ends. The index is marked synced once every
// reflector has listed.
func (f *Feed) Run(ctx context.Context) error {
	x := f.index
	c := f.client
	svc := &store[*corev1.Service]{
		key: func(o *corev1.Service) string { return o.Namespace + "/" + o.Name },
		set: func(o *corev1.Service) { x.SetService(ServiceOf(o)) },
		del: func(k string) { ns, name, _ := strings.Cut(k, "/"); x.DeleteService(ns, name) },
	}
	es := &store[*discoveryv1.EndpointSlice]{
		key: func(o *discoveryv1.EndpointSlice) string { return o.Namespace + "/" + o.Name },
		set: func(o *discoveryv1.EndpointSlice) { x.SetSlice(SliceOf(o)) },
		del: func(k string) { ns, name, _ := strings.Cut(k, "/"); x.DeleteSlice(ns, name) },
	}
	nodes := &store[*corev1.Node]{
		key: func(o *corev1.Node) string { return o.Name },
		set: func(o *corev1.Node) { x.SetNode(o.Name, NodeAddrs(o)) },
		del: func(k string) { x.SetNode(k, nil) },
	}
	reflectors := []*cache.Reflector{
		reflector(c, "services", svc, &corev1.Service{}, c.CoreV1().Services("").List, c.CoreV1().Services("").Watch),
		reflector(c, "endpointslices", es, &discoveryv1.EndpointSlice{}, c.DiscoveryV1().EndpointSlices("").List, c.DiscoveryV1().EndpointSlices("").Watch),
		reflector(c, "nodes", nodes, &corev1.Node{}, c.CoreV1().Nodes().List, c.CoreV1().Nodes().Watch),
	}
	var wg sync.WaitGroup
	for _, r := range reflectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.RunWithContext(ctx)
		}()
	}
	defer wg.Wait()
	start := time.Now()
	for !svc.synced() || !es.synced() || !nodes.synced() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	x.SetSynced()
	f.log.Info("dns: cluster records synced", "services", x.Len(), "took", time.Since(start))
	<-ctx.Done()
	return nil
}

func reflector[L runtime.Object](client any, name string, st cache.ReflectorStore, expected runtime.Object,
	list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.Reflector {
	lw := &cache.ListWatch{
		ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return list(ctx, o) },
		WatchFuncWithContext: watchFn,
	}
	// The client says whether it supports streaming lists (fakes do not).
	return cache.NewReflectorWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, client), expected, st, cache.ReflectorOptions{Name: "dns-" + name})
}

// store is a cache.ReflectorStore that applies objects to the index and
// remembers only their keys (to find deletions when the reflector relists).
type store[T any] struct {
	key func(T) string
	set func(T)
	del func(key string)

	mu     sync.Mutex
	keys   map[string]struct{}
	listed bool
}

func (s *store[T]) synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listed
}

func (s *store[T]) Add(obj any) error {
	o, ok := obj.(T)
	if !ok {
		return fmt.Errorf("dns: unexpected %T in watch", obj)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[string]struct{}{}
	}
	s.keys[s.key(o)] = struct{}{}
	s.set(o)
	return nil
}

func (s *store[T]) Update(obj any) error { return s.Add(obj) }

func (s *store[T]) Delete(obj any) error {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(T)
	if !ok {
		return fmt.Errorf("dns: unexpected %T in watch", obj)
	}
	k := s.key(o)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, k)
	s.del(k)
	return nil
}

func (s *store[T]) Replace(list []any, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]struct{}, len(list))
	for _, obj := range list {
		o, ok := obj.(T)
		if !ok {
			return fmt.Errorf("dns: unexpected %T in list", obj)
		}
		next[s.key(o)] = struct{}{}
		s.set(o)
	}
	for k := range s.keys {
		if _, ok := next[k]; !ok {
			s.del(k)
		}
	}
	s.keys, s.listed = next, true
	return nil
}

func (s *store[T]) Resync() error { return nil }
