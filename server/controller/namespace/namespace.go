// Package namespace empties namespaces being deleted (every namespaced kind
// the API serves), then removes the kubernetes finalizer so the API server
// deletes them.
package namespace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/discover"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Config tunes the controller; the zero value is usable.
type Config struct {
	// Recheck is how often a namespace still holding objects is looked at
	// again (2s).
	Recheck time.Duration
}

// Controller is the namespace controller.
type Controller struct {
	cfg      Config
	client   kube.Interface
	meta     metadata.Interface
	disc     discover.Source
	nsLister corelisters.NamespaceLister
	synced   cache.InformerSynced
	queue    kit.Queue
	log      *slog.Logger
	now      func() time.Time
}

// Namespace condition types, as upstream.
const (
	CondDiscoveryFailed = corev1.NamespaceDeletionDiscoveryFailure
	CondContentFailure  = corev1.NamespaceDeletionContentFailure
	CondContentLeft     = corev1.NamespaceContentRemaining
	CondFinalizersLeft  = corev1.NamespaceFinalizersRemaining
)

// New wires the controller to the shared namespace informer; disc lists
// the resources to empty a namespace of.
func New(cfg Config, client kube.Interface, meta metadata.Interface, disc discover.Source, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if meta == nil {
		return nil, fmt.Errorf("namespace: a metadata client is required")
	}
	if disc == nil {
		return nil, fmt.Errorf("namespace: a discovery client is required")
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = 2 * time.Second
	}
	inf := f.Core().V1().Namespaces()
	c := &Controller{cfg: cfg, client: client, meta: meta, disc: disc, nsLister: inf.Lister(), synced: inf.Informer().HasSynced,
		queue: kit.NewQueue("namespace"), log: log.With("controller", "namespace"), now: time.Now}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, n any) { c.enqueue(n) },
	}); err != nil {
		return nil, fmt.Errorf("namespace: handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueue(obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok || ns.DeletionTimestamp == nil {
		return
	}
	c.queue.Add(ns.Name)
}

// Run empties deleted namespaces with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "namespace", c.queue, []cache.InformerSynced{c.synced}, nil, workers, c.sync, c.log)
}

func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.nsLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp == nil {
		return nil
	}
	if !hasKubernetesFinalizer(ns) {
		return nil
	}
	res, derr := discover.Load(c.disc)
	if derr != nil {
		c.setConditions(ctx, ns, map[corev1.NamespaceConditionType]string{CondDiscoveryFailed: derr.Error()})
		return fmt.Errorf("namespace %s: %w", name, derr)
	}
	remaining, finalizers, delErrs := c.deleteContent(ctx, name, res)
	conds := map[corev1.NamespaceConditionType]string{}
	if len(delErrs) > 0 {
		conds[CondContentFailure] = errors.Join(delErrs...).Error()
	}
	if len(remaining) > 0 {
		conds[CondContentLeft] = "Some resources are remaining: " + summary(remaining)
	}
	if len(finalizers) > 0 {
		conds[CondFinalizersLeft] = "Some content in the namespace has finalizers remaining: " + summary(finalizers)
	}
	c.setConditions(ctx, ns, conds)
	if len(delErrs) > 0 {
		return fmt.Errorf("namespace %s: %w", name, errors.Join(delErrs...))
	}
	if len(remaining) > 0 {
		return &kit.RequeueAfter{Delay: c.cfg.Recheck}
	}
	return c.finalize(ctx, name)
}

func hasKubernetesFinalizer(ns *corev1.Namespace) bool {
	for _, f := range ns.Spec.Finalizers {
		if f == corev1.FinalizerKubernetes {
			return true
		}
	}
	return false
}

