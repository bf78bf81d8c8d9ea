package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/orch-dev/orch/store"
)

// admitCreate runs the admission steps orch needs on a new object:
// namespace lifecycle, Service IP and NodePort allocation, pod tolerations.
func (s *Server) admitCreate(ctx context.Context, k *kind, obj runtime.Object, m metav1.Object, dryRun bool) error {
	if k.namespaced {
		terminating, err := s.namespaceTerminating(ctx, m.GetNamespace())
		if err != nil {
			return err
		}
		if terminating {
			return apierrors.NewForbidden(k.gr, m.GetName(), fmt.Errorf("unable to create new content in namespace %s because it is being terminated", m.GetNamespace()))
		}
	}
	switch o := obj.(type) {
	case *corev1.Service:
		if !dryRun {
			return s.alloc.allocate(ctx, o, nil)
		}
	case *corev1.Pod:
		addDefaultTolerations(&o.Spec, s.cfg.NotReadyTolerationSeconds, s.cfg.UnreachableTolerationSeconds)
	}
	return nil
}

// nsLifecycle is what creates need to know of a namespace at a revision.
type nsLifecycle struct {
	rev         int64
	terminating bool
}

// namespaceTerminating reports whether namespace ns is being deleted (a
// NotFound error when it does not exist). The stored namespace is read on
// every call; it is decoded only when its revision changed since the last.
func (s *Server) namespaceTerminating(ctx context.Context, ns string) (bool, error) {
	nsKind := s.reg.kindFor(schema.GroupResource{Resource: "namespaces"})
	kv, err := s.st.Get(ctx, nsKind.key("", ns))
	if err != nil {
		s.nsLife.Delete(ns)
		return false, storeError(nsKind, ns, err)
	}
	if c, ok := s.nsLife.Load(ns); ok && c.(nsLifecycle).rev == kv.ModRevision {
		return c.(nsLifecycle).terminating, nil
	}
	obj, err := s.objs.decode(ctx, nsKind, kv)
	if err != nil {
		return false, apierrors.NewInternalError(err)
	}
	n := obj.(*corev1.Namespace)
	terminating := n.Status.Phase == corev1.NamespaceTerminating || n.DeletionTimestamp != nil
	s.nsLife.Store(ns, nsLifecycle{rev: kv.ModRevision, terminating: terminating})
	return terminating, nil
}

// admitUpdate handles allocation changes of an updated Service.
func (s *Server) admitUpdate(ctx context.Context, k *kind, obj, old runtime.Object) error {
	if svc, ok := obj.(*corev1.Service); ok {
		return s.alloc.allocate(ctx, svc, old.(*corev1.Service))
	}
	return nil
}

// releaseOnFailure frees what admitCreate reserved for an object that was not stored.
func (s *Server) releaseOnFailure(ctx context.Context, k *kind, obj runtime.Object) {
	if svc, ok := obj.(*corev1.Service); ok {
		s.alloc.release(ctx, svc)
	}
}

// releaseOnDelete frees a deleted object's reservations.
func (s *Server) releaseOnDelete(ctx context.Context, k *kind, obj runtime.Object) {
	if svc, ok := obj.(*corev1.Service); ok {
		s.alloc.release(ctx, svc)
	}
}

// addDefaultTolerations gives pods the not-ready and unreachable NoExecute
// tolerations (300 s by default), as upstream's DefaultTolerationSeconds
// admission.
func addDefaultTolerations(spec *corev1.PodSpec, notReady, unreachable int64) {
	has := map[string]bool{}
	for _, t := range spec.Tolerations {
		if t.Effect == corev1.TaintEffectNoExecute || t.Effect == "" {
			has[t.Key] = true
		}
		if t.Key == "" && t.Operator == corev1.TolerationOpExists {
			return
		}
	}
	for _, d := range []struct {
		key  string
		secs int64
	}{{corev1.TaintNodeNotReady, notReady}, {corev1.TaintNodeUnreachable, unreachable}} {
		key, secs := d.key, d.secs
		if secs <= 0 {
			secs = 300
		}
		if !has[key] {
			spec.Tolerations = append(spec.Tolerations, corev1.Toleration{
				Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(secs),
			})
		}
	}
}

