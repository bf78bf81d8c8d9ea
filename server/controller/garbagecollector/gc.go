// Package garbagecollector deletes objects whose owners are gone and runs
// the foreground and orphan deletion finalizers, across every kind the API
// serves. Objects are watched as metadata only, except kinds the shared
// typed informers already cache.
package garbagecollector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/discover"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Config tunes the collector; the zero value is usable.
type Config struct {
	// Typed lists resources read through the shared typed informers (which
	// other controllers cache anyway) instead of metadata informers.
	// Nil means DefaultTyped.
	Typed []schema.GroupVersionResource
	// Ignored resources are never watched (events by default).
	Ignored []schema.GroupResource
}

// DefaultTyped are the kinds orch's controllers already cache in full.
var DefaultTyped = []schema.GroupVersionResource{
	{Version: "v1", Resource: "pods"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "namespaces"},
	{Version: "v1", Resource: "nodes"},
	{Version: "v1", Resource: "serviceaccounts"},
	{Group: "apps", Version: "v1", Resource: "replicasets"},
	{Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
}

var defaultIgnored = []schema.GroupResource{{Resource: "events"}, {Group: "events.k8s.io", Resource: "events"}}

// node is one watched object in the ownership graph.
type node struct {
	gvr       schema.GroupVersionResource
	namespace string
	name      string
}

func (n node) key() string {
	return strings.Join([]string{n.gvr.Group, n.gvr.Version, n.gvr.Resource, n.namespace, n.name}, "|")
}

func parseKey(k string) (node, bool) {
	p := strings.Split(k, "|")
	if len(p) != 5 {
		return node{}, false
	}
	return node{gvr: schema.GroupVersionResource{Group: p[0], Version: p[1], Resource: p[2]}, namespace: p[3], name: p[4]}, true
}

// Controller is the garbage collector.
type Controller struct {
	cfg    Config
	client kube.Interface
	meta   metadata.Interface
	disc   discover.Source
	typed  *kube.SharedInformerFactory
	log    *slog.Logger
	queue  kit.Queue

	mu         sync.RWMutex
	resources  *discover.Map
	stores     map[schema.GroupVersionResource]cache.Store
	uids       map[types.UID]node
	dependents map[types.UID]map[types.UID]node // owner -> dependents
}

// New makes the collector; informers are set up from discovery (disc) in
// Run.
func New(cfg Config, client kube.Interface, meta metadata.Interface, disc discover.Source, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if meta == nil {
		return nil, fmt.Errorf("garbagecollector: a metadata client is required")
	}
	if disc == nil {
		return nil, fmt.Errorf("garbagecollector: a discovery client is required")
	}
	if cfg.Typed == nil {
		cfg.Typed = DefaultTyped
	}
	if cfg.Ignored == nil {
		cfg.Ignored = defaultIgnored
	}
	return &Controller{
		cfg: cfg, client: client, meta: meta, disc: disc, typed: f, log: log.With("controller", "garbagecollector"),
		queue:  kit.NewQueue("garbagecollector"),
		stores: map[schema.GroupVersionResource]cache.Store{}, uids: map[types.UID]node{},
		dependents: map[types.UID]map[types.UID]node{},
	}, nil
}

// dropManagedFields keeps metadata caches small.
func dropManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run discovers the API's resources, watches them and collects garbage
// with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	res, err := c.discover(ctx)
	if err != nil {
		c.queue.ShutDown()
		return err
	}
	c.mu.Lock()
	c.resources = res
	c.mu.Unlock()
	typed := map[schema.GroupVersionResource]bool{}
	for _, g := range c.cfg.Typed {
		typed[g] = true
	}
	ignored := map[schema.GroupResource]bool{}
	for _, g := range c.cfg.Ignored {
		ignored[g] = true
	}
	var metaInformers []cache.SharedIndexInformer
	var synced []cache.InformerSynced
	for _, r := range res.Preferred {
		if ignored[r.GVR.GroupResource()] || !r.Has("list", "watch", "delete") {
			continue
		}
		var inf cache.SharedIndexInformer
		if typed[r.GVR] {
			ti, err := c.typed.ForResource(r.GVR)
			if err != nil {
				return fmt.Errorf("garbagecollector: typed informer for %s: %w", r.GVR, err)
			}
			inf = ti
		} else {
			inf = c.metadataInformer(r.GVR)
			metaInformers = append(metaInformers, inf)
		}
		gvr := r.GVR
		c.stores[gvr] = inf.GetStore()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.observe(gvr, nil, o) },
			UpdateFunc: func(o, n any) { c.observe(gvr, o, n) },
			DeleteFunc: func(o any) { c.forget(gvr, kit.Tombstone(o)) },
		}); err != nil {
			return fmt.Errorf("garbagecollector: handler for %s: %w", gvr, err)
		}
		synced = append(synced, inf.HasSynced)
	}
	// The metadata informers are the collector's own: they stop, and are
	// waited for, when Run returns.
	ictx, stopInformers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopInformers()
	for _, inf := range metaInformers {
		wg.Go(func() { inf.RunWithContext(ictx) })
	}
	c.typed.Start(ctx.Done())
	if err := kit.WaitForSync(ctx, "garbagecollector", synced...); err != nil {
		c.queue.ShutDown()
		return err
	}
	c.log.Info("started", "workers", workers, "resources", len(synced))
	kit.RunWorkers(ctx, c.queue, workers, c.sync, c.log)
	return nil
}