func summary(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s has %d resource instances", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// deleteContent deletes every object of every namespaced kind in ns and
// counts what is still there (by resource) and what is held by finalizers.
func (c *Controller) deleteContent(ctx context.Context, ns string, res *discover.Map) (remaining, finalizers map[string]int, errs []error) {
	remaining, finalizers = map[string]int{}, map[string]int{}
	for _, r := range res.Preferred {
		if !r.Namespaced || !r.Has("list", "delete") {
			continue
		}
		gr := r.GVR.GroupResource().String()
		client := c.meta.Resource(r.GVR).Namespace(ns)
		list, err := client.List(ctx, metav1.ListOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
				continue
			}
			errs = append(errs, fmt.Errorf("list %s: %w", gr, err))
			continue
		}
		for i := range list.Items {
			o := &list.Items[i]
			remaining[gr]++
			if len(o.Finalizers) > 0 {
				finalizers[gr]++
			}
			if o.DeletionTimestamp != nil {
				continue
			}
			bg := metav1.DeletePropagationBackground
			uid := o.UID
			err := client.Delete(ctx, o.Name, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
			switch {
			case err == nil:
				if _, gerr := client.Get(ctx, o.Name, metav1.GetOptions{}); apierrors.IsNotFound(gerr) {
					remaining[gr]--
				}
			case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
				remaining[gr]--
			default:
				errs = append(errs, fmt.Errorf("delete %s %s: %w", gr, o.Name, err))
			}
		}
		if remaining[gr] <= 0 {
			delete(remaining, gr)
		}
		if finalizers[gr] == 0 {
			delete(finalizers, gr)
		}
	}
	return remaining, finalizers, errs
}

// setConditions records the deletion conditions (best effort: a failure
// here does not stop the deletion).
func (c *Controller) setConditions(ctx context.Context, ns *corev1.Namespace, set map[corev1.NamespaceConditionType]string) {
	cp := ns.DeepCopy()
	changed := false
	for _, t := range []corev1.NamespaceConditionType{CondDiscoveryFailed, CondContentFailure, CondContentLeft, CondFinalizersLeft} {
		msg, on := set[t]
		status, reason := corev1.ConditionFalse, reasonFor(t, false)
		if on {
			status, reason = corev1.ConditionTrue, reasonFor(t, true)
		} else {
			msg = "All content successfully removed"
			if t == CondDiscoveryFailed {
				msg = "All resources successfully discovered"
			}
		}
		idx := -1
		for i, cnd := range cp.Status.Conditions {
			if cnd.Type == t {
				idx = i
			}
		}
		nc := corev1.NamespaceCondition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(c.now())}
		if idx < 0 {
			cp.Status.Conditions = append(cp.Status.Conditions, nc)
			changed = true
			continue
		}
		cur := cp.Status.Conditions[idx]
		if cur.Status == nc.Status && cur.Reason == nc.Reason && cur.Message == nc.Message {
			continue
		}
		if cur.Status == nc.Status {
			nc.LastTransitionTime = cur.LastTransitionTime
		}
		cp.Status.Conditions[idx] = nc
		changed = true
	}
	if !changed {
		return
	}
	if _, err := c.client.CoreV1().Namespaces().UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		c.log.Debug("update namespace conditions", "namespace", ns.Name, "err", err)
	}
}

func reasonFor(t corev1.NamespaceConditionType, on bool) string {
	if !on {
		switch t {
		case CondDiscoveryFailed:
			return "ResourcesDiscovered"
		case CondContentFailure:
			return "ContentDeleted"
		case CondContentLeft:
			return "ContentRemoved"
		default:
			return "ContentHasNoFinalizers"
		}
	}
	switch t {
	case CondDiscoveryFailed:
		return "DiscoveryFailed"
	case CondContentFailure:
		return "ContentDeletionFailed"
	case CondContentLeft:
		return "SomeResourcesRemain"
	default:
		return "SomeFinalizersRemain"
	}
}

// finalize removes the kubernetes finalizer from spec.finalizers.
func (c *Controller) finalize(ctx context.Context, name string) error {
	for attempt := 0; attempt < 3; attempt++ {
		ns, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("finalize namespace %s: %w", name, err)
		}
		var keep []corev1.FinalizerName
		for _, f := range ns.Spec.Finalizers {
			if f != corev1.FinalizerKubernetes {
				keep = append(keep, f)
			}
		}
		ns.Spec.Finalizers = keep
		_, err = c.client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("finalize namespace %s: %w", name, err)
		}
		c.log.Info("namespace emptied and finalized", "namespace", name)
		return nil
	}
	return fmt.Errorf("finalize namespace %s: %w", name, apierrors.NewConflict(schema.GroupResource{Resource: "namespaces"}, name, errors.New("conflict after retries")))
}
