// Package daemonset runs one pod of each DaemonSet on every eligible node
// (node selector, required node affinity, taints against the pod's
// tolerations plus the DaemonSet defaults), pinning each pod to its node
// with a matchFields node affinity the scheduler then honours, as
// upstream. Template versions are ControllerRevisions; pods carry their
// revision's controller-revision-hash, and templates roll out with the
// RollingUpdate (maxUnavailable, maxSurge) or OnDelete strategy.
package daemonset

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

var controllerKind = appsv1.SchemeGroupVersion.WithKind("DaemonSet")

// Config tunes the controller; the zero value is usable.
type Config struct {
	// Recorder receives events; nil makes the controller record its own.
	Recorder record.EventRecorder
	// BurstReplicas caps the pods created or deleted by one sync (250).
	BurstReplicas int
	// FailedPodsBackoff is the delay before replacing a failed daemon pod
	// on the same node again (1 s, doubling up to 5 min).
	FailedPodsBackoff time.Duration
}

// Controller is the DaemonSet controller.
type Controller struct {
	cfg      Config
	client   kube.Interface
	dsLister appslisters.DaemonSetLister
	crLister appslisters.ControllerRevisionLister
	pods     corelisters.PodLister
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced
	queue    kit.Queue
	exp      *kit.Expectations
	events   *kit.Events
	recorder record.EventRecorder
	failed   *failedBackoff
	log      *slog.Logger
	now      func() time.Time
}

// New wires the controller to the shared informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if cfg.BurstReplicas <= 0 {
		cfg.BurstReplicas = 250
	}
	if cfg.FailedPodsBackoff <= 0 {
		cfg.FailedPodsBackoff = time.Second
	}
	c := &Controller{
		cfg: cfg, client: client, queue: kit.NewQueue("daemonset"), exp: kit.NewExpectations(),
		recorder: cfg.Recorder, failed: newFailedBackoff(cfg.FailedPodsBackoff, 5*time.Minute),
		log: log.With("controller", "daemonset"), now: time.Now,
	}
	if c.recorder == nil {
		c.events = kit.NewEvents(client, "daemonset-controller")
		c.recorder = c.events.Recorder
	}
	dsInf := f.Apps().V1().DaemonSets()
	crInf := f.Apps().V1().ControllerRevisions()
	podInf := f.Core().V1().Pods()
	nodeInf := f.Core().V1().Nodes()
	c.dsLister, c.crLister, c.pods, c.nodes = dsInf.Lister(), crInf.Lister(), podInf.Lister(), nodeInf.Lister()
	c.synced = []cache.InformerSynced{dsInf.Informer().HasSynced, crInf.Informer().HasSynced, podInf.Informer().HasSynced, nodeInf.Informer().HasSynced}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{dsInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueue,
			UpdateFunc: func(_, n any) { c.enqueue(n) },
			DeleteFunc: func(o any) {
				if k, ok := kit.Key(o); ok {
					c.exp.Delete(k)
					c.queue.Add(k)
				}
			},
		}},
		{crInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueOwner,
			UpdateFunc: func(_, n any) { c.enqueueOwner(n) },
			DeleteFunc: c.enqueueOwner,
		}},
		{podInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.addPod,
			UpdateFunc: c.updatePod,
			DeleteFunc: c.deletePod,
		}},
		{nodeInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { c.enqueueAll() },
			UpdateFunc: func(o, n any) {
				if nodeChanged(o.(*corev1.Node), n.(*corev1.Node)) {
					c.enqueueAll()
				}
			},
			DeleteFunc: func(any) { c.enqueueAll() },
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("daemonset: event handler: %w", err)
		}
	}
	return c, nil
}

// nodeChanged: a change that may alter where daemon pods run (not a
// heartbeat).
func nodeChanged(o, n *corev1.Node) bool {
	if !reflect.DeepEqual(o.Labels, n.Labels) || !apiequality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints) || o.Spec.Unschedulable != n.Spec.Unschedulable {
		return true
	}
	return readyStatus(o) != readyStatus(n)
}

func readyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// Run syncs DaemonSets with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "daemonset", c.queue, c.synced, c.events, workers, c.sync, c.log)
}

func (c *Controller) enqueue(obj any) {
	if k, ok := kit.Key(obj); ok {
		c.queue.Add(k)
	}
}

func (c *Controller) enqueueAll() {
	all, err := c.dsLister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, ds := range all {
		c.enqueue(ds)
	}
}

// resolve finds the DaemonSet a controller reference names.
func (c *Controller) resolve(ns string, ref *metav1.OwnerReference) *appsv1.DaemonSet {
	if ref == nil || ref.Kind != controllerKind.Kind {
		return nil
	}
	ds, err := c.dsLister.DaemonSets(ns).Get(ref.Name)
	if err != nil || ds.UID != ref.UID {
		return nil
	}
	return ds
}

func (c *Controller) enqueueOwner(obj any) {
	m, err := meta(kit.Tombstone(obj))
	if err != nil {
		return
	}
	if ds := c.resolve(m.GetNamespace(), metav1.GetControllerOfNoCopy(m)); ds != nil {
		c.enqueue(ds)
		return
	}
	// An orphan: the DaemonSets that may adopt it.
	for _, ds := range c.matching(m.GetNamespace(), m.GetLabels()) {
		c.enqueue(ds)
	}
}

func (c *Controller) matching(ns string, set map[string]string) []*appsv1.DaemonSet {
	all, err := c.dsLister.DaemonSets(ns).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*appsv1.DaemonSet
	for _, ds := range all {
		sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(set)) {
			out = append(out, ds)
		}
	}
	return out
}

func (c *Controller) addPod(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if p.DeletionTimestamp != nil {
		c.deletePod(p)
		return
	}
	if ds := c.resolve(p.Namespace, metav1.GetControllerOfNoCopy(p)); ds != nil {
		k, _ := kit.Key(ds)
		c.exp.CreationObserved(k)
		c.queue.Add(k)
		return
	}
	c.enqueueOwner(p)
}

func (c *Controller) updatePod(oldObj, newObj any) {
	o, ok1 := oldObj.(*corev1.Pod)
	n, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion {
		return
	}
	if n.DeletionTimestamp != nil && o.DeletionTimestamp == nil {
		c.deletePod(n)
		return
	}
	if oref := metav1.GetControllerOfNoCopy(o); oref != nil {
		if nref := metav1.GetControllerOfNoCopy(n); nref == nil || nref.UID != oref.UID {
			if ds := c.resolve(o.Namespace, oref); ds != nil {
				c.enqueue(ds)
			}
		}
	}
	c.enqueueOwner(n)
	if ds := c.resolve(n.Namespace, metav1.GetControllerOfNoCopy(n)); ds != nil && ds.Spec.MinReadySeconds > 0 && !kit.PodReady(o) && kit.PodReady(n) {
		k, _ := kit.Key(ds)
		c.queue.AddAfter(k, time.Duration(ds.Spec.MinReadySeconds)*time.Second+100*time.Millisecond)
	}
}

func (c *Controller) deletePod(obj any) {
	p, ok := kit.Tombstone(obj).(*corev1.Pod)
	if !ok {
		return
	}
	ds := c.resolve(p.Namespace, metav1.GetControllerOfNoCopy(p))
	if ds == nil {
		return
	}
	k, _ := kit.Key(ds)
	pk, _ := kit.Key(p)
	c.exp.DeletionObserved(k, pk)
	c.queue.Add(k)
}
