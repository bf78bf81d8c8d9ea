package apiserver

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Bootstrap creates what every cluster has: the built-in namespaces and the
// kubernetes Service in default pointing at the API server at addr:port.
// It is idempotent and keeps existing objects (their uid and
// resourceVersion survive restarts).
func (s *Server) Bootstrap(ctx context.Context, addr netip.Addr, port int) error {
	sys := writeOpts{fieldManager: "orch"}
	for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := s.ensure(ctx, "namespaces", "", ns, sys); err != nil {
			return err
		}
	}
	if !s.cfg.ServiceCIDR.IsValid() {
		return nil
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{"component": "apiserver", "provider": "kubernetes"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: s.alloc.firstIP().String(),
			Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(int32(port))}},
		},
	}
	if err := s.ensure(ctx, "services", metav1.NamespaceDefault, svc, sys); err != nil {
		return err
	}
	if !addr.IsValid() {
		return nil
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{"endpointslice.kubernetes.io/skip-mirror": "true"}},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: addr.String()}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: int32(port), Protocol: corev1.ProtocolTCP}},
		}},
	}
	if err := s.ensureSpec(ctx, "endpoints", "", metav1.NamespaceDefault, ep, sys); err != nil {
		return err
	}
	addrType := discoveryv1.AddressTypeIPv4
	if addr.Is6() {
		addrType = discoveryv1.AddressTypeIPv6
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "orch-apiserver"}},
		AddressType: addrType,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("https"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	return s.ensureSpec(ctx, "endpointslices", "discovery.k8s.io", metav1.NamespaceDefault, slice, sys)
}

// ensure creates obj unless it exists.
func (s *Server) ensure(ctx context.Context, resource, ns string, obj runtime.Object, o writeOpts) error {
	group := ""
	k := s.reg.kindFor(schema.GroupResource{Group: group, Resource: resource})
	_, err := s.create(ctx, k, ns, obj, o)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bootstrap %s %s: %w", resource, ns, err)
	}
	return nil
}

// ensureSpec creates obj or, when its content differs, replaces the
// content it names (Endpoints subsets, EndpointSlice endpoints).
func (s *Server) ensureSpec(ctx context.Context, resource, group, ns string, obj runtime.Object, o writeOpts) error {
	k := s.reg.kindFor(schema.GroupResource{Group: group, Resource: resource})
	_, err := s.create(ctx, k, ns, obj.DeepCopyObject(), o)
	if err == nil || !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", resource, err)
		}
		return nil
	}
	_, err = s.objs.guaranteedUpdate(ctx, k, ns, "kubernetes", func(cur runtime.Object) (runtime.Object, error) {
		next := cur.DeepCopyObject()
		switch n := next.(type) {
		case *corev1.Endpoints:
			n.Subsets = obj.(*corev1.Endpoints).Subsets
		case *discoveryv1.EndpointSlice:
			n.Endpoints = obj.(*discoveryv1.EndpointSlice).Endpoints
			n.Ports = obj.(*discoveryv1.EndpointSlice).Ports
			n.AddressType = obj.(*discoveryv1.EndpointSlice).AddressType
		}
		if apiequality.Semantic.DeepEqual(next, cur) {
			return nil, nil
		}
		return next, nil
	})
	if err != nil {
		return fmt.Errorf("bootstrap %s: %w", resource, err)
	}
	return nil
}
