// Package replicaset keeps the number of pods of every ReplicaSet at its
// spec.replicas: it creates pods from the template in slow-start batches,
// deletes the least useful ones first, adopts matching orphans, releases
// pods that stopped matching and reports status.
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

// Config tunes the controller; the zero value is usable.
type Config struct {
	// Recorder receives events; nil makes the controller record its own.
	Recorder record.EventRecorder
	// BurstReplicas caps the creations or deletions of one sync (500).
	BurstReplicas int
}

// Controller is the ReplicaSet controller.
type Controller struct {
	cfg       Config
	client    kube.Interface
	rsLister  appslisters.ReplicaSetLister
	podLister corelisters.PodLister
	synced    []cache.InformerSynced
	queue     kit.Queue
	exp       *kit.Expectations
	events    *kit.Events
	log       *slog.Logger
	now       func() time.Time
}

var controllerKind = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

// New wires the controller to the shared informers of f.
func New(cfg Config, client kube.Interface, f *kube.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	if cfg.BurstReplicas <= 0 {
		cfg.BurstReplicas = 500
	}
	c := &Controller{cfg: cfg, client: client, queue: kit.NewQueue("replicaset"), exp: kit.NewExpectations(), log: log.With("controller", "replicaset"), now: time.Now}
	if cfg.Recorder == nil {
		c.events = kit.NewEvents(client, "replicaset-controller")
		c.cfg.Recorder = c.events.Recorder
	}
	rsInf := f.Apps().V1().ReplicaSets()
	podInf := f.Core().V1().Pods()
	c.rsLister, c.podLister = rsInf.Lister(), podInf.Lister()
	c.synced = []cache.InformerSynced{rsInf.Informer().HasSynced, podInf.Informer().HasSynced}
	if _, err := rsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, n any) { c.enqueue(n) },
		DeleteFunc: func(o any) {
			if k, ok := kit.Key(o); ok {
				c.exp.Delete(k)
				c.queue.Add(k)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("replicaset: rs handler: %w", err)
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.addPod,
		UpdateFunc: c.updatePod,
		DeleteFunc: c.deletePod,
	}); err != nil {
		return nil, fmt.Errorf("replicaset: pod handler: %w", err)
	}
	return c, nil
}

// Run syncs ReplicaSets with workers goroutines until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return kit.Run(ctx, "replicaset", c.queue, c.synced, c.events, workers, c.sync, c.log)
}

func (c *Controller) enqueue(obj any) {
	if k, ok := kit.Key(obj); ok {
		c.queue.Add(k)
	}
}

// resolve finds the ReplicaSet a controller reference names.
func (c *Controller) resolve(ns string, ref *metav1.OwnerReference) *appsv1.ReplicaSet {
	if ref == nil || ref.Kind != controllerKind.Kind {
		return nil
	}
	rs, err := c.rsLister.ReplicaSets(ns).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return nil
	}
	return rs
}

// matching lists the ReplicaSets whose selector matches an orphan pod.
func (c *Controller) matching(p *corev1.Pod) []*appsv1.ReplicaSet {
	all, err := c.rsLister.ReplicaSets(p.Namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*appsv1.ReplicaSet
	for _, rs := range all {
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil || sel.Empty() {
			continue
		}
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, rs)
		}
	}
	return out
}

func (c *Controller) addPod(obj any) {
	p := obj.(*corev1.Pod)
	if p.DeletionTimestamp != nil {
		c.deletePod(p)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
		if rs := c.resolve(p.Namespace, ref); rs != nil {
			k, _ := kit.Key(rs)
			c.exp.CreationObserved(k)
			c.queue.Add(k)
		}
		return
	}
	for _, rs := range c.matching(p) {
		c.enqueue(rs)
	}
}

