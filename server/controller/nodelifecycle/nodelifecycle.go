// Package nodelifecycle watches node health and acts on it, as upstream's
// node lifecycle, taint eviction and pod GC controllers do: a node whose
// Lease and Ready heartbeat go stale for the grace period is marked
// Unknown and tainted unreachable; a node reporting Ready=False is tainted
// not-ready (both NoSchedule and NoExecute, removed when it recovers, plus
// the NoSchedule taints of its pressure conditions and cordon). Pods on a
// node with a NoExecute taint they do not tolerate are deleted at once,
// those tolerating it for tolerationSeconds when that time is up; pods of
// deleted nodes are removed, and pods stuck terminating on an unreachable
// node are force-deleted once their grace period is over.
package nodelifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// LeaseNamespace holds the node heartbeat Leases.
const LeaseNamespace = corev1.NamespaceNodeLease

// podsByNode is the pod informer index by spec.nodeName.
const podsByNode = "orch-nodelifecycle-node"

// Config tunes the controller; the zero value is upstream's defaults.
type Config struct {
	// GracePeriod is how long a node's Lease and Ready heartbeat may go
	// unrenewed before it is marked Unknown (40 s).
	GracePeriod time.Duration
	// MonitorPeriod is how often node health is checked (5 s).
	MonitorPeriod time.Duration
	// DisableEviction turns taint-based eviction off (taints still apply).
	DisableEviction bool
	// Recorder receives events; nil makes the controller record its own.
	Recorder record.EventRecorder
}

// Controller is the node lifecycle controller.
type Controller struct {
	cfg       Config
	client    kube.Interface
	nodes     corelisters.NodeLister
	leases    coordlisters.LeaseLister
	pods      corelisters.PodLister
	podIndex  cache.Indexer
	synced    []cache.InformerSynced
	nodeQueue kit.Queue
	podQueue  kit.Queue
	events    *kit.Events
	recorder  record.EventRecorder
	log       *slog.Logger
	logr      logr.Logger
	now       func() time.Time
	mu        sync.Mutex
	health    map[string]*probe
}

// probe is the last heartbeat seen of a node and when (by our clock) it
// changed: heartbeats are compared with our own clock only, so node clock
// skew does not matter (as upstream).
type probe struct {
	readyHeartbeat metav1.Time
	leaseRenew     time.Time
	changed        time.Time
}

// New wires the controller to the node, lease and pod informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = 40 * time.Second
	}
	if cfg.MonitorPeriod <= 0 {
		cfg.MonitorPeriod = 5 * time.Second
	}
	log = log.With("controller", "nodelifecycle")
	c := &Controller{
		cfg: cfg, client: client,
		nodeQueue: kit.NewQueue("nodelifecycle-nodes"),
		podQueue:  kit.NewQueue("nodelifecycle-pods"),
		recorder:  cfg.Recorder,
		log:       log,
		logr:      logr.FromSlogHandler(log.Handler()),
		now:       time.Now,
		health:    map[string]*probe{},
	}
	if c.recorder == nil {
		c.events = kit.NewEvents(client, "node-controller")
		c.recorder = c.events.Recorder
	}
	nodeInf := f.Core().V1().Nodes()
	leaseInf := f.Coordination().V1().Leases()
	podInf := f.Core().V1().Pods()
	c.nodes, c.leases, c.pods = nodeInf.Lister(), leaseInf.Lister(), podInf.Lister()
	c.podIndex = podInf.Informer().GetIndexer()
	if _, ok := c.podIndex.GetIndexers()[podsByNode]; !ok {
		if err := podInf.Informer().AddIndexers(cache.Indexers{podsByNode: func(obj any) ([]string, error) {
			if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
				return []string{p.Spec.NodeName}, nil
			}
			return nil, nil
		}}); err != nil {
			return nil, fmt.Errorf("nodelifecycle: pod index: %w", err)
		}
	}
	c.synced = []cache.InformerSynced{nodeInf.Informer().HasSynced, leaseInf.Informer().HasSynced, podInf.Informer().HasSynced}
	if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueNode,
		UpdateFunc: func(o, n any) {
			c.enqueueNode(n)
			on, ok1 := o.(*corev1.Node)
			nn, ok2 := n.(*corev1.Node)
			if ok1 && ok2 && !apiequality.Semantic.DeepEqual(on.Spec.Taints, nn.Spec.Taints) {
				c.enqueuePodsOf(nn.Name)
			}
		},
		DeleteFunc: func(o any) {
			if n, ok := kit.Tombstone(o).(*corev1.Node); ok {
				c.mu.Lock()
				delete(c.health, n.Name)
				c.mu.Unlock()
				c.enqueuePodsOf(n.Name)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("nodelifecycle: node handler: %w", err)
	}
	if _, err := leaseInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueLease,
		UpdateFunc: func(_, n any) { c.enqueueLease(n) },
	}); err != nil {
		return nil, fmt.Errorf("nodelifecycle: lease handler: %w", err)
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueuePod,
		UpdateFunc: func(_, n any) { c.enqueuePod(n) },
	}); err != nil {
		return nil, fmt.Errorf("nodelifecycle: pod handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueNode(obj any) {
	if n, ok := kit.Tombstone(obj).(*corev1.Node); ok {
		c.nodeQueue.Add(n.Name)
	}
}

func (c *Controller) enqueueLease(obj any) {
	if l, ok := obj.(*coordinationv1.Lease); ok && l.Namespace == LeaseNamespace {
		c.nodeQueue.Add(l.Name)
	}
}

func (c *Controller) enqueuePod(obj any) {
	if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
		if k, ok := kit.Key(p); ok {
			c.podQueue.Add(k)
		}
	}
}

func (c *Controller) enqueuePodsOf(node string) {
	objs, err := c.podIndex.ByIndex(podsByNode, node)
	if err != nil {
		return
	}
	for _, o := range objs {
		if k, ok := kit.Key(o); ok {
			c.podQueue.Add(k)
		}
	}
}

// Run monitors nodes and pods with workers goroutines per queue until ctx
// ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	if c.events != nil {
		go c.events.Run(ctx)
	}
	if err := kit.WaitForSync(ctx, "nodelifecycle", c.synced...); err != nil {
		return err
	}
	c.log.Info("started", "grace", c.cfg.GracePeriod)
	go func() {
		t := time.NewTicker(c.cfg.MonitorPeriod)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			nodes, err := c.nodes.List(everything())
			if err != nil {
				continue
			}
			for _, n := range nodes {
				c.nodeQueue.Add(n.Name)
			}
		}
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); kit.RunWorkers(ctx, c.nodeQueue, workers, c.syncNode, c.log) }()
	go func() { defer wg.Done(); kit.RunWorkers(ctx, c.podQueue, workers, c.syncPod, c.log) }()
	wg.Wait()
	return nil
}
