// Package nodeipam assigns every Node a pod CIDR (spec.podCIDR and
// spec.podCIDRs): one free subnet of the cluster CIDR per node, a /24 by
// default, as upstream's range allocator. The Node objects are the only
// record of what is taken: at start the used set is rebuilt from them, so
// no two nodes ever get the same range, and a range is free again once its
// Node is gone. When the cluster CIDR is exhausted the Node gets a
// CIDRNotAvailable event and is retried when a range is released.
package nodeipam

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// ErrExhausted means every subnet of the cluster CIDR is assigned.
var ErrExhausted = errors.New("no pod CIDR left in the cluster CIDR")

// Config configures the allocator.
type Config struct {
	// ClusterCIDR is the range node subnets are cut from (IPv4).
	ClusterCIDR netip.Prefix
	// NodeMaskSize is the prefix length of a node's subnet (default 24).
	NodeMaskSize int
	// Recorder receives the CIDRNotAvailable events; nil makes one.
	Recorder record.EventRecorder
}

// Controller is the node IPAM controller.
type Controller struct {
	cfg    Config
	client kube.Interface
	nodes  corelisters.NodeLister
	synced cache.InformerSynced
	queue  kit.Queue
	events *kit.Events
	rec    record.EventRecorder
	log    *slog.Logger

	mu    sync.Mutex
	used  map[uint32]string // subnet index -> node name
	byKey map[string]uint32 // node name -> subnet index
	total uint32
}

// New wires the controller to the Node informer of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if cfg.NodeMaskSize == 0 {
		cfg.NodeMaskSize = 24
	}
	if !cfg.ClusterCIDR.IsValid() || !cfg.ClusterCIDR.Addr().Is4() {
		return nil, fmt.Errorf("nodeipam: cluster CIDR %v must be an IPv4 prefix", cfg.ClusterCIDR)
	}
	if cfg.ClusterCIDR != cfg.ClusterCIDR.Masked() {
		return nil, fmt.Errorf("nodeipam: cluster CIDR %v has host bits set", cfg.ClusterCIDR)
	}
	bits := cfg.NodeMaskSize - cfg.ClusterCIDR.Bits()
	if cfg.NodeMaskSize > 30 || bits < 0 || bits > 24 {
		return nil, fmt.Errorf("nodeipam: node mask /%d does not fit cluster CIDR %v (want /%d.. /30, at most 2^24 subnets)",
			cfg.NodeMaskSize, cfg.ClusterCIDR, cfg.ClusterCIDR.Bits())
	}
	inf := f.Core().V1().Nodes()
	c := &Controller{cfg: cfg, client: client, nodes: inf.Lister(), synced: inf.Informer().HasSynced,
		queue: kit.NewQueue("nodeipam"), log: log.With("controller", "nodeipam"),
		used: map[uint32]string{}, byKey: map[string]uint32{}, total: 1 << bits}
	if cfg.Recorder == nil {
		c.events = kit.NewEvents(client, "nodeipam-controller")
		c.rec = c.events.Recorder
	} else {
		c.rec = cfg.Recorder
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, n any) { c.enqueue(n) },
		DeleteFunc: func(o any) {
			if n, ok := kit.Tombstone(o).(*corev1.Node); ok {
				c.release(n.Name)
				// A freed range may serve a node that is waiting.
				for _, w := range c.waiting() {
					c.queue.Add(w)
				}
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("nodeipam: handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueue(o any) {
	if n, ok := o.(*corev1.Node); ok {
		c.queue.Add(n.Name)
	}
}

// Run assigns CIDRs with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	if c.events != nil {
		go c.events.Run(ctx)
	}
	if err := kit.WaitForSync(ctx, "nodeipam", c.synced); err != nil {
		c.queue.ShutDown()
		return err
	}
	// Rebuild the used set from the Nodes before assigning anything.
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		c.queue.ShutDown()
		return fmt.Errorf("nodeipam: list nodes: %w", err)
	}
	for _, n := range nodes {
		if n.Spec.PodCIDR == "" {
			continue
		}
		if err := c.occupy(n.Name, n.Spec.PodCIDR); err != nil {
			c.log.Warn("node has a pod CIDR outside the allocator's ranges", "node", n.Name, "podCIDR", n.Spec.PodCIDR, "err", err)
		}
	}
	c.log.Info("started", "clusterCIDR", c.cfg.ClusterCIDR, "nodeMask", c.cfg.NodeMaskSize, "used", len(nodes))
	kit.RunWorkers(ctx, c.queue, workers, c.sync, c.log)
	return nil
}

