// Package endpoints publishes, for every Service with a selector, the
// addresses of its pods: EndpointSlices (managed by
// endpointslice-controller.k8s.io) and the legacy Endpoints object of the
// Service's name. Services without a selector are left to their owners.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Labels and values on managed slices, as upstream.
const (
	ManagedBy       = "endpointslice-controller.k8s.io"
	headlessLabel   = "service.kubernetes.io/headless"
	maxPerSlice     = 100
	zoneLabel       = "topology.kubernetes.io/zone"
	serviceNameAttr = discoveryv1.LabelServiceName
)

// Config tunes the controller; the zero value is usable.
type Config struct {
	// MaxEndpointsPerSlice caps a slice's endpoints (100).
	MaxEndpointsPerSlice int
}

// Controller is the Endpoints and EndpointSlice controller.
type Controller struct {
	cfg         Config
	client      kube.Interface
	svcLister   corelisters.ServiceLister
	podLister   corelisters.PodLister
	nodeLister  corelisters.NodeLister
	sliceLister discoverylisters.EndpointSliceLister
	epLister    corelisters.EndpointsLister
	synced      []cache.InformerSynced
	queue       kit.Queue
	log         *slog.Logger
}

// New wires the controller to the shared informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if cfg.MaxEndpointsPerSlice <= 0 {
		cfg.MaxEndpointsPerSlice = maxPerSlice
	}
	svc, pod, node := f.Core().V1().Services(), f.Core().V1().Pods(), f.Core().V1().Nodes()
	slice, ep := f.Discovery().V1().EndpointSlices(), f.Core().V1().Endpoints()
	c := &Controller{cfg: cfg, client: client, svcLister: svc.Lister(), podLister: pod.Lister(), nodeLister: node.Lister(),
		sliceLister: slice.Lister(), epLister: ep.Lister(), queue: kit.NewQueue("endpoints"), log: log.With("controller", "endpoints"),
		synced: []cache.InformerSynced{svc.Informer().HasSynced, pod.Informer().HasSynced, node.Informer().HasSynced, slice.Informer().HasSynced, ep.Informer().HasSynced},
	}
	add := func(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) error {
		_, err := inf.AddEventHandler(h)
		return err
	}
	err := errors.Join(
		add(svc.Informer(), cache.ResourceEventHandlerFuncs{AddFunc: c.enqueue, UpdateFunc: func(_, n any) { c.enqueue(n) }, DeleteFunc: c.enqueue}),
		add(pod.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: c.podChanged,
			UpdateFunc: func(o, n any) {
				if !reflect.DeepEqual(o.(*corev1.Pod).Labels, n.(*corev1.Pod).Labels) {
					c.podChanged(o)
				}
				c.podChanged(n)
			},
			DeleteFunc: c.podChanged,
		}),
		add(slice.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: c.sliceChanged, UpdateFunc: func(_, n any) { c.sliceChanged(n) }, DeleteFunc: c.sliceChanged,
		}),
		add(ep.Informer(), cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(_, n any) { c.enqueue(n) }, DeleteFunc: c.enqueue,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("endpoints: handlers: %w", err)
	}
	return c, nil
}

// Run publishes endpoints with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "endpoints", c.queue, c.synced, nil, workers, c.sync, c.log)
}

func (c *Controller) enqueue(obj any) {
	if k, ok := kit.Key(obj); ok {
		c.queue.Add(k)
	}
}

func (c *Controller) sliceChanged(obj any) {
	s, ok := kit.Tombstone(obj).(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelManagedBy] != ManagedBy || s.Labels[serviceNameAttr] == "" {
		return
	}
	c.queue.Add(s.Namespace + "/" + s.Labels[serviceNameAttr])
}

