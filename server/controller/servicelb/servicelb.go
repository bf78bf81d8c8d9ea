// Package servicelb gives Services of type LoadBalancer the addresses of
// the Ready nodes as their load balancer ingress, as k3s's ServiceLB does
// (the nodes' proxies answer on those addresses; no pod per Service).
package servicelb

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Config tunes the controller; the zero value is usable.
type Config struct {
	// NodeSelector limits the nodes that serve load balancers (all nodes
	// when empty); k3s uses the svccontroller.k3s.cattle.io/enablelb label.
	NodeSelector labels.Selector
}

// Controller is the ServiceLB status controller.
type Controller struct {
	cfg        Config
	client     kube.Interface
	svcLister  corelisters.ServiceLister
	nodeLister corelisters.NodeLister
	synced     []cache.InformerSynced
	queue      kit.Queue
	log        *slog.Logger
}

// New wires the controller to the shared informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if cfg.NodeSelector == nil {
		cfg.NodeSelector = labels.Everything()
	}
	svc, node := f.Core().V1().Services(), f.Core().V1().Nodes()
	c := &Controller{cfg: cfg, client: client, svcLister: svc.Lister(), nodeLister: node.Lister(),
		synced: []cache.InformerSynced{svc.Informer().HasSynced, node.Informer().HasSynced},
		queue:  kit.NewQueue("servicelb"), log: log.With("controller", "servicelb")}
	if _, err := svc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue, UpdateFunc: func(_, n any) { c.enqueue(n) },
	}); err != nil {
		return nil, fmt.Errorf("servicelb: service handler: %w", err)
	}
	if _, err := node.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.nodesChanged,
		UpdateFunc: func(o, n any) {
			if !apiequality.Semantic.DeepEqual(nodeIPs(o.(*corev1.Node)), nodeIPs(n.(*corev1.Node))) ||
				nodeReady(o.(*corev1.Node)) != nodeReady(n.(*corev1.Node)) ||
				!apiequality.Semantic.DeepEqual(o.(*corev1.Node).Labels, n.(*corev1.Node).Labels) {
				c.nodesChanged(n)
			}
		},
		DeleteFunc: c.nodesChanged,
	}); err != nil {
		return nil, fmt.Errorf("servicelb: node handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueue(obj any) {
	s, ok := obj.(*corev1.Service)
	if ok && s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		c.queue.Add(s.Namespace + "/" + s.Name)
	}
}

func (c *Controller) nodesChanged(any) {
	svcs, err := c.svcLister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range svcs {
		c.enqueue(s)
	}
}

// Run keeps the ingress addresses with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "servicelb", c.queue, c.synced, nil, workers, c.sync, c.log)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeIPs are a node's load balancer addresses: its ExternalIPs when it
// has any, else its InternalIPs.
func nodeIPs(n *corev1.Node) []string {
	var ext, in []string
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeExternalIP:
			ext = append(ext, a.Address)
		case corev1.NodeInternalIP:
			in = append(in, a.Address)
		}
	}
	if len(ext) > 0 {
		return ext
	}
	return in
}

// Ingress is the load balancer ingress of the ready nodes, sorted.
func Ingress(nodes []*corev1.Node, sel labels.Selector, families []corev1.IPFamily) []corev1.LoadBalancerIngress {
	want := map[bool]bool{} // is6 -> allowed
	for _, f := range families {
		want[f == corev1.IPv6Protocol] = true
	}
	seen := map[netip.Addr]bool{}
	var addrs []netip.Addr
	for _, n := range nodes {
		if !nodeReady(n) || n.DeletionTimestamp != nil || !sel.Matches(labels.Set(n.Labels)) {
			continue
		}
		for _, ip := range nodeIPs(n) {
			a, err := netip.ParseAddr(ip)
			if err != nil || seen[a] || (len(want) > 0 && !want[a.Is6()]) {
				continue
			}
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	var out []corev1.LoadBalancerIngress
	mode := corev1.LoadBalancerIPModeVIP
	for _, a := range addrs {
		out = append(out, corev1.LoadBalancerIngress{IP: a.String(), IPMode: &mode})
	}
	return out
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := c.svcLister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.LoadBalancerClass != nil || svc.DeletionTimestamp != nil {
		return nil // another implementation's, or not a load balancer
	}
	nodes, err := c.nodeLister.List(labels.Everything())
	if err != nil {
		return err
	}
	want := Ingress(nodes, c.cfg.NodeSelector, svc.Spec.IPFamilies)
	if apiequality.Semantic.DeepEqual(svc.Status.LoadBalancer.Ingress, want) {
		return nil
	}
	cp := svc.DeepCopy()
	cp.Status.LoadBalancer.Ingress = want
	if _, err := c.client.CoreV1().Services(ns).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update load balancer status of %s: %w", key, err)
	}
	c.log.Info("load balancer ingress", "service", key, "addresses", len(want))
	return nil
}