// allocator hands out Service cluster IPs and NodePorts. Each allocation is
// a key in the store created with Create, so two Services never get the
// same one, also across restarts.
type allocator struct {
	st         store.Store
	cidr       netip.Prefix
	portMin    int
	portMax    int
	mu         sync.Mutex
	nextIP     netip.Addr
	nextPort   int
	ipPrefix   string
	portPrefix string
}

func newAllocator(st store.Store, cidr netip.Prefix, portMin, portMax int) *allocator {
	a := &allocator{st: st, cidr: cidr.Masked(), portMin: portMin, portMax: portMax,
		ipPrefix: "/registry/core/serviceips/", portPrefix: "/registry/core/servicenodeports/"}
	if cidr.IsValid() {
		a.nextIP = a.firstIP().Next()
	}
	a.nextPort = portMin
	return a
}

// firstIP is the first usable address of the service CIDR (the kubernetes
// Service's).
func (a *allocator) firstIP() netip.Addr { return a.cidr.Addr().Next() }

// FirstServiceIP is the cluster IP of the kubernetes Service.
func (s *Server) FirstServiceIP() netip.Addr { return s.alloc.firstIP() }

func (a *allocator) reserve(ctx context.Context, key, owner string) (bool, error) {
	_, err := a.st.Create(ctx, key, []byte(owner))
	if errors.Is(err, store.ErrExists) {
		kv, gerr := a.st.Get(ctx, key)
		if gerr == nil && string(kv.Value) == owner {
			return true, nil
		}
		return false, nil
	}
	return err == nil, err
}

func svcOwner(s *corev1.Service) string { return s.Namespace + "/" + s.Name }

// allocate assigns the cluster IP and node ports a Service needs.
func (a *allocator) allocate(ctx context.Context, svc, old *corev1.Service) error {
	owner := svcOwner(svc)
	path := field.NewPath("spec")
	wantsIP := svc.Spec.Type != corev1.ServiceTypeExternalName && svc.Spec.ClusterIP != corev1.ClusterIPNone
	if old != nil && svc.Spec.ClusterIP == "" && old.Spec.ClusterIP != "" && svc.Spec.Type != corev1.ServiceTypeExternalName {
		svc.Spec.ClusterIP = old.Spec.ClusterIP
		svc.Spec.ClusterIPs = old.Spec.ClusterIPs
	}
	if wantsIP && a.cidr.IsValid() {
		if svc.Spec.ClusterIP == "" {
			ip, err := a.nextFreeIP(ctx, owner)
			if err != nil {
				return err
			}
			svc.Spec.ClusterIP = ip.String()
		} else if old == nil || old.Spec.ClusterIP != svc.Spec.ClusterIP {
			ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
			if err != nil || !a.cidr.Contains(ip) {
				return apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name, field.ErrorList{
					field.Invalid(path.Child("clusterIP"), svc.Spec.ClusterIP, fmt.Sprintf("provided IP is not in the valid range. The range of valid IPs is %s", a.cidr))})
			}
			ok, err := a.reserve(ctx, a.ipPrefix+ip.String(), owner)
			if err != nil {
				return apierrors.NewInternalError(err)
			}
			if !ok {
				return apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name, field.ErrorList{
					field.Invalid(path.Child("clusterIPs").Index(0), svc.Spec.ClusterIP, "failed to allocate IP "+svc.Spec.ClusterIP+": provided IP is already allocated")})
			}
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	if svc.Spec.Type == corev1.ServiceTypeClusterIP || svc.Spec.Type == corev1.ServiceTypeExternalName {
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
		return nil
	}
	oldPorts := map[string]int32{}
	if old != nil {
		for _, p := range old.Spec.Ports {
			oldPorts[string(p.Protocol)+"/"+strconv.Itoa(int(p.Port))] = p.NodePort
		}
	}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.NodePort == 0 {
			if prev := oldPorts[string(p.Protocol)+"/"+strconv.Itoa(int(p.Port))]; prev != 0 {
				p.NodePort = prev
				continue
			}
			port, err := a.nextFreePort(ctx, owner, p.Protocol)
			if err != nil {
				return err
			}
			p.NodePort = int32(port)
			continue
		}
		if old != nil && containsNodePort(old, p.NodePort, p.Protocol) {
			continue
		}
		if int(p.NodePort) < a.portMin || int(p.NodePort) > a.portMax {
			return apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name, field.ErrorList{
				field.Invalid(path.Child("ports").Index(i).Child("nodePort"), p.NodePort,
					fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", a.portMin, a.portMax))})
		}
		ok, err := a.reserve(ctx, a.portKey(int(p.NodePort), p.Protocol), owner)
		if err != nil {
			return apierrors.NewInternalError(err)
		}
		if !ok {
			return apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name, field.ErrorList{
				field.Invalid(path.Child("ports").Index(i).Child("nodePort"), p.NodePort, "provided port is already allocated")})
		}
	}
	return nil
}

