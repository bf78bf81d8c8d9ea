package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
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

// Strip is an informer transform that keeps only what DNS reads of a Service,
// EndpointSlice or Node, so the informer caches stay small.
func Strip(obj any) (any, error) {
	meta := func(m metav1.ObjectMeta) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion, Labels: m.Labels}
	}
	switch o := obj.(type) {
	case *corev1.Service:
		return &corev1.Service{ObjectMeta: meta(o.ObjectMeta), Spec: corev1.ServiceSpec{
			Type: o.Spec.Type, ClusterIP: o.Spec.ClusterIP, ClusterIPs: o.Spec.ClusterIPs,
			ExternalName: o.Spec.ExternalName, Ports: o.Spec.Ports,
		}}, nil
	case *discoveryv1.EndpointSlice:
		out := &discoveryv1.EndpointSlice{ObjectMeta: meta(o.ObjectMeta), AddressType: o.AddressType, Ports: o.Ports,
			Endpoints: make([]discoveryv1.Endpoint, len(o.Endpoints))}
		out.Labels = map[string]string{discoveryv1.LabelServiceName: o.Labels[discoveryv1.LabelServiceName]}
		for i, e := range o.Endpoints {
			out.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}, Hostname: e.Hostname}
		}
		return out, nil
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: meta(metav1.ObjectMeta{Name: o.Name, ResourceVersion: o.ResourceVersion}),
			Status: corev1.NodeStatus{Addresses: o.Status.Addresses}}, nil
	}
	return obj, nil
}

// Feed keeps an Index in step with the API through informers on Services,
// EndpointSlices and Nodes.
type Feed struct {
	client kubernetes.Interface
	index  *Index
	log    *slog.Logger
}

// NewFeed returns a feed of client's objects into index.
func NewFeed(client kubernetes.Interface, index *Index, log *slog.Logger) *Feed {
	return &Feed{client: client, index: index, log: log}
}

// Run watches until ctx ends. The index is marked synced once every informer
// has listed.
func (f *Feed) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(f.client, 0, informers.WithTransform(Strip))
	x := f.index
	svc := factory.Core().V1().Services().Informer()
	if _, err := svc.AddEventHandler(handlers(func(o *corev1.Service) { x.SetService(ServiceOf(o)) },
		func(o *corev1.Service) { x.DeleteService(o.Namespace, o.Name) })); err != nil {
		return fmt.Errorf("dns: service handler: %w", err)
	}
	es := factory.Discovery().V1().EndpointSlices().Informer()
	if _, err := es.AddEventHandler(handlers(func(o *discoveryv1.EndpointSlice) { x.SetSlice(SliceOf(o)) },
		func(o *discoveryv1.EndpointSlice) { x.DeleteSlice(o.Namespace, o.Name) })); err != nil {
		return fmt.Errorf("dns: endpointslice handler: %w", err)
	}
	nodes := factory.Core().V1().Nodes().Informer()
	if _, err := nodes.AddEventHandler(handlers(func(o *corev1.Node) { x.SetNode(o.Name, NodeAddrs(o)) },
		func(o *corev1.Node) { x.SetNode(o.Name, nil) })); err != nil {
		return fmt.Errorf("dns: node handler: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	start := time.Now()
	if !cache.WaitForCacheSync(ctx.Done(), svc.HasSynced, es.HasSynced, nodes.HasSynced) {
		return ctx.Err()
	}
	x.SetSynced()
	f.log.Info("dns: cluster records synced", "services", x.Len(), "took", time.Since(start))
	<-ctx.Done()
	return nil
}

// handlers adapts typed set/delete functions to informer callbacks.
func handlers[T any](set, del func(T)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(T); ok {
				set(o)
			}
		},
		UpdateFunc: func(_, obj any) {
			if o, ok := obj.(T); ok {
				set(o)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if o, ok := obj.(T); ok {
				del(o)
			}
		},
	}
}