// index returns the subnet index of cidr, or an error when it is not one
// of the allocator's subnets.
func (c *Controller) index(cidr string) (uint32, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return 0, err
	}
	if p.Bits() != c.cfg.NodeMaskSize || !c.cfg.ClusterCIDR.Contains(p.Addr()) || p != p.Masked() {
		return 0, fmt.Errorf("%s is not a /%d of %s", cidr, c.cfg.NodeMaskSize, c.cfg.ClusterCIDR)
	}
	a, b := p.Addr().As4(), c.cfg.ClusterCIDR.Addr().As4()
	return (binary.BigEndian.Uint32(a[:]) - binary.BigEndian.Uint32(b[:])) >> (32 - c.cfg.NodeMaskSize), nil
}

func (c *Controller) subnet(i uint32) netip.Prefix {
	b := c.cfg.ClusterCIDR.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) + i<<(32-c.cfg.NodeMaskSize)
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(a), c.cfg.NodeMaskSize)
}

func (c *Controller) occupy(node, cidr string) error {
	i, err := c.index(cidr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if other, ok := c.used[i]; ok && other != node {
		return fmt.Errorf("%s is also assigned to node %s", cidr, other)
	}
	c.used[i] = node
	c.byKey[node] = i
	return nil
}

func (c *Controller) release(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.byKey[node]; ok {
		delete(c.byKey, node)
		if c.used[i] == node {
			delete(c.used, i)
		}
	}
}

// waiting lists nodes without a pod CIDR.
func (c *Controller) waiting() []string {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range nodes {
		if n.Spec.PodCIDR == "" {
			out = append(out, n.Name)
		}
	}
	return out
}

// allocate reserves the lowest free subnet for node.
func (c *Controller) allocate(node string) (netip.Prefix, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.byKey[node]; ok {
		return c.subnet(i), nil
	}
	for i := uint32(0); i < c.total; i++ {
		if _, taken := c.used[i]; !taken {
			c.used[i] = node
			c.byKey[node] = i
			return c.subnet(i), nil
		}
	}
	return netip.Prefix{}, ErrExhausted
}

func (c *Controller) sync(ctx context.Context, name string) error {
	n, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		c.release(name)
		return nil
	}
	if err != nil {
		return err
	}
	if n.Spec.PodCIDR != "" {
		// Already assigned (by us or by hand): make sure it is counted.
		if err := c.occupy(n.Name, n.Spec.PodCIDR); err != nil {
			c.log.Warn("pod CIDR conflict", "node", n.Name, "podCIDR", n.Spec.PodCIDR, "err", err)
			c.rec.Eventf(n, corev1.EventTypeWarning, "CIDRAssignmentFailed", "Node %s has pod CIDR %s: %v", n.Name, n.Spec.PodCIDR, err)
		}
		return nil
	}
	p, err := c.allocate(n.Name)
	if errors.Is(err, ErrExhausted) {
		c.rec.Eventf(n, corev1.EventTypeWarning, "CIDRNotAvailable",
			"Node %s status is now: CIDRNotAvailable (no /%d left in cluster CIDR %s)", n.Name, c.cfg.NodeMaskSize, c.cfg.ClusterCIDR)
		c.log.Warn("cluster CIDR exhausted", "node", n.Name, "clusterCIDR", c.cfg.ClusterCIDR)
		return nil // retried when a Node is deleted
	}
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": p.String(), "podCIDRs": []string{p.String()}}})
	if err != nil {
		return err
	}
	if _, err := c.client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		c.release(n.Name)
		return fmt.Errorf("assign pod CIDR %s to node %s: %w", p, n.Name, err)
	}
	c.log.Info("assigned pod CIDR", "node", n.Name, "podCIDR", p)
	return nil
}