func (c *Controller) updatePod(oldObj, newObj any) {
	o, n := oldObj.(*corev1.Pod), newObj.(*corev1.Pod)
	if o.ResourceVersion == n.ResourceVersion {
		return
	}
	if n.DeletionTimestamp != nil && o.DeletionTimestamp == nil {
		// A graceful delete: the pod no longer counts.
		c.deletePod(n)
		if !reflect.DeepEqual(o.OwnerReferences, n.OwnerReferences) {
			c.deletePod(o)
		}
		return
	}
	oref, nref := metav1.GetControllerOfNoCopy(o), metav1.GetControllerOfNoCopy(n)
	if oref != nil && (nref == nil || oref.UID != nref.UID) {
		if rs := c.resolve(o.Namespace, oref); rs != nil {
			c.enqueue(rs)
		}
	}
	if nref != nil {
		if rs := c.resolve(n.Namespace, nref); rs != nil {
			c.enqueue(rs)
			if !kit.PodReady(o) && kit.PodReady(n) && rs.Spec.MinReadySeconds > 0 {
				k, _ := kit.Key(rs)
				c.queue.AddAfter(k, time.Duration(rs.Spec.MinReadySeconds)*time.Second+time.Second)
			}
		}
		return
	}
	if !reflect.DeepEqual(o.Labels, n.Labels) || oref != nil {
		for _, rs := range c.matching(n) {
			c.enqueue(rs)
		}
	}
}

func (c *Controller) deletePod(obj any) {
	p, ok := kit.Tombstone(obj).(*corev1.Pod)
	if !ok {
		return
	}
	rs := c.resolve(p.Namespace, metav1.GetControllerOfNoCopy(p))
	if rs == nil {
		return
	}
	k, _ := kit.Key(rs)
	pk, _ := kit.Key(p)
	c.exp.DeletionObserved(k, pk)
	c.queue.Add(k)
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	rs, err := c.rsLister.ReplicaSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.Delete(key)
		return nil
	}
	if err != nil {
		return err
	}
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		// The API validates selectors; a bad one cannot be acted on.
		c.log.Warn("invalid selector", "rs", key, "err", err)
		return nil
	}
	needsSync := c.exp.Satisfied(key) && rs.DeletionTimestamp == nil

	all, err := c.podLister.Pods(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var active []*corev1.Pod
	for _, p := range all {
		if kit.PodActive(p) {
			active = append(active, p)
		}
	}
	claimer := &kit.Claimer{
		Owner:    rs,
		Ref:      kit.ControllerRef(rs, controllerKind.GroupVersion().String(), controllerKind.Kind),
		Selector: sel,
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := c.client.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
		CanAdopt: func(ctx context.Context) error {
			fresh, err := c.client.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.UID != rs.UID || fresh.DeletionTimestamp != nil {
				return fmt.Errorf("replicaset %s is gone or being deleted", key)
			}
			return nil
		},
	}
	pods, claimErr := kit.Claim(ctx, claimer, active)

	var manageErr error
	if needsSync {
		manageErr = c.manage(ctx, key, rs, pods)
	}
	if err := c.updateStatus(ctx, rs, pods, manageErr); err != nil {
		return errors.Join(manageErr, claimErr, err)
	}
	if manageErr != nil || claimErr != nil {
		return errors.Join(manageErr, claimErr)
	}
	if rs.Spec.MinReadySeconds > 0 {
		now := c.now()
		var wait time.Duration
		for _, p := range pods {
			if d := kit.AvailableIn(p, rs.Spec.MinReadySeconds, now); d > 0 && (wait == 0 || d < wait) {
				wait = d
			}
		}
		if wait > 0 {
			c.queue.AddAfter(key, wait+100*time.Millisecond)
		}
	}
	return nil
}

func replicas(rs *appsv1.ReplicaSet) int {
	if rs.Spec.Replicas == nil {
		return 1
	}
	return int(*rs.Spec.Replicas)
}