// podChanged queues the Services selecting the pod.
func (c *Controller) podChanged(obj any) {
	p, ok := kit.Tombstone(obj).(*corev1.Pod)
	if !ok {
		return
	}
	svcs, err := c.svcLister.Services(p.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range svcs {
		if s.Spec.Selector == nil {
			continue
		}
		if labels.SelectorFromValidatedSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	if ns == metav1.NamespaceDefault && name == "kubernetes" {
		return nil // the API server publishes its own endpoints
	}
	svc, err := c.svcLister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return c.cleanup(ctx, ns, name)
	}
	if err != nil {
		return err
	}
	if svc.Spec.Selector == nil || svc.DeletionTimestamp != nil {
		return nil
	}
	pods, err := c.podLister.Pods(ns).List(labels.SelectorFromValidatedSet(svc.Spec.Selector))
	if err != nil {
		return err
	}
	eps := c.endpointsFor(svc, pods)
	return errors.Join(c.syncSlices(ctx, svc, eps), c.syncEndpoints(ctx, svc, eps))
}

// cleanup removes what the controller published for a deleted Service.
func (c *Controller) cleanup(ctx context.Context, ns, name string) error {
	var errs []error
	slices, err := c.sliceLister.EndpointSlices(ns).List(managedSelector(name))
	if err != nil {
		return err
	}
	for _, s := range slices {
		if err := c.client.DiscoveryV1().EndpointSlices(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpoint slice %s/%s: %w", ns, s.Name, err))
		}
	}
	if _, err := c.epLister.Endpoints(ns).Get(name); err == nil {
		if err := c.client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpoints %s/%s: %w", ns, name, err))
		}
	}
	return errors.Join(errs...)
}

func managedSelector(svc string) labels.Selector {
	return labels.SelectorFromSet(labels.Set{discoveryv1.LabelManagedBy: ManagedBy, serviceNameAttr: svc})
}

// endpoint is one pod's address with the ports it serves.
type endpoint struct {
	pod         *corev1.Pod
	ip          string
	addrType    discoveryv1.AddressType
	ready       bool
	serving     bool
	terminating bool
	zone        string
	ports       []discoveryv1.EndpointPort
	portKey     string
}

// resolvePort finds the container port a Service port targets on pod.
func resolvePort(pod *corev1.Pod, sp *corev1.ServicePort) (int32, bool) {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.String && tp.StrVal != "":
		for _, ct := range pod.Spec.Containers {
			for _, p := range ct.Ports {
				proto := p.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if p.Name == tp.StrVal && proto == sp.Protocol {
					return p.ContainerPort, true
				}
			}
		}
		return 0, false
	case tp.Type == intstr.Int && tp.IntVal != 0:
		return tp.IntVal, true
	default:
		return sp.Port, true
	}
}

func (c *Controller) endpointsFor(svc *corev1.Service, pods []*corev1.Pod) []endpoint {
	var out []endpoint
	for _, p := range pods {
		if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		addr, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			continue
		}
		e := endpoint{pod: p, ip: p.Status.PodIP, addrType: discoveryv1.AddressTypeIPv4, terminating: p.DeletionTimestamp != nil}
		if addr.Is6() {
			e.addrType = discoveryv1.AddressTypeIPv6
		}
		ready := kit.PodReady(p)
		e.serving = ready || svc.Spec.PublishNotReadyAddresses
		e.ready = (ready && !e.terminating) || svc.Spec.PublishNotReadyAddresses
		if p.Spec.NodeName != "" {
			if n, err := c.nodeLister.Get(p.Spec.NodeName); err == nil {
				e.zone = n.Labels[zoneLabel]
			}
		}
		var keys []string
		for i := range svc.Spec.Ports {
			sp := &svc.Spec.Ports[i]
			port, ok := resolvePort(p, sp)
			if !ok {
				continue
			}
			name, proto := sp.Name, sp.Protocol
			e.ports = append(e.ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto, AppProtocol: sp.AppProtocol})
			keys = append(keys, fmt.Sprintf("%s/%s/%d", name, proto, port))
		}
		if len(svc.Spec.Ports) > 0 && len(e.ports) == 0 {
			continue // no port of the Service exists on this pod
		}
		sort.Strings(keys)
		e.portKey = strings.Join(keys, ",")
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ip != out[j].ip {
			return out[i].ip < out[j].ip
		}
		return out[i].pod.Name < out[j].pod.Name
	})
	return out
}