// metadataInformer is an informer of the metadata of gvr's objects (what
// client-go's metadatainformer makes; that package links client-go's
// informer factory of every built-in API group).
func (c *Controller) metadataInformer(gvr schema.GroupVersionResource) cache.SharedIndexInformer {
	rc := c.meta.Resource(gvr)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return rc.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return rc.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &metav1.PartialObjectMetadata{}, cache.SharedIndexInformerOptions{
		Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
	})
	// Only fails once the informer runs; it has not started.
	_ = inf.SetTransform(dropManagedFields)
	return inf
}

func (c *Controller) discover(ctx context.Context) (*discover.Map, error) {
	for {
		m, err := discover.Load(c.disc)
		if err == nil {
			return m, nil
		}
		c.log.Warn("discovery failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("garbagecollector: %w", err)
		case <-time.After(2 * time.Second):
		}
	}
}

func ownerUIDs(m metav1.Object) map[types.UID]bool {
	out := map[types.UID]bool{}
	for _, r := range m.GetOwnerReferences() {
		out[r.UID] = true
	}
	return out
}

func hasFinalizer(m metav1.Object, f string) bool {
	for _, x := range m.GetFinalizers() {
		if x == f {
			return true
		}
	}
	return false
}

// observe updates the graph for an added or changed object and queues what
// needs a look.
func (c *Controller) observe(gvr schema.GroupVersionResource, oldObj, obj any) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	n := node{gvr: gvr, namespace: m.GetNamespace(), name: m.GetName()}
	now := ownerUIDs(m)
	c.mu.Lock()
	c.uids[m.GetUID()] = n
	var before map[types.UID]bool
	if oldObj != nil {
		if om, err := meta.Accessor(oldObj); err == nil {
			before = ownerUIDs(om)
		}
	}
	for u := range before {
		if !now[u] {
			c.unlink(u, m.GetUID())
		}
	}
	for u := range now {
		deps := c.dependents[u]
		if deps == nil {
			deps = map[types.UID]node{}
			c.dependents[u] = deps
		}
		deps[m.GetUID()] = n
	}
	var owners []types.UID
	if m.GetDeletionTimestamp() != nil {
		// A dependent going away may unblock an owner waiting for it.
		for u := range now {
			owners = append(owners, u)
		}
	}
	c.mu.Unlock()
	changedRefs := oldObj == nil || len(before) != len(now)
	if !changedRefs {
		for u := range now {
			if !before[u] {
				changedRefs = true
			}
		}
	}
	deleting := m.GetDeletionTimestamp() != nil && (hasFinalizer(m, metav1.FinalizerOrphanDependents) || hasFinalizer(m, metav1.FinalizerDeleteDependents))
	if (len(now) > 0 && changedRefs) || deleting {
		c.queue.Add(n.key())
	}
	c.enqueueUIDs(owners)
}

func (c *Controller) unlink(owner, dep types.UID) {
	if deps := c.dependents[owner]; deps != nil {
		delete(deps, dep)
		if len(deps) == 0 {
			delete(c.dependents, owner)
		}
	}
}