// manage creates or deletes pods to reach spec.replicas.
func (c *Controller) manage(ctx context.Context, key string, rs *appsv1.ReplicaSet, pods []*corev1.Pod) error {
	diff := len(pods) - replicas(rs)
	switch {
	case diff < 0:
		n := min(-diff, c.cfg.BurstReplicas)
		c.exp.ExpectCreations(key, n)
		created, err := kit.SlowStart(n, 1, func() error {
			pod := PodFromTemplate(rs)
			_, err := c.client.CoreV1().Pods(rs.Namespace).Create(ctx, pod, metav1.CreateOptions{})
			if err != nil {
				if kit.NamespaceTerminating(err) {
					return nil
				}
				return err
			}
			return nil
		})
		// Creations that failed or were skipped will never be observed.
		for i := created; i < n; i++ {
			c.exp.CreationObserved(key)
		}
		if created > 0 {
			c.cfg.Recorder.Eventf(rs, corev1.EventTypeNormal, "SuccessfulCreate", "Created %d pod(s)", created)
		}
		if err != nil {
			c.cfg.Recorder.Eventf(rs, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
			return fmt.Errorf("create pods for %s: %w", key, err)
		}
	case diff > 0:
		n := min(diff, c.cfg.BurstReplicas)
		sorted := append([]*corev1.Pod(nil), pods...)
		sort.SliceStable(sorted, func(i, j int) bool { return kit.LessUseful(sorted[i], sorted[j]) })
		victims := sorted[:n]
		keys := make([]string, len(victims))
		for i, p := range victims {
			keys[i], _ = kit.Key(p)
		}
		c.exp.ExpectDeletions(key, keys)
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for i, p := range victims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
				if err != nil {
					c.exp.DeletionObserved(key, keys[i])
					if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
						return
					}
					mu.Lock()
					errs = append(errs, fmt.Errorf("delete pod %s: %w", p.Name, err))
					mu.Unlock()
					c.cfg.Recorder.Eventf(rs, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
					return
				}
				c.cfg.Recorder.Eventf(rs, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", p.Name)
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	return nil
}

// PodFromTemplate builds the pod a ReplicaSet creates.
func PodFromTemplate(rs *appsv1.ReplicaSet) *corev1.Pod {
	t := rs.Spec.Template.DeepCopy()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    rs.Name + "-",
			Namespace:       rs.Namespace,
			Labels:          t.Labels,
			Annotations:     t.Annotations,
			OwnerReferences: []metav1.OwnerReference{kit.ControllerRef(rs, controllerKind.GroupVersion().String(), controllerKind.Kind)},
		},
		Spec: t.Spec,
	}
	return p
}

func (c *Controller) updateStatus(ctx context.Context, rs *appsv1.ReplicaSet, pods []*corev1.Pod, manageErr error) error {
	st := CalculateStatus(rs, pods, manageErr, c.now())
	if reflect.DeepEqual(rs.Status, st) {
		return nil
	}
	cp := rs.DeepCopy()
	cp.Status = st
	for attempt := 0; ; attempt++ {
		_, err := c.client.AppsV1().ReplicaSets(cp.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		if err == nil || attempt == 1 || !apierrors.IsConflict(err) {
			if err != nil {
				return fmt.Errorf("update status of %s/%s: %w", rs.Namespace, rs.Name, err)
			}
			return nil
		}
		fresh, gerr := c.client.AppsV1().ReplicaSets(cp.Namespace).Get(ctx, cp.Name, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("update status of %s/%s: %w", rs.Namespace, rs.Name, gerr)
		}
		st.ObservedGeneration = min(st.ObservedGeneration, fresh.Generation)
		fresh.Status = st
		cp = fresh
	}
}

// CalculateStatus is the status a ReplicaSet with these claimed active pods
// reports.
func CalculateStatus(rs *appsv1.ReplicaSet, pods []*corev1.Pod, manageErr error, now time.Time) appsv1.ReplicaSetStatus {
	st := rs.Status
	st.Conditions = append([]appsv1.ReplicaSetCondition(nil), rs.Status.Conditions...)
	tmpl := labels.Set(rs.Spec.Template.Labels).AsSelectorPreValidated()
	var full, ready, avail int32
	for _, p := range pods {
		if tmpl.Matches(labels.Set(p.Labels)) {
			full++
		}
		if kit.PodReady(p) {
			ready++
			if kit.PodAvailable(p, rs.Spec.MinReadySeconds, now) {
				avail++
			}
		}
	}
	st.Replicas = int32(len(pods))
	st.FullyLabeledReplicas = full
	st.ReadyReplicas = ready
	st.AvailableReplicas = avail
	st.ObservedGeneration = rs.Generation
	idx := -1
	for i, cnd := range st.Conditions {
		if cnd.Type == appsv1.ReplicaSetReplicaFailure {
			idx = i
		}
	}
	switch {
	case manageErr != nil && idx < 0:
		reason := "FailedCreate"
		if len(pods) > replicas(rs) {
			reason = "FailedDelete"
		}
		st.Conditions = append(st.Conditions, appsv1.ReplicaSetCondition{
			Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now), Reason: reason, Message: manageErr.Error(),
		})
	case manageErr == nil && idx >= 0:
		st.Conditions = append(st.Conditions[:idx], st.Conditions[idx+1:]...)
	}
	if len(st.Conditions) == 0 {
		st.Conditions = nil
	}
	return st
}