func hostname(svc *corev1.Service, p *corev1.Pod) string {
	if p.Spec.Hostname != "" && p.Spec.Subdomain == svc.Name && svc.Namespace == p.Namespace {
		return p.Spec.Hostname
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

// desiredSlice is one slice to publish.
type desiredSlice struct {
	addrType  discoveryv1.AddressType
	ports     []discoveryv1.EndpointPort
	endpoints []discoveryv1.Endpoint
}

func (c *Controller) desiredSlices(svc *corev1.Service, eps []endpoint) []desiredSlice {
	type group struct {
		addrType discoveryv1.AddressType
		ports    []discoveryv1.EndpointPort
		eps      []discoveryv1.Endpoint
	}
	groups := map[string]*group{}
	var order []string
	for _, e := range eps {
		k := string(e.addrType) + "|" + e.portKey
		g, ok := groups[k]
		if !ok {
			g = &group{addrType: e.addrType, ports: e.ports}
			groups[k] = g
			order = append(order, k)
		}
		ep := discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: e.pod.Namespace, Name: e.pod.Name, UID: e.pod.UID},
		}
		if h := hostname(svc, e.pod); h != "" {
			ep.Hostname = &h
		}
		if e.pod.Spec.NodeName != "" {
			ep.NodeName = ptr(e.pod.Spec.NodeName)
		}
		if e.zone != "" {
			ep.Zone = ptr(e.zone)
		}
		g.eps = append(g.eps, ep)
	}
	sort.Strings(order)
	var out []desiredSlice
	for _, k := range order {
		g := groups[k]
		for i := 0; i < len(g.eps); i += c.cfg.MaxEndpointsPerSlice {
			end := min(i+c.cfg.MaxEndpointsPerSlice, len(g.eps))
			out = append(out, desiredSlice{addrType: g.addrType, ports: g.ports, endpoints: g.eps[i:end]})
		}
	}
	if len(out) == 0 {
		// An empty slice says "no endpoints" rather than "not yet synced".
		var ports []discoveryv1.EndpointPort
		for i := range svc.Spec.Ports {
			sp := svc.Spec.Ports[i]
			if sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "" {
				continue
			}
			port, _ := resolvePort(&corev1.Pod{}, &sp)
			ports = append(ports, discoveryv1.EndpointPort{Name: ptr(sp.Name), Port: ptr(port), Protocol: ptr(sp.Protocol), AppProtocol: sp.AppProtocol})
		}
		addrType := discoveryv1.AddressTypeIPv4
		if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
			addrType = discoveryv1.AddressTypeIPv6
		}
		out = append(out, desiredSlice{addrType: addrType, ports: ports})
	}
	return out
}

func sliceLabels(svc *corev1.Service) map[string]string {
	l := map[string]string{}
	for k, v := range svc.Labels {
		l[k] = v
	}
	l[serviceNameAttr] = svc.Name
	l[discoveryv1.LabelManagedBy] = ManagedBy
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		l[headlessLabel] = ""
	}
	return l
}

func (c *Controller) syncSlices(ctx context.Context, svc *corev1.Service, eps []endpoint) error {
	existing, err := c.sliceLister.EndpointSlices(svc.Namespace).List(managedSelector(svc.Name))
	if err != nil {
		return err
	}
	sort.Slice(existing, func(i, j int) bool { return existing[i].Name < existing[j].Name })
	used := map[string]bool{}
	lbls := sliceLabels(svc)
	owner := kit.ControllerRef(svc, "v1", "Service")
	var errs []error
	for _, d := range c.desiredSlices(svc, eps) {
		var match *discoveryv1.EndpointSlice
		for _, s := range existing {
			if !used[s.Name] && s.AddressType == d.addrType && apiequality.Semantic.DeepEqual(normPorts(s.Ports), normPorts(d.ports)) {
				match = s
				break
			}
		}
		if match == nil {
			// Reuse any leftover slice of the right address type rather than
			// creating and deleting.
			for _, s := range existing {
				if !used[s.Name] && s.AddressType == d.addrType {
					match = s
					break
				}
			}
		}
		if match != nil {
			used[match.Name] = true
			if apiequality.Semantic.DeepEqual(normPorts(match.Ports), normPorts(d.ports)) &&
				apiequality.Semantic.DeepEqual(normEndpoints(match.Endpoints), normEndpoints(d.endpoints)) &&
				reflect.DeepEqual(match.Labels, lbls) && metav1.IsControlledBy(match, svc) {
				continue
			}
			cp := match.DeepCopy()
			cp.Ports, cp.Endpoints, cp.Labels = d.ports, d.endpoints, lbls
			if !metav1.IsControlledBy(cp, svc) {
				cp.OwnerReferences = []metav1.OwnerReference{owner}
			}
			if _, err := c.client.DiscoveryV1().EndpointSlices(svc.Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("update endpoint slice %s/%s: %w", svc.Namespace, cp.Name, err))
			}
			continue
		}
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: svc.Name + "-", Namespace: svc.Namespace, Labels: lbls,
				OwnerReferences: []metav1.OwnerReference{owner},
			},
			AddressType: d.addrType, Ports: d.ports, Endpoints: d.endpoints,
		}
		if _, err := c.client.DiscoveryV1().EndpointSlices(svc.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil &&
			!kit.NamespaceTerminating(err) {
			errs = append(errs, fmt.Errorf("create endpoint slice for %s/%s: %w", svc.Namespace, svc.Name, err))
		}
	}
	for _, s := range existing {
		if used[s.Name] {
			continue
		}
		if err := c.client.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpoint slice %s/%s: %w", s.Namespace, s.Name, err))
		}
	}
	return errors.Join(errs...)
}