// forget removes a deleted object and queues its dependents (their owner
// is gone) and its owners (one may wait for it).
func (c *Controller) forget(gvr schema.GroupVersionResource, obj any) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	uid := m.GetUID()
	c.mu.Lock()
	delete(c.uids, uid)
	var keys []string
	for _, d := range c.dependents[uid] {
		keys = append(keys, d.key())
	}
	var owners []types.UID
	for u := range ownerUIDs(m) {
		c.unlink(u, uid)
		owners = append(owners, u)
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
	c.enqueueUIDs(owners)
}

func (c *Controller) enqueueUIDs(uids []types.UID) {
	c.mu.RLock()
	var keys []string
	for _, u := range uids {
		if n, ok := c.uids[u]; ok {
			keys = append(keys, n.key())
		}
	}
	c.mu.RUnlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
}

func (c *Controller) get(n node) (metav1.Object, bool) {
	c.mu.RLock()
	st := c.stores[n.gvr]
	c.mu.RUnlock()
	if st == nil {
		return nil, false
	}
	k := n.name
	if n.namespace != "" {
		k = n.namespace + "/" + n.name
	}
	o, ok, err := st.GetByKey(k)
	if err != nil || !ok {
		return nil, false
	}
	m, err := meta.Accessor(o)
	if err != nil {
		return nil, false
	}
	return m, true
}

func (c *Controller) sync(ctx context.Context, key string) error {
	n, ok := parseKey(key)
	if !ok {
		return nil
	}
	m, ok := c.get(n)
	if !ok {
		return nil
	}
	if m.GetDeletionTimestamp() != nil {
		switch {
		case hasFinalizer(m, metav1.FinalizerOrphanDependents):
			return c.orphan(ctx, n, m)
		case hasFinalizer(m, metav1.FinalizerDeleteDependents):
			return c.foreground(ctx, n, m)
		}
		return nil
	}
	if len(m.GetOwnerReferences()) == 0 {
		return nil
	}
	return c.attemptToDelete(ctx, n, m)
}

// ownerState is what became of one owner reference.
type ownerState int

const (
	ownerSolid   ownerState = iota // exists
	ownerGone                      // absent or replaced (another UID)
	ownerWaiting                   // being deleted in the foreground
)

func (c *Controller) ownerState(ctx context.Context, dep node, ref metav1.OwnerReference) (ownerState, error) {
	c.mu.RLock()
	n, known := c.uids[ref.UID]
	res := c.resources
	c.mu.RUnlock()
	var om metav1.Object
	if known {
		if m, ok := c.get(n); ok && m.GetUID() == ref.UID {
			om = m
		}
	}
	if om == nil {
		// Not in the caches: ask the API, the cache may lag.
		r, ok := res.For(ref.APIVersion, ref.Kind)
		if !ok {
			return ownerSolid, fmt.Errorf("owner kind %s %s is not served", ref.APIVersion, ref.Kind)
		}
		ns := ""
		if r.Namespaced {
			ns = dep.namespace
		}
		live, err := c.meta.Resource(r.GVR).Namespace(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return ownerGone, nil
		case err != nil:
			return ownerSolid, fmt.Errorf("get owner %s %s: %w", ref.Kind, ref.Name, err)
		case live.UID != ref.UID:
			return ownerGone, nil
		}
		om = live
	}
	if om.GetDeletionTimestamp() != nil && hasFinalizer(om, metav1.FinalizerDeleteDependents) {
		return ownerWaiting, nil
	}
	return ownerSolid, nil
}