func containsNodePort(s *corev1.Service, port int32, proto corev1.Protocol) bool {
	for _, p := range s.Spec.Ports {
		if p.NodePort == port && p.Protocol == proto {
			return true
		}
	}
	return false
}

func (a *allocator) portKey(port int, proto corev1.Protocol) string {
	return a.portPrefix + string(proto) + "/" + strconv.Itoa(port)
}

func (a *allocator) nextFreeIP(ctx context.Context, owner string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	size := 1 << (a.cidr.Addr().BitLen() - a.cidr.Bits())
	if size > 1<<20 {
		size = 1 << 20
	}
	ip := a.nextIP
	for i := 0; i < size; i++ {
		if !a.cidr.Contains(ip) || isBroadcast(a.cidr, ip) {
			ip = a.firstIP().Next()
		}
		ok, err := a.reserve(ctx, a.ipPrefix+ip.String(), owner)
		if err != nil {
			return netip.Addr{}, apierrors.NewInternalError(err)
		}
		if ok {
			a.nextIP = ip.Next()
			return ip, nil
		}
		ip = ip.Next()
	}
	return netip.Addr{}, apierrors.NewInternalError(fmt.Errorf("range is full: no cluster IPs left in %s", a.cidr))
}

func isBroadcast(p netip.Prefix, ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	return !p.Contains(ip.Next())
}

func (a *allocator) nextFreePort(ctx context.Context, owner string, proto corev1.Protocol) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.portMax - a.portMin + 1
	port := a.nextPort
	for i := 0; i < n; i++ {
		if port > a.portMax || port < a.portMin {
			port = a.portMin
		}
		ok, err := a.reserve(ctx, a.portKey(port, proto), owner)
		if err != nil {
			return 0, apierrors.NewInternalError(err)
		}
		if ok {
			a.nextPort = port + 1
			return port, nil
		}
		port++
	}
	return 0, apierrors.NewInternalError(fmt.Errorf("range is full: no node ports left in %d-%d", a.portMin, a.portMax))
}

// release frees a Service's cluster IP and node ports.
func (a *allocator) release(ctx context.Context, svc *corev1.Service) {
	owner := svcOwner(svc)
	del := func(key string) {
		kv, err := a.st.Get(ctx, key)
		if err == nil && string(kv.Value) == owner {
			_, _ = a.st.Delete(ctx, key, kv.ModRevision)
		}
	}
	if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		del(a.ipPrefix + svc.Spec.ClusterIP)
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			del(a.portKey(int(p.NodePort), p.Protocol))
		}
	}
}