func normPorts(p []discoveryv1.EndpointPort) []discoveryv1.EndpointPort {
	if len(p) == 0 {
		return nil
	}
	return p
}

func normEndpoints(e []discoveryv1.Endpoint) []discoveryv1.Endpoint {
	if len(e) == 0 {
		return nil
	}
	return e
}

// subsets builds the Endpoints subsets: one per distinct port set, ready
// and not-ready addresses apart; terminating pods are left out (unless the
// Service publishes not-ready addresses).
func subsets(svc *corev1.Service, eps []endpoint) []corev1.EndpointSubset {
	type group struct {
		ports    []corev1.EndpointPort
		ready    []corev1.EndpointAddress
		notReady []corev1.EndpointAddress
	}
	groups := map[string]*group{}
	var order []string
	for _, e := range eps {
		if e.terminating && !svc.Spec.PublishNotReadyAddresses {
			continue
		}
		g, ok := groups[e.portKey]
		if !ok {
			g = &group{}
			for _, p := range e.ports {
				g.ports = append(g.ports, corev1.EndpointPort{Name: *p.Name, Port: *p.Port, Protocol: *p.Protocol, AppProtocol: p.AppProtocol})
			}
			sort.Slice(g.ports, func(i, j int) bool { return g.ports[i].Name < g.ports[j].Name })
			groups[e.portKey] = g
			order = append(order, e.portKey)
		}
		a := corev1.EndpointAddress{IP: e.ip, Hostname: hostname(svc, e.pod),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: e.pod.Namespace, Name: e.pod.Name, UID: e.pod.UID}}
		if e.pod.Spec.NodeName != "" {
			a.NodeName = ptr(e.pod.Spec.NodeName)
		}
		if e.ready {
			g.ready = append(g.ready, a)
		} else {
			g.notReady = append(g.notReady, a)
		}
	}
	sort.Strings(order)
	var out []corev1.EndpointSubset
	for _, k := range order {
		g := groups[k]
		out = append(out, corev1.EndpointSubset{Addresses: g.ready, NotReadyAddresses: g.notReady, Ports: g.ports})
	}
	return out
}

func (c *Controller) syncEndpoints(ctx context.Context, svc *corev1.Service, eps []endpoint) error {
	want := subsets(svc, eps)
	lbls := map[string]string{}
	for k, v := range svc.Labels {
		lbls[k] = v
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		lbls[headlessLabel] = ""
	}
	cur, err := c.epLister.Endpoints(svc.Namespace).Get(svc.Name)
	if apierrors.IsNotFound(err) {
		e := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: lbls}, Subsets: want}
		_, err := c.client.CoreV1().Endpoints(svc.Namespace).Create(ctx, e, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) && !kit.NamespaceTerminating(err) {
			return fmt.Errorf("create endpoints %s/%s: %w", svc.Namespace, svc.Name, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(normSubsets(cur.Subsets), normSubsets(want)) && labelsEqual(cur.Labels, lbls) {
		return nil
	}
	cp := cur.DeepCopy()
	cp.Subsets, cp.Labels = want, lbls
	if _, err := c.client.CoreV1().Endpoints(svc.Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update endpoints %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

func normSubsets(s []corev1.EndpointSubset) []corev1.EndpointSubset {
	if len(s) == 0 {
		return nil
	}
	return s
}

func labelsEqual(a, b map[string]string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