// attemptToDelete deletes an object all of whose owners are gone (or
// waiting for their dependents), and drops references to gone owners when
// others remain.
func (c *Controller) attemptToDelete(ctx context.Context, n node, m metav1.Object) error {
	var solid, stale []metav1.OwnerReference
	waiting := 0
	for _, ref := range m.GetOwnerReferences() {
		st, err := c.ownerState(ctx, n, ref)
		if err != nil {
			c.log.Debug("owner unresolved", "object", n.key(), "err", err)
			return nil
		}
		switch st {
		case ownerSolid:
			solid = append(solid, ref)
		case ownerGone:
			stale = append(stale, ref)
		case ownerWaiting:
			waiting++
			stale = append(stale, ref)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	if len(solid) > 0 {
		// Keep the object; drop the references to owners that are gone or
		// going.
		if err := c.patchOwners(ctx, n, m, solid); err != nil {
			return err
		}
		c.log.Info("removed owner references", "object", n.key(), "removed", len(stale))
		return nil
	}
	policy := metav1.DeletePropagationBackground
	switch {
	case hasFinalizer(m, metav1.FinalizerOrphanDependents):
		policy = metav1.DeletePropagationOrphan
	case waiting > 0 || hasFinalizer(m, metav1.FinalizerDeleteDependents):
		policy = metav1.DeletePropagationForeground
	}
	uid := m.GetUID()
	err := c.meta.Resource(n.gvr).Namespace(n.namespace).Delete(ctx, n.name, metav1.DeleteOptions{
		PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete %s: %w", n.key(), err)
	}
	c.log.Info("deleted dependent", "object", n.key(), "policy", policy)
	return nil
}

// patchOwners sets the object's owner references to refs, pinned to the
// resourceVersion read (a merge patch works for every kind).
func (c *Controller) patchOwners(ctx context.Context, n node, m metav1.Object, refs []metav1.OwnerReference) error {
	var v any = refs
	if len(refs) == 0 {
		v = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": v, "resourceVersion": m.GetResourceVersion()}})
	if err != nil {
		return err
	}
	_, err = c.meta.Resource(n.gvr).Namespace(n.namespace).Patch(ctx, n.name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch owner references of %s: %w", n.key(), err)
	}
	return nil
}

func (c *Controller) removeFinalizer(ctx context.Context, n node, m metav1.Object, f string) error {
	var rest []string
	for _, x := range m.GetFinalizers() {
		if x != f {
			rest = append(rest, x)
		}
	}
	var v any = rest
	if len(rest) == 0 {
		v = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": v, "resourceVersion": m.GetResourceVersion()}})
	if err != nil {
		return err
	}
	_, err = c.meta.Resource(n.gvr).Namespace(n.namespace).Patch(ctx, n.name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer %s from %s: %w", f, n.key(), err)
	}
	return nil
}

func (c *Controller) dependentsOf(uid types.UID) []node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]node, 0, len(c.dependents[uid]))
	for _, d := range c.dependents[uid] {
		out = append(out, d)
	}
	return out
}

// orphan removes the owner's reference from its dependents, then the
// orphan finalizer.
func (c *Controller) orphan(ctx context.Context, n node, m metav1.Object) error {
	for _, d := range c.dependentsOf(m.GetUID()) {
		dm, ok := c.get(d)
		if !ok {
			continue
		}
		var keep []metav1.OwnerReference
		for _, r := range dm.GetOwnerReferences() {
			if r.UID != m.GetUID() {
				keep = append(keep, r)
			}
		}
		if len(keep) == len(dm.GetOwnerReferences()) {
			continue
		}
		if err := c.patchOwners(ctx, d, dm, keep); err != nil {
			return err
		}
	}
	if err := c.removeFinalizer(ctx, n, m, metav1.FinalizerOrphanDependents); err != nil {
		return err
	}
	c.log.Info("orphaned dependents", "owner", n.key())
	return nil
}

func blocks(m metav1.Object, owner types.UID) bool {
	for _, r := range m.GetOwnerReferences() {
		if r.UID == owner && r.BlockOwnerDeletion != nil && *r.BlockOwnerDeletion {
			return true
		}
	}
	return false
}

// foreground deletes the owner's dependents (blocking ones in the
// foreground too) and removes the finalizer once no blocking one is left.
func (c *Controller) foreground(ctx context.Context, n node, m metav1.Object) error {
	blocking := 0
	for _, d := range c.dependentsOf(m.GetUID()) {
		dm, ok := c.get(d)
		if !ok {
			continue
		}
		b := blocks(dm, m.GetUID())
		if b {
			blocking++
		}
		if dm.GetDeletionTimestamp() != nil {
			continue
		}
		if err := c.attemptToDelete(ctx, d, dm); err != nil {
			return err
		}
	}
	if blocking > 0 {
		// Dependents' deletions requeue the owner.
		return nil
	}
	if err := c.removeFinalizer(ctx, n, m, metav1.FinalizerDeleteDependents); err != nil {
		return err
	}
	c.log.Info("foreground deletion done", "owner", n.key())
	return nil
}
