// Package netproxy load-balances Kubernetes Services on a node with
// nftables, in-process: the job of kube-proxy (ClusterIP, NodePort,
// externalIPs, session affinity, traffic policies, masquerade) plus k3s'
// ServiceLB (LoadBalancer Services answer on every node address).
//
// It owns exactly one nftables table (Config.TableName, family ip) and never
// touches anything else. Services map through a verdict map keyed by
// `ip daddr . meta l4proto . th dport` to per-port chains that pick an
// endpoint with `numgen random` and DNAT to it; NodePort and LoadBalancer
// ports match `fib daddr type local`. Every sync is one atomic nftables batch
// that rewrites only the Services that changed.
package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/orch-dev/orch/internal/kube"
)

// Special queue keys (a Service key always contains a "/").
const (
	keyFull  = "full-sync"
	keyCheck = "check-table"

	sliceIndex = "service"
)

// Proxy programs the node's Service load-balancing. Create it with New and
// start it with Run.
type Proxy struct {
	cfg    Config
	client kube.Interface
	log    *slog.Logger
	r      renderer
	queue  workqueue.TypedRateLimitingInterface[string]

	// dial opens an nftables connection for queries, dialBatch one for
	// writing a batch. Set by Run (netlink in cfg.NetNS) unless a test set
	// them first.
	dial      func() (*nftables.Conn, error)
	dialBatch func() (*batchConn, error)
	ct        conntrackCleaner

	services   corelisters.ServiceLister
	slices     cache.Indexer
	st         *state
	needFull   bool
	lastSync   time.Time
	tableMark  tableMark
	haveMark   bool
	syncCount  atomic.Int64
	fullCount  atomic.Int64
	checkCount atomic.Int64
	nServices  atomic.Int64
}

// New returns a Proxy for cfg that watches Services and EndpointSlices
// through client and logs to log.
func New(cfg Config, client kube.Interface, log *slog.Logger) (*Proxy, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("netproxy: nil kubernetes client")
	}
	if log == nil {
		return nil, errors.New("netproxy: nil logger")
	}
	return &Proxy{
		cfg:    cfg,
		client: client,
		log:    log.With("component", "netproxy", "table", cfg.TableName),
		r:      renderer{clusterCIDR: cfg.ClusterCIDR, mark: cfg.MasqueradeMark},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "netproxy"}),
		st:       newState(),
		needFull: true,
	}, nil
}

// Run watches the API and keeps the table in sync until ctx is done. The
// table is left in place on return so Services keep working while orch
// restarts; the next Run replaces it with a full sync.
func (p *Proxy) Run(ctx context.Context) error {
	if p.dial == nil {
		nsFd := -1
		if p.cfg.NetNS != "" {
			fd, err := unix.Open(p.cfg.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("netproxy: open network namespace %s: %w", p.cfg.NetNS, err)
			}
			defer unix.Close(fd)
			nsFd = fd
		}
		p.dial = func() (*nftables.Conn, error) { return dialNftables(nsFd) }
		p.dialBatch = func() (*batchConn, error) { return dialBatch(nsFd) }
		ct, err := newNetlinkConntrack(nsFd)
		if err != nil {
			return fmt.Errorf("netproxy: %w", err)
		}
		p.ct = ct
	}
	if p.ct != nil {
		defer p.ct.Close()
	}

	factory := kube.NewSharedInformerFactory(p.client, 0)
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	if err := sliceInf.Informer().AddIndexers(cache.Indexers{sliceIndex: func(obj any) ([]string, error) {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if k := serviceKeyOf(s); k != "" {
				return []string{k}, nil
			}
		}
		return nil, nil
	}}); err != nil {
		return fmt.Errorf("netproxy: endpointslice indexer: %w", err)
	}
	enqueueSvc := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			p.queue.Add(k)
		}
	}
	enqueueSlice := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if k := serviceKeyOf(s); k != "" {
				p.queue.Add(k)
			}
		}
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueSvc,
		UpdateFunc: func(_, n any) { enqueueSvc(n) },
		DeleteFunc: enqueueSvc,
	}); err != nil {
		return fmt.Errorf("netproxy: service handler: %w", err)
	}
	if _, err := sliceInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueSlice,
		UpdateFunc: func(o, n any) {
			enqueueSlice(o) // the service-name label may have changed
			enqueueSlice(n)
		},
		DeleteFunc: enqueueSlice,
	}); err != nil {
		return fmt.Errorf("netproxy: endpointslice handler: %w", err)
	}
	p.services = svcInf.Lister()
	p.slices = sliceInf.Informer().GetIndexer()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			p.queue.ShutDown()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("netproxy: informer cache for %v did not sync", typ)
		}
	}
	p.log.Info("starting", "node", p.cfg.NodeName, "nodeIPs", p.cfg.NodeIPs, "clusterCIDR", p.cfg.ClusterCIDR,
		"netns", p.cfg.NetNS, "minSyncInterval", p.cfg.MinSyncInterval, "checkInterval", p.cfg.CheckInterval)
	p.queue.Add(keyFull)

	go func() {
		t := time.NewTicker(p.cfg.CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				p.queue.ShutDown()
				return
			case <-t.C:
				p.queue.Add(keyCheck)
			}
		}
	}()
	for p.processBatch(ctx) {
	}
	return nil
}

// processBatch waits for work, waits out the minimum sync interval while
// more changes pile up, then syncs everything queued in one batch.
func (p *Proxy) processBatch(ctx context.Context) bool {
	first, quit := p.queue.Get()
	if quit {
		return false
	}
	if wait := time.Until(p.lastSync.Add(p.cfg.MinSyncInterval)); wait > 0 {
		select {
		case <-ctx.Done():
			p.queue.Done(first)
			return false
		case <-time.After(wait):
		}
	}
	keys := []string{first}
	for p.queue.Len() > 0 {
		k, quit := p.queue.Get()
		if quit {
			break
		}
		keys = append(keys, k)
	}
	err := p.sync(keys)
	p.lastSync = time.Now()
	for _, k := range keys {
		if err != nil && k != keyCheck {
			p.queue.AddRateLimited(k)
		} else {
			p.queue.Forget(k)
		}
		p.queue.Done(k)
	}
	if err != nil {
		p.log.Error("sync failed; will retry with a full sync", "err", err, "keys", len(keys))
	}
	return true
}

// sync brings the Services named by keys (and, for keyFull or when the
// table needs it, all Services) into the table.
func (p *Proxy) sync(keys []string) error {
	start := time.Now()
	full := p.needFull
	reason := "start"
	for _, k := range keys {
		switch k {
		case keyFull:
			full = true
		case keyCheck:
			ok, why, err := p.checkTable()
			p.checkCount.Add(1)
			if err != nil {
				return fmt.Errorf("check table: %w", err)
			}
			if !ok && !full {
				p.log.Warn("table was changed by someone else; recreating it", "reason", why)
				full, reason = true, why
			}
		}
	}
	var want []string
	if full {
		all, err := p.services.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list services: %w", err)
		}
		set := map[string]bool{}
		for _, s := range all {
			set[s.Namespace+"/"+s.Name] = true
		}
		for k := range p.st.ports {
			set[k] = true
		}
		for k := range set {
			want = append(want, k)
		}
	} else {
		for _, k := range keys {
			if k != keyFull && k != keyCheck {
				want = append(want, k)
			}
		}
		if len(want) == 0 {
			return nil
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	changes := make([]change, 0, len(want))
	for _, k := range want {
		ports, err := p.desired(k)
		if err != nil {
			return err
		}
		changes = append(changes, change{key: k, ports: ports})
	}
	res, next, err := p.apply(changes, full)
	if err != nil {
		p.needFull = true
		return err
	}
	p.st = next
	p.needFull = false
	p.syncCount.Add(1)
	if full {
		p.fullCount.Add(1)
	}
	p.nServices.Store(int64(len(p.st.plans)))
	for _, c := range res.conflict {
		p.log.Warn("address/port conflict between services; first one keeps it", "conflict", c)
	}
	for _, k := range res.requeue {
		p.queue.Add(k)
	}
	if len(res.flows) > 0 && p.ct != nil {
		n, err := p.ct.DeleteFlows(res.flows)
		if err != nil {
			p.log.Warn("deleting stale UDP conntrack flows", "err", err)
		}
		p.log.Debug("deleted stale UDP conntrack flows", "flows", n)
	}
	if err := p.recordTable(); err != nil {
		p.log.Warn("reading table marker", "err", err)
	}
	attrs := []any{"services", len(changes), "changed", res.changed, "total", len(p.st.plans), "duration", time.Since(start)}
	if full {
		p.log.Info("full sync", append(attrs, "reason", reason)...)
	} else {
		p.log.Debug("sync", attrs...)
	}
	return nil
}

// desired returns the service ports the Service key should have now (nil
// when it is gone or has nothing to program).
func (p *Proxy) desired(key string) ([]servicePort, error) {
	ns, name := splitKey(key)
	svc, err := p.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get service %s: %w", key, err)
	}
	objs, err := p.slices.ByIndex(sliceIndex, key)
	if err != nil {
		return nil, fmt.Errorf("endpointslices of %s: %w", key, err)
	}
	sl := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			sl = append(sl, s)
		}
	}
	ports, warnings := servicePorts(svc, sl, p.cfg.NodeName)
	for _, w := range warnings {
		p.log.Warn("service partly ignored", "service", key, "problem", w)
	}
	return ports, nil
}

func (p *Proxy) apply(changes []change, full bool) (syncResult, *state, error) {
	conn, err := p.dialBatch()
	if err != nil {
		return syncResult{}, p.st, fmt.Errorf("nftables connection: %w", err)
	}
	defer func() { _ = conn.close() }()
	return apply(conn, p.cfg.TableName, &p.r, p.st, changes, full)
}

// dialNftables opens an nftables netlink connection for queries in the
// network namespace nsFd (-1: the current one).
func dialNftables(nsFd int) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	return c, nil
}

// Stats are counters for diagnosis and tests.
type Stats struct {
	Syncs, FullSyncs, Checks, Services int64
}

// Stats returns the proxy's counters; safe to call concurrently with Run.
func (p *Proxy) Stats() Stats {
	return Stats{Syncs: p.syncCount.Load(), FullSyncs: p.fullCount.Load(), Checks: p.checkCount.Load(), Services: p.nServices.Load()}
}
